#!/usr/bin/env bash
# A download handed to the running agent's transfer queue (`peerdex get --wait`) against the
# same download in the `peerdex` process (`--foreground`) and against `curl` from nginx serving
# the same file, all on loopback from one source agent, in the same run. Alternating rounds,
# each after `sync`; medians. What the queue adds is the hand-over over the control socket, the
# catalog rows, the report to the index and `--wait`'s polling (every 100 ms).
#
#   benches/install-baselines.sh && cargo build --release -p peerdex -p peerdex-server
#   benches/scripts/queue_vs_foreground.sh [MIB] [ROUNDS]
set -euo pipefail
MIB=${1:-256}
ROUNDS=${2:-5}
BIN=$(cd "$(dirname "$0")/../.." && pwd)/target/release
for tool in nginx curl bc; do
  command -v $tool >/dev/null || { echo "$tool is missing: run benches/install-baselines.sh"; exit 1; }
done
WORK=$(mktemp -d)
source "$(dirname "$0")/nginx.sh"
cleanup() { stop_nginx "$WORK"; kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
mkdir -p src www out
head -c $((MIB << 20)) /dev/urandom > src/content.bin
cp src/content.bin www/content.bin
printf '[download]\nshare = false\n' > conf.toml
NGINX_PORT=$(start_nginx "$WORK" 0-1 "server { listen 127.0.0.1:\$PORT; root $WORK/www; }")

"$BIN/peerdex-server" --listen 127.0.0.1:0 --data "$WORK/data" > srv.out 2> srv.err &
for _ in $(seq 1 100); do [ -s srv.out ] && break; sleep 0.1; done
URL=$(sed 's/listening on //' srv.out)
"$BIN/peerdex" --state "$WORK/src-state" --config conf.toml agent --server "$URL" \
    --share "$WORK/src" --listen 127.0.0.1:0 --nick source > src.out 2> src.err &
# The downloader's own agent: with it running, `get` hands downloads to its queue.
"$BIN/peerdex" --state "$WORK/me" --config conf.toml agent --server "$URL" \
    --listen 127.0.0.1:0 --nick me > me.out 2> me.err &
for _ in $(seq 1 1200); do
  ANSWER=$("$BIN/peerdex" --state "$WORK/me" --config conf.toml search --server "$URL" --json content 2>/dev/null || true)
  HASH=$(grep -m1 '"hash"' <<<"$ANSWER" | cut -d'"' -f4 || true)
  [ -n "$HASH" ] && [ -S "$WORK/me/agent.sock" ] && break
  sleep 0.5
done

secs() { local s e; s=$(date +%s.%N); "$@" > /dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
pdx() { "$BIN/peerdex" --state "$WORK/me" --config conf.toml "$@"; }
: > nginx.t; : > fg.t; : > queue.t
for _ in $(seq 1 "$ROUNDS"); do
  rm -f out/*; sync; secs curl -sf -o out/content.bin "http://127.0.0.1:$NGINX_PORT/content.bin" >> nginx.t
  rm -f out/*; sync; secs pdx get --server "$URL" --foreground --dir out "$HASH" >> fg.t
  rm -f out/*; sync; secs pdx get --server "$URL" --wait --dir "$WORK/out" "$HASH" >> queue.t
  cmp -s out/content.bin src/content.bin || { echo "the queued download is not the content"; exit 1; }
done
N=$(median < nginx.t); F=$(median < fg.t); Q=$(median < queue.t)
rate() { echo "$MIB / $1" | bc -l | cut -c1-6; }
echo "content: $MIB MiB, rounds: $ROUNDS (medians), one source agent, unpinned"
echo "  curl from nginx (baseline):         $N s, $(rate "$N") MiB/s"
echo "  peerdex get --foreground:           $F s, $(rate "$F") MiB/s, $(echo "$N / $F" | bc -l | cut -c1-4)x nginx+curl"
echo "  peerdex get --wait (agent's queue): $Q s, $(rate "$Q") MiB/s, $(echo "$N / $Q" | bc -l | cut -c1-4)x nginx+curl, $(echo "$F / $Q" | bc -l | cut -c1-4)x foreground"
