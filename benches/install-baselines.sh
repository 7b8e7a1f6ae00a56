#!/usr/bin/env bash
# Installs the baseline tools the benchmarks compare against: b3sum (crates.io), nginx and curl
# (Debian packages). Safe to run again; says what it could not install.
set -uo pipefail
missing=0
if ! command -v b3sum >/dev/null; then
  cargo install b3sum --locked || { echo "could not install b3sum"; missing=1; }
fi
if ! command -v nginx >/dev/null || ! command -v curl >/dev/null; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nginx-light curl \
      || { echo "could not install nginx/curl"; missing=1; }
  else
    echo "no apt-get: install nginx and curl by hand"; missing=1
  fi
fi
for tool in b3sum nginx curl find; do
  if command -v "$tool" >/dev/null; then echo "ok: $tool"; else echo "MISSING: $tool"; missing=1; fi
done
exit $missing
