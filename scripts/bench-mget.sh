#!/usr/bin/env bash
# A batch as multi-gets: multiloop's memcached::get_many through the pool beside
# memcslap --test=mget, against one memcached, interleaved and repeated.
#
#   scripts/bench-mget.sh                 # 20,000-key batches, 1 and 8 connections, 5 rounds
#   ROUNDS=9 KEYS=20000 scripts/bench-mget.sh
#
# Both sides use short keys and values spread over 50 to 5,000 bytes (memcslap's own, random).
# memcslap --test=mget loads KEYS keys, then each of C threads (one connection each) gets all
# of them in one multi-get; its time excludes the load. The multiloop side stores its keys, then runs C batches of KEYS keys at once on a
# pool of C connections, each batch in chunks of 500. Needs memcached and memcslap (Debian:
# memcached, libmemcached-tools).
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
printf '%-12s %-22s %12s %12s %12s\n' connections client min_keys/s median max
for c in 1 8; do
  : > /tmp/mget-slap.$$ ; : > /tmp/mget-ml.$$
  for _ in $(seq "$rounds"); do
    # Interleaved: one round of each, in turn, so that drift hits both.
    # "Time to mget 160000 keys by 8 threads: 0.410 seconds."
    memcslap --servers="127.0.0.1:$port" --concurrency="$c" --execute-number="$keys" \
      --test=mget | sed -n 's/^Time to mget *\([0-9]*\) keys by .*: *\([0-9.]*\) seconds.*/\1 \2/p' \
      | awk '{ printf "%.0f\n", $1 / $2 }' >> /tmp/mget-slap.$$
    ./target/release/examples/bench_mget "127.0.0.1:$port" "$c" "$keys" 500 \
      | sed 's/.*keys_per_s=\([0-9]*\).*/\1/' >> /tmp/mget-ml.$$
  done
  for side in slap ml; do
    f=/tmp/mget-$side.$$
    name=$([ $side = slap ] && echo "memcslap --test=mget" || echo "multiloop get_many")
    printf '%-12s %-22s %12s %12s %12s\n' "$c" "$name" "$(sort -n $f | head -1)" \
      "$(median < $f)" "$(sort -n $f | tail -1)"
  done
  awk -v a="$(median < /tmp/mget-ml.$$)" -v b="$(median < /tmp/mget-slap.$$)" -v c="$c" \
    'BEGIN { printf "%-12s ratio of medians %.2fx of memcslap\n", c, a / b }'
  rm -f /tmp/mget-slap.$$ /tmp/mget-ml.$$
done
