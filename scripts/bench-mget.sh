#!/usr/bin/env bash
# A batch as multi-gets: multiloop's memcached::get_many through the pool beside
# memcslap --test=mget, against one memcached, interleaved and repeated.
#
#   scripts/bench-mget.sh                 # 20,000-key batches, 1 and 8 connections, 5 rounds
#   ROUNDS=9 KEYS=20000 scripts/bench-mget.sh
#
# Both sides use short keys and values spread over 50 to 5,000 bytes (memcslap's own, random).
# memcslap --test=mget loads KEYS keys, then each of C threads (one connection each) gets all
# of them in one multi-get; its time excludes the load. The multiloop side stores its keys,
# then runs C batches of KEYS keys at once (a task each) on a pool of C connections, each batch
# in chunks of 500, on a current-thread runtime; once as the process's first batch and once
# after an untimed round. Needs memcached and memcslap (Debian: memcached, libmemcached-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
keys=${KEYS:-20000}
port=$((20000 + RANDOM % 20000))

cargo build -q --release --example bench_mget
root=(); [ "$(id -u)" = 0 ] && root=(-u root)
# 1 GiB, so that nothing is evicted: 20,000 x 4 KiB per side.
memcached -l 127.0.0.1 -p "$port" -U 0 -t 2 -m 1024 "${root[@]}" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
sleep 0.3

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
slap() {
  # "Time to mget 160000 keys by 8 threads: 0.410 seconds."
  memcslap --servers="127.0.0.1:$port" --concurrency="$1" --execute-number="$keys" \
    --test=mget | sed -n 's/^Time to mget *\([0-9]*\) keys by .*: *\([0-9.]*\) seconds.*/\1 \2/p' \
    | awk '{ printf "%.0f\n", $1 / $2 }'
}
ours() { ./target/release/examples/bench_mget "127.0.0.1:$port" "$1" "$keys" 500 | sed 's/.*keys_per_s=\([0-9]*\).*/\1/'; }
printf '%-12s %-30s %12s %12s %12s\n' connections client min_keys/s median max
for c in 1 8; do
  : > /tmp/mget-slap.$$ ; : > /tmp/mget-cold.$$ ; : > /tmp/mget-warm.$$
  for r in $(seq "$rounds"); do
    # Interleaved, the order alternating, so that drift hits every side alike. "cold" is the
    # process's first batch; "warm" is measured after one untimed round, as in a service that
    # has served batches before (its heap grown: the cold round's time is mostly page faults).
    if [ $((r % 2)) = 1 ]; then
      slap "$c" >> /tmp/mget-slap.$$
      ours "$c" >> /tmp/mget-cold.$$
      MULTILOOP_BENCH_WARM=1 ours "$c" >> /tmp/mget-warm.$$
    else
      MULTILOOP_BENCH_WARM=1 ours "$c" >> /tmp/mget-warm.$$
      ours "$c" >> /tmp/mget-cold.$$
      slap "$c" >> /tmp/mget-slap.$$
    fi
  done
  for side in slap cold warm; do
    f=/tmp/mget-$side.$$
    case $side in
      slap) name="memcslap --test=mget" ;;
      cold) name="multiloop get_many, first batch" ;;
      warm) name="multiloop get_many, warm" ;;
    esac
    printf '%-12s %-30s %12s %12s %12s\n' "$c" "$name" "$(sort -n $f | head -1)" \
      "$(median < $f)" "$(sort -n $f | tail -1)"
  done
  for side in warm cold; do
    paste /tmp/mget-$side.$$ /tmp/mget-slap.$$ | awk '{print $1 / $2}' | sort -n \
      | awk -v c="$c" -v s="$side" '{a[NR]=$1} END {printf "%-12s %s / memcslap per round, min/median/max: %.2f %.2f %.2f\n", c, s, a[1], a[int((NR+1)/2)], a[NR]}'
  done
  rm -f /tmp/mget-slap.$$ /tmp/mget-cold.$$ /tmp/mget-warm.$$
done
