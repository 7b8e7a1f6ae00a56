# Sourced by the benchmark scripts: starts a private nginx (one worker, no logs) in WORK.
#   start_nginx WORK CPUS 'server { … }'   → prints the port it listens on; $PORT in the block
#                                          is replaced by that port
#   stop_nginx WORK
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_nginx() {
  local work=$1 cpus=$2 server=$3 port
  port=$(free_port)
  mkdir -p "$work/tmp"
  chmod 755 "$work"   # workers drop privileges and must read files under WORK
  cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  ${server//\$PORT/$port}
}
CONF
  taskset -c "$cpus" nginx -c "$work/nginx.conf" -p "$work"
  echo "$port"
}

stop_nginx() {
  [ -f "$1/nginx.pid" ] && kill "$(cat "$1/nginx.pid")" 2>/dev/null || true
}
