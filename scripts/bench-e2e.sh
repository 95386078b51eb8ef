#!/usr/bin/env bash
# End to end: GETs through a multiloop pool, each request checking a connection out and giving
# it back, beside the servers' own load generators at the same concurrency and value sizes,
# interleaved and repeated, against one server per protocol.
#
#   scripts/bench-e2e.sh                  # 200,000 GETs at concurrency 8 and 50, 5 rounds
#   ROUNDS=7 REQUESTS=500000 scripts/bench-e2e.sh
#
# redis: redis-benchmark -t get -d 100 (C connections, one thread) beside
# benches/programs/bench_redis.rs (C tasks on a pool of C), both reading the 100-byte key
# redis-benchmark's SET wrote. memcached: memcslap --test=get (C threads, one connection each,
# 20-byte keys, values of 50 to 5,000 bytes) beside benches/programs/bench_memcached.rs (C tasks on a
# pool of C, 20-byte keys, values spread over 50 to 5,000 bytes). Each round runs both sides,
# in an order that alternates. Prints min/median/max per side and the ratio of each round.
# Needs redis-server, redis-benchmark, memcached and memcslap (Debian: redis-server,
# redis-tools, memcached, libmemcached-tools); a side whose tools are missing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${REQUESTS:-200000}
rounds=${ROUNDS:-5}
port=$((20000 + RANDOM % 20000))
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT

cargo build -q --release --features redis,memcached --example bench_redis --example bench_memcached

stats() { sort -n | awk '{a[NR]=$1} END {printf "%10.0f %10.0f %10.0f", a[1], a[int((NR+1)/2)], a[NR]}'; }
ratios() { sort -n | awk '{a[NR]=$1} END {printf "%6.2f %6.2f %6.2f", a[1], a[int((NR+1)/2)], a[NR]}'; }
field() { sed "s/.*$1=\([0-9.]*\).*/\1/"; }

# One side's rps into $tmp/$1, its p99 into $tmp/$1.p99.
record() { echo "$2" >> "$tmp/$1"; echo "$3" >> "$tmp/$1.p99"; }

report() { # $1 theirs, $2 ours, $3 concurrency
  paste "$tmp/$2" "$tmp/$1" | awk '{print $1 / $2}' > "$tmp/ratio"
  printf '%-5s %-24s %s   p99_ms median %s\n' "$3" "$1" "$(stats < "$tmp/$1")" "$(sort -n "$tmp/$1.p99" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
  printf '%-5s %-24s %s   p99_ms median %s\n' "$3" "$2" "$(stats < "$tmp/$2")" "$(sort -n "$tmp/$2.p99" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
  printf '%-5s ratio per round, min/median/max: %s\n' "$3" "$(ratios < "$tmp/ratio")"
  rm -f "$tmp/$1" "$tmp/$2" "$tmp/$1.p99" "$tmp/$2.p99"
}

if command -v redis-server > /dev/null && command -v redis-benchmark > /dev/null; then
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --protected-mode no \
    --daemonize no > /dev/null &
  pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$port" ping > /dev/null 2>&1 && break; sleep 0.05; done
  redis-benchmark -p "$port" -t set -d 100 -n 1000 -q > /dev/null
  echo "redis: $requests GETs of a 100-byte value per run, $rounds rounds"
  printf '%-5s %-24s %10s %10s %10s\n' c client min_GET/s median max
  for c in 8 50; do
    for r in $(seq "$rounds"); do
      theirs() {
        line=$(redis-benchmark -p "$port" -t get -d 100 -c "$c" -n "$requests" --csv | grep '^"GET"')
        record redis-benchmark "$(echo "$line" | cut -d, -f2 | tr -d '"')" "$(echo "$line" | cut -d, -f7 | tr -d '"')"
      }
      ours() {
        out=$(./target/release/examples/bench_redis "redis://127.0.0.1:$port" "$c" "$requests")
        record multiloop+redis-rs "$(echo "$out" | field rps)" "$(echo "$out" | field p99_ms)"
      }
      if [ $((r % 2)) = 1 ]; then theirs; ours; else ours; theirs; fi
    done
    report redis-benchmark multiloop+redis-rs "$c"
  done
  echo
fi

if command -v memcached > /dev/null && command -v memcslap > /dev/null; then
  mport=$((port + 1))
  root=(); [ "$(id -u)" = 0 ] && root=(-u root)
  # 1 GiB: nothing is evicted, so every GET on both sides is a hit.
  memcached -l 127.0.0.1 -p "$mport" -U 0 -t 2 -m 1024 "${root[@]}" &
  pids+=($!)
  sleep 0.3
  echo "memcached: $requests GETs per run, $rounds rounds"
  printf '%-5s %-24s %10s %10s %10s\n' c client min_GET/s median max
  for c in 8 50; do
    per_thread=$((requests / c))
    total=$((per_thread * c))
    for r in $(seq "$rounds"); do
      theirs() {
        # "Time to get 200000 keys by 8 threads: 1.234 seconds."
        secs=$(memcslap --servers="127.0.0.1:$mport" --concurrency="$c" --execute-number="$per_thread" \
          --test=get | sed -n 's/^Time to get .*: *\([0-9.]*\) seconds\./\1/p')
        record memcslap "$(awk -v n="$total" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')" 0
      }
      ours() {
        out=$(./target/release/examples/bench_memcached "127.0.0.1:$mport" "$c" "$total")
        record multiloop+memcached "$(echo "$out" | field rps)" "$(echo "$out" | field p99_ms)"
      }
      if [ $((r % 2)) = 1 ]; then theirs; ours; else ours; theirs; fi
    done
    report memcslap multiloop+memcached "$c"
  done
fi
