#!/usr/bin/env bash
# docker-compose from Debian (pinned), for `make compose-demo`. Idempotent; needs root.
# Debian 12 ships Compose v1 (the `docker-compose` program, Python); the compose file is
# written in the Compose specification both v1 (file format 3.x) and v2 read.
set -euo pipefail
PIN=${DOCKER_COMPOSE_VERSION:-1.29.2-3}
say() { echo "ensure-compose: $*" >&2; }
have=$(dpkg-query -W -f='${Version}' docker-compose 2>/dev/null || true)
if [ "$have" = "$PIN" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "must run as root (it installs docker-compose=$PIN)"
    exit 1
fi
say "installing docker-compose=$PIN"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "docker-compose=$PIN"
