#!/usr/bin/env bash
# The index server's heartbeat rate against nginx answering a tiny response, same client.
#   benches/install-baselines.sh
#   benches/scripts/rate_vs_nginx.sh [CONNECTIONS] [SECONDS] [ROUNDS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
command -v nginx >/dev/null || { echo "nginx is missing: run benches/install-baselines.sh"; exit 1; }
WORK=$(mktemp -d)
source "$(dirname "$0")/nginx.sh"
trap 'stop_nginx "$WORK"; rm -rf "$WORK"' EXIT
PORT=$(start_nginx "$WORK" 0-1 'server { listen 127.0.0.1:$PORT; location /tiny { return 200 "ok"; } }')
cd "$ROOT"
cargo run --release -q -p peerdex-benches --bin rate -- "http://127.0.0.1:$PORT/tiny" "${1:-32}" "${2:-5}" "${3:-3}"
