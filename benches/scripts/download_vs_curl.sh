#!/usr/bin/env bash
# `peerdex get` against `curl` fetching the same content from the same agent on loopback, run
# alternately; medians. Also two sources vs one.
#
#   cargo build --release -p peerdex -p peerdex-server
#   benches/scripts/download_vs_curl.sh [MIB] [ROUNDS]
set -euo pipefail
MIB=${1:-1024}
ROUNDS=${2:-5}
BIN=$(cd "$(dirname "$0")/../.." && pwd)/target/release
command -v curl >/dev/null || { echo "curl is needed as the baseline"; exit 1; }
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$WORK"
mkdir -p a b out
head -c $((MIB << 20)) /dev/urandom > a/content.bin
cp a/content.bin b/content.bin
printf '[download]\nshare = false\n' > conf.toml

"$BIN/peerdex-server" --listen 127.0.0.1:0 --data "$WORK/data" > srv.out 2> srv.err &
for _ in $(seq 1 100); do [ -s srv.out ] && break; sleep 0.1; done
URL=$(sed 's/listening on //' srv.out)
for n in a b; do
  "$BIN/peerdex" --state "$WORK/st$n" --config conf.toml agent --server "$URL" --share "$WORK/$n" \
      --listen 127.0.0.1:0 --nick "$n" > "ag$n.out" 2> "ag$n.err" &
done
for _ in $(seq 1 600); do
  HASH=$("$BIN/peerdex" --state "$WORK/me" search --server "$URL" --json content 2>/dev/null \
      | grep -m1 '"hash"' | cut -d'"' -f4 || true)
  SOURCES=$("$BIN/peerdex" --state "$WORK/me" search --server "$URL" --json content 2>/dev/null \
      | grep -m1 '"sources_online"' | tr -dc '0-9' || true)
  [ -n "$HASH" ] && [ "${SOURCES:-0}" = 2 ] && break
  sleep 0.5
done
AGENT=$(sed 's/serving on //' aga.out)

secs() { local s e; s=$(date +%s.%N); "$@" > /dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > curl.t; : > get1.t; : > get2.t
for _ in $(seq 1 "$ROUNDS"); do
  rm -f out/*; sync; secs curl -sf -o out/c.bin "$AGENT/peerdex/v1/blobs/$HASH" >> curl.t
  rm -f out/*; sync; secs "$BIN/peerdex" --state "$WORK/me" get --server "$URL" --max-sources 1 -o out "$HASH" >> get1.t
  rm -f out/*; sync; secs "$BIN/peerdex" --state "$WORK/me" get --server "$URL" --max-sources 2 -o out "$HASH" >> get2.t
done
C=$(median < curl.t); G1=$(median < get1.t); G2=$(median < get2.t)
echo "content: $MIB MiB, rounds: $ROUNDS (medians, unpinned)"
echo "curl from one agent (baseline): $C s, $(echo "$MIB / 1024 / $C" | bc -l | cut -c1-5) GiB/s"
echo "peerdex get, 1 source: $G1 s, $(echo "$MIB / 1024 / $G1" | bc -l | cut -c1-5) GiB/s, $(echo "$C / $G1" | bc -l | cut -c1-4)x curl"
echo "peerdex get, 2 sources: $G2 s, $(echo "$MIB / 1024 / $G2" | bc -l | cut -c1-5) GiB/s, $(echo "$C / $G2" | bc -l | cut -c1-4)x curl"
