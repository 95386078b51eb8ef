#!/usr/bin/env bash
# A batch as multi-gets: multiloop's memcached::get_many through the pool, in memcached's text
# and meta protocols, beside memcslap --test=mget, against one memcached, interleaved and
# repeated, on a quiet machine and with the CPUs contended.
#
#   scripts/bench-mget.sh                 # 20,000-key batches, 1 and 8 connections, 5 rounds
#   ROUNDS=9 KEYS=20000 BUSY=3 scripts/bench-mget.sh
#
# BUSY=N (default 3) is the number of busy-looping processes beside the contended rounds (this
# machine has 2 cores); BUSY=0 skips them.
#
# Both sides use short keys and values spread over 50 to 5,000 bytes (memcslap's own, random).
# memcslap --test=mget loads KEYS keys, then each of C threads (one connection each) gets all
# of them in one multi-get; its time excludes the load. The multiloop side stores its keys,
# then runs C batches of KEYS keys at once (a task each) on a pool of C connections, each batch
# in chunks of 500, on tokio's default multi-thread runtime; once as the process's first batch
# and once after an untimed round. Needs memcached and memcslap (Debian: memcached,
# libmemcached-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
keys=${KEYS:-20000}
busy=${BUSY:-3}
port=$((20000 + RANDOM % 20000))
tmp=$(mktemp -d)

cargo build -q --release --example bench_mget
root=(); [ "$(id -u)" = 0 ] && root=(-u root)
# 1 GiB, so that nothing is evicted: 20,000 x 4 KiB per side.
memcached -l 127.0.0.1 -p "$port" -U 0 -t 2 -m 1024 "${root[@]}" &
server=$!
hogs=()
stop_hogs() { for h in "${hogs[@]}"; do kill "$h" 2>/dev/null || true; done; hogs=(); }
trap 'stop_hogs; kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$tmp"' EXIT
sleep 0.3

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
slap() {
  # "Time to mget 160000 keys by 8 threads: 0.410 seconds."
  memcslap --servers="127.0.0.1:$port" --concurrency="$1" --execute-number="$keys" \
    --test=mget | sed -n 's/^Time to mget *\([0-9]*\) keys by .*: *\([0-9.]*\) seconds.*/\1 \2/p' \
    | awk '{ printf "%.0f\n", $1 / $2 }'
}
# ours CONNECTIONS DIALECT [warm]
ours() {
  MULTILOOP_BENCH_DIALECT=$2 MULTILOOP_BENCH_WARM=${3:-} \
    ./target/release/examples/bench_mget "127.0.0.1:$port" "$1" "$keys" 500 \
    | sed 's/.*keys_per_s=\([0-9]*\).*/\1/'
}
side() {
  case $1 in
    slap) slap "$2" ;;
    text-cold) ours "$2" text ;;
    text-warm) ours "$2" text 1 ;;
    meta-cold) ours "$2" meta ;;
    meta-warm) ours "$2" meta 1 ;;
  esac
}
sides=(slap text-cold text-warm meta-cold meta-warm)

run() { # run LABEL
  printf '\n%s\n' "$1"
  printf '%-12s %-34s %12s %12s %12s\n' connections client min_keys/s median max
  for c in 1 8; do
    for s in "${sides[@]}"; do : > "$tmp/$s"; done
    for r in $(seq "$rounds"); do
      # Interleaved, the order rotating each round, so that drift hits every side alike.
      n=${#sides[@]}
      for i in $(seq 0 $((n - 1))); do
        s=${sides[$(( (i + r) % n ))]}
        side "$s" "$c" >> "$tmp/$s"
      done
    done
    for s in "${sides[@]}"; do
      f=$tmp/$s
      case $s in
        slap) name="memcslap --test=mget" ;;
        *-cold) name="get_many ${s%-cold}, first batch" ;;
        *-warm) name="get_many ${s%-warm}, warm" ;;
      esac
      printf '%-12s %-34s %12s %12s %12s\n' "$c" "$name" "$(sort -n "$f" | head -1)" \
        "$(median < "$f")" "$(sort -n "$f" | tail -1)"
    done
    for s in text-cold text-warm meta-cold meta-warm; do
      paste "$tmp/$s" "$tmp/slap" | awk '{print $1 / $2}' | sort -n \
        | awk -v c="$c" -v s="$s" '{a[NR]=$1} END {printf "%-12s %-9s / memcslap per round, min/median/max: %.2f %.2f %.2f\n", c, s, a[1], a[int((NR+1)/2)], a[NR]}'
    done
  done
}

run "quiet"
if [ "$busy" -gt 0 ]; then
  for _ in $(seq "$busy"); do
    sh -c 'while :; do :; done' &
    hogs+=($!)
  done
  run "contended: $busy busy processes beside every side"
  stop_hogs
fi
