#!/usr/bin/env bash
# End to end: GET throughput and p99 through a multiloop pool with redis-rs, beside
# redis-benchmark at the same concurrency, against one redis-server, in the same run.
#
#   scripts/bench-e2e.sh            # 200,000 GETs at concurrency 8 and 50
#   REQUESTS=500000 scripts/bench-e2e.sh
#
# Needs redis-server and redis-benchmark (Debian: apt-get install redis-server redis-tools);
# the memcached half runs when memcached and memcslap are installed (Debian: memcached,
# libmemcached-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${REQUESTS:-200000}
port=$((20000 + RANDOM % 20000))

cargo build -q --release --features redis,memcached --example bench_redis --example bench_memcached
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --protected-mode no \
  --daemonize no > /dev/null &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping > /dev/null 2>&1 && break; sleep 0.05; done

printf '%-12s %-18s %12s %10s %10s\n' concurrency client GET/s p50_ms p99_ms
for c in 8 50; do
  # redis-benchmark's SET test writes the key its GET test reads.
  line=$(redis-benchmark -p "$port" -t set,get -c "$c" -n "$requests" --csv | grep '^"GET"')
  rb_rps=$(echo "$line" | cut -d, -f2 | tr -d '"')
  rb_p50=$(echo "$line" | cut -d, -f5 | tr -d '"')
  rb_p99=$(echo "$line" | cut -d, -f7 | tr -d '"')
  ours=$(./target/release/examples/bench_redis "redis://127.0.0.1:$port" "$c" "$requests")
  ml_rps=$(echo "$ours" | sed 's/.*rps=\([0-9.]*\).*/\1/')
  ml_p50=$(echo "$ours" | sed 's/.*p50_ms=\([0-9.]*\).*/\1/')
  ml_p99=$(echo "$ours" | sed 's/.*p99_ms=\([0-9.]*\).*/\1/')
  printf '%-12s %-18s %12.0f %10s %10s\n' "$c" redis-benchmark "$rb_rps" "$rb_p50" "$rb_p99"
  printf '%-12s %-18s %12.0f %10s %10s\n' "$c" multiloop+redis-rs "$ml_rps" "$ml_p50" "$ml_p99"
  awk -v a="$ml_rps" -v b="$rb_rps" -v c="$c" 'BEGIN { printf "%-12s ratio %.2fx of redis-benchmark\n", c, a / b }'
done

if command -v memcached > /dev/null && command -v memcslap > /dev/null; then
  mport=$((port + 1))
  root=(); [ "$(id -u)" = 0 ] && root=(-u root)
  memcached -l 127.0.0.1 -p "$mport" -U 0 -t 2 "${root[@]}" &
  mserver=$!
  trap 'kill $server $mserver 2>/dev/null; wait $server $mserver 2>/dev/null || true' EXIT
  sleep 0.3
  echo
  printf '%-12s %-22s %12s %10s %10s\n' concurrency client GET/s p50_ms p99_ms
  for c in 8 50; do
    # memcslap runs C threads of `--execute-number` gets each.
    per_thread=$((requests / c))
    total=$((per_thread * c))
    secs=$(memcslap --servers="127.0.0.1:$mport" --concurrency="$c" --execute-number="$per_thread" \
      --test=get | sed -n 's/^Time to get .*: *\([0-9.]*\) seconds\./\1/p')
    ms_rps=$(awk -v n="$total" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
    ours=$(./target/release/examples/bench_memcached "127.0.0.1:$mport" "$c" "$total")
    ml_rps=$(echo "$ours" | sed 's/.*rps=\([0-9.]*\).*/\1/')
    ml_p50=$(echo "$ours" | sed 's/.*p50_ms=\([0-9.]*\).*/\1/')
    ml_p99=$(echo "$ours" | sed 's/.*p99_ms=\([0-9.]*\).*/\1/')
    printf '%-12s %-22s %12s %10s %10s\n' "$c" memcslap "$ms_rps" - -
    printf '%-12s %-22s %12.0f %10s %10s\n' "$c" multiloop+memcache-async "$ml_rps" "$ml_p50" "$ml_p99"
    awk -v a="$ml_rps" -v b="$ms_rps" -v c="$c" 'BEGIN { printf "%-12s ratio %.2fx of memcslap\n", c, a / b }'
  done
fi
