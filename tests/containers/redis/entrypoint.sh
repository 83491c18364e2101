#!/bin/sh
# As the official image's entrypoint: `redis-server` without a config file listens on every
# interface with protected mode off; anything else runs as given.
set -e
if [ "${1:-}" = redis-server ] && [ "${2#*.conf}" = "${2:-}" ]; then
  shift
  exec redis-server --bind 0.0.0.0 --protected-mode no "$@"
fi
exec "$@"
