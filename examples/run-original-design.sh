#!/usr/bin/env bash
# Runs the original design's example end to end on a fresh machine:
# installs redis-server if it is missing (Debian/Ubuntu, as root), installs
# dtq-core and dtq-plugins-testonly into .venv, starts a private redis-server
# on a free loopback port (unless DTQ_URL is set), and runs
# examples/original_design.py, which prints "To be processed!To be processed!".
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null && [ -z "${DTQ_URL:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing: install it (sudo apt-get install redis-server) or set DTQ_URL" >&2
    exit 1
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check . ./dtq_plugins_testonly

if [ -z "${DTQ_URL:-}" ]; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  workdir=$(mktemp -d)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$workdir" >/dev/null &
  redis_pid=$!
  trap 'kill $redis_pid 2>/dev/null; rm -rf "$workdir"' EXIT
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  export DTQ_URL="redis://127.0.0.1:$port/0"
fi

.venv/bin/python examples/original_design.py
