#!/usr/bin/env bash
# `peerdex get` against `curl` from nginx serving the same file on loopback: unpinned, and pinned
# (servers on core 0, the client on core 1); one, two and three sources. Alternating runs, each
# after `sync`; medians.
#
#   benches/install-baselines.sh && cargo build --release -p peerdex -p peerdex-server
#   benches/scripts/download_vs_nginx.sh [MIB] [ROUNDS]
set -euo pipefail
MIB=${1:-1024}
ROUNDS=${2:-5}
BIN=$(cd "$(dirname "$0")/../.." && pwd)/target/release
for tool in nginx curl taskset; do
  command -v $tool >/dev/null || { echo "$tool is missing: run benches/install-baselines.sh"; exit 1; }
done
WORK=$(mktemp -d)
source "$(dirname "$0")/nginx.sh"
cleanup() { stop_nginx "$WORK"; kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
mkdir -p a b c out www
head -c $((MIB << 20)) /dev/urandom > a/content.bin
cp a/content.bin b/content.bin; cp a/content.bin c/content.bin; cp a/content.bin www/content.bin
printf '[download]\nshare = false\n' > conf.toml

NGINX_PORT=$(start_nginx "$WORK" 0 "server { listen 127.0.0.1:\$PORT; root $WORK/www; }")

taskset -c 0 "$BIN/peerdex-server" --listen 127.0.0.1:0 --data "$WORK/data" > srv.out 2> srv.err &
for _ in $(seq 1 100); do [ -s srv.out ] && break; sleep 0.1; done
URL=$(sed 's/listening on //' srv.out)
for n in a b c; do
  taskset -c 0 "$BIN/peerdex" --state "$WORK/st$n" --config conf.toml agent --server "$URL" \
      --share "$WORK/$n" --listen 127.0.0.1:0 --nick "$n" > "ag$n.out" 2> "ag$n.err" &
done
for _ in $(seq 1 1200); do
  ANSWER=$("$BIN/peerdex" --state "$WORK/me" search --server "$URL" --json content 2>/dev/null || true)
  HASH=$(grep -m1 '"hash"' <<<"$ANSWER" | cut -d'"' -f4 || true)
  SOURCES=$(grep -m1 '"sources_online"' <<<"$ANSWER" | tr -dc '0-9' || true)
  [ -n "$HASH" ] && [ "${SOURCES:-0}" = 3 ] && break
  sleep 0.5
done

secs() { local s e; s=$(date +%s.%N); "$@" > /dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
get() { "$BIN/peerdex" --state "$WORK/me" get --server "$URL" --max-sources "$1" -o out "$HASH"; }
run() { # PIN-PREFIX...
  : > nginx.t; : > g1.t; : > g2.t; : > g3.t
  for _ in $(seq 1 "$ROUNDS"); do
    rm -f out/*; sync; secs "$@" curl -sf -o out/c.bin "http://127.0.0.1:$NGINX_PORT/content.bin" >> nginx.t
    for n in 1 2 3; do rm -f out/*; sync; secs "$@" bash -c "$(declare -f get); BIN=$BIN WORK=$WORK URL=$URL HASH=$HASH get $n" >> g$n.t; done
  done
  N=$(median < nginx.t)
  echo "  curl from nginx (baseline): $N s, $(echo "$MIB / 1024 / $N" | bc -l | cut -c1-5) GiB/s"
  for n in 1 2 3; do
    G=$(median < g$n.t)
    echo "  peerdex get, $n source(s): $G s, $(echo "$MIB / 1024 / $G" | bc -l | cut -c1-5) GiB/s, $(echo "$N / $G" | bc -l | cut -c1-4)x nginx+curl"
  done
}
echo "content: $MIB MiB, rounds: $ROUNDS (medians); nginx sendfile on; peerdex reads sources 512 KiB at a time, agents send 256 KiB chunks"
echo "unpinned:"
run env
echo "pinned (nginx, agents and index server on core 0; curl and peerdex get on core 1):"
run taskset -c 1
