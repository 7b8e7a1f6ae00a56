#!/usr/bin/env bash
# The index server's heartbeat rate against nginx answering a tiny response, same client.
#   benches/install-baselines.sh
#   benches/scripts/rate_vs_nginx.sh [CONNECTIONS] [SECONDS] [ROUNDS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
command -v nginx >/dev/null || { echo "nginx is missing: run benches/install-baselines.sh"; exit 1; }
WORK=$(mktemp -d)
trap '[ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT
chmod 755 "$WORK"
mkdir -p "$WORK/tmp"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp; fastcgi_temp_path $WORK/tmp;
  uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
  server { listen 127.0.0.1:$PORT; location /tiny { return 200 "ok"; } }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK"
cd "$ROOT"
cargo run --release -q -p peerdex-benches --bin rate -- "http://127.0.0.1:$PORT/tiny" "${1:-32}" "${2:-5}" "${3:-3}"
