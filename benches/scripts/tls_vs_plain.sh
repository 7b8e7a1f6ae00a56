#!/usr/bin/env bash
# A single-source `peerdex get` over TLS (the default) against the same download from an agent
# with `upload.plain_http` (the debugging switch), and both against curl from nginx over HTTPS
# with the same cipher (TLS 1.3, AES-128-GCM) and over plain HTTP. Two agents, each sharing its
# own file of the same size; alternating runs, each after `sync`; medians.
#
#   benches/install-baselines.sh && cargo build --release -p peerdex -p peerdex-server
#   benches/scripts/tls_vs_plain.sh [MIB] [ROUNDS]
set -euo pipefail
MIB=${1:-1024}
ROUNDS=${2:-5}
BIN=$(cd "$(dirname "$0")/../.." && pwd)/target/release
for tool in nginx curl openssl bc; do
  command -v $tool >/dev/null || { echo "$tool is missing: run benches/install-baselines.sh"; exit 1; }
done
# In memory when it can (TMPDIR=/dev/shm): the comparison is of the network path, not the disk.
WORK=$(mktemp -d)
source "$(dirname "$0")/nginx.sh"
cleanup() { stop_nginx "$WORK"; kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
mkdir -p tls plain out www
head -c $((MIB << 20)) /dev/urandom > tls/secure.bin
head -c $((MIB << 20)) /dev/urandom > plain/clear.bin
cp tls/secure.bin www/content.bin
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -keyout key.pem -out cert.pem 2>/dev/null
printf '[download]\nshare = false\n' > tls.toml
printf '[download]\nshare = false\n[upload]\nplain_http = true\n' > plain.toml

PORTS=$(python3 -c 'import socket
a=socket.socket(); a.bind(("127.0.0.1",0)); b=socket.socket(); b.bind(("127.0.0.1",0))
print(a.getsockname()[1], b.getsockname()[1])')
read -r HTTPS_PORT HTTP_PORT <<<"$PORTS"
start_nginx "$WORK" 0 "server { listen 127.0.0.1:$HTTP_PORT; root $WORK/www; }
  server { listen 127.0.0.1:$HTTPS_PORT ssl; root $WORK/www; ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem; ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256; }" > /dev/null

"$BIN/peerdex-server" --listen 127.0.0.1:0 --data "$WORK/data" > srv.out 2> srv.err &
for _ in $(seq 1 100); do [ -s srv.out ] && break; sleep 0.1; done
URL=$(sed 's/listening on //' srv.out)
for n in tls plain; do
  "$BIN/peerdex" --state "$WORK/st$n" --config "$n.toml" agent --server "$URL" \
      --share "$WORK/$n" --listen 127.0.0.1:0 --nick "$n" > "ag$n.out" 2> "ag$n.err" &
done
hash_of() { # NAME → its hash once the index lists it with one source online
  local answer hash
  for _ in $(seq 1 1200); do
    answer=$("$BIN/peerdex" --state "$WORK/me" search --server "$URL" --json "$1" 2>/dev/null || true)
    hash=$(grep -m1 '"hash"' <<<"$answer" | cut -d'"' -f4 || true)
    [ -n "$hash" ] && { echo "$hash"; return; }
    sleep 0.5
  done
  echo "no $1 in the index" >&2; exit 1
}
TLS_HASH=$(hash_of secure)
PLAIN_HASH=$(hash_of clear)

secs() { local s e; s=$(date +%s.%N); "$@" > /dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
get() { "$BIN/peerdex" --state "$WORK/me" get --foreground --server "$URL" -o out "$1"; }
: > tls.t; : > plain.t; : > https.t; : > http.t
for _ in $(seq 1 "$ROUNDS"); do
  rm -f out/*; sync; secs get "$TLS_HASH" >> tls.t
  rm -f out/*; sync; secs get "$PLAIN_HASH" >> plain.t
  rm -f out/*; sync; secs curl -sfk --tlsv1.3 --tls13-ciphers TLS_AES_128_GCM_SHA256 \
      -o out/c.bin "https://127.0.0.1:$HTTPS_PORT/content.bin" >> https.t
  rm -f out/*; sync; secs curl -sf -o out/c.bin "http://127.0.0.1:$HTTP_PORT/content.bin" >> http.t
done
T=$(median < tls.t); P=$(median < plain.t); S=$(median < https.t); H=$(median < http.t)
rate() { echo "$MIB / 1024 / $1" | bc -l | cut -c1-5; }
echo "content: $MIB MiB, one source, rounds: $ROUNDS (medians), unpinned"
echo "  curl from nginx, HTTPS TLS 1.3 AES-128-GCM (anchor): $S s, $(rate "$S") GiB/s"
echo "  curl from nginx, plain HTTP (sendfile): $H s, $(rate "$H") GiB/s"
echo "  peerdex get, plain HTTP (upload.plain_http): $P s, $(rate "$P") GiB/s"
echo "  peerdex get, TLS 1.3 pinned: $T s, $(rate "$T") GiB/s"
echo "  TLS / plain peerdex: $(echo "$P / $T" | bc -l | cut -c1-4)x; TLS peerdex / nginx HTTPS: $(echo "$S / $T" | bc -l | cut -c1-4)x"
