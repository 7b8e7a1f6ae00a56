#!/usr/bin/env bash
# The whole agent pipeline on a large tree: a fresh index server and agent, timed until every file
# is scanned, hashed and held by the server; then a restart of the agent on the unchanged tree.
#
#   cargo build --release -p peerdex -p peerdex-server
#   cargo run --release -p peerdex-benches --bin scan -- 1000000 1 /tmp/scan1m   # builds the tree
#   benches/scripts/agent_pipeline.sh /tmp/scan1m
set -euo pipefail
TREE=${1:?usage: agent_pipeline.sh TREE_DIR}
BIN=$(cd "$(dirname "$0")/../.." && pwd)/target/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$WORK"

"$BIN/peerdex-server" --listen 127.0.0.1:0 --data "$WORK/data" > srv.out 2> srv.err &
SERVER=$!
for _ in $(seq 1 100); do [ -s srv.out ] && break; sleep 0.1; done
URL=$(sed 's/listening on //' srv.out)

agent() { "$BIN/peerdex" --state "$WORK/state" --config "$WORK/none.toml" agent --server "$URL" \
    --share "$TREE" --listen 127.0.0.1:0 --nick bench > "$1.out" 2> "$1.err" & }
status() { "$BIN/peerdex" --state "$WORK/state" status 2>/dev/null || true; }
wait_synced() {
  for _ in $(seq 1 3000); do
    S=$(status)
    if grep -q "hashing   0 files" <<<"$S" && grep -q " 0 changes to send" <<<"$S" \
        && ! grep -q scanning <<<"$S" && grep -q "hashed)" <<<"$S"; then return 0; fi
    sleep 0.2
  done
  echo "not synced in time"; exit 1
}
rss() { grep VmHWM "/proc/$1/status" | awk '{print $2 / 1024 " MiB"}'; }

START=$(date +%s.%N)
agent first; AGENT=$!
wait_synced
echo "first run: scanned, hashed and synced in $(echo "$(date +%s.%N) - $START" | bc) s"
status | grep -E "^list|hashed\)"
echo "agent peak RSS $(rss $AGENT), server peak RSS $(rss $SERVER)"

kill -TERM $AGENT; wait $AGENT || true
START=$(date +%s.%N)
agent second; AGENT=$!
for _ in $(seq 1 600); do grep -q "all shares scanned" second.err && break; sleep 0.05; done
echo "restart, unchanged tree: rescanned in $(echo "$(date +%s.%N) - $START" | bc) s"
sleep 1
status | grep -E "^list|^hashing"
echo "agent peak RSS $(rss $AGENT)"
