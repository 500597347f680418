#!/usr/bin/env bash
# Make this host able to run the project: Docker engine, debootstrap (runner image),
# iproute2 (network-namespace tests), PostgreSQL 15 (test suite). Idempotent, non-interactive,
# needs root; a fast no-op when everything is already there.
#
# Usage: bash scripts/ensure-system.sh        (what `make engine` runs)
# Env:   DOCKERD_LOG (default /var/log/data-sandbox-dockerd.log)
#        DOCKERD_WAIT_S (default 60): how long to wait for a started engine to answer
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/data-sandbox-dockerd.log}
DOCKERD_WAIT_S=${DOCKERD_WAIT_S:-60}
say() { echo "ensure-system: $*" >&2; }
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"  # dockerd, debootstrap live in sbin

if [ "$(id -u)" != 0 ]; then
    say "must run as root (it installs packages and starts dockerd)"
    exit 1
fi

# ---- packages: apt only when something is missing --------------------------------------
missing=()
{ command -v dockerd && command -v docker; } >/dev/null 2>&1 || missing+=(docker.io)
command -v mount >/dev/null 2>&1 || missing+=(mount)  # the executor mounts /out tmpfs
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
# A C toolchain and the OpenSSL and Python headers build the optional
# ledger/_merkle_accel.c (pip install -e; without them the install still succeeds and the
# ledger runs its slower pure-Python Merkle code). libc6-dev: only a Recommends of gcc.
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -f /usr/include/stdio.h ] || missing+=(libc6-dev)
[ -f /usr/include/openssl/evp.h ] || missing+=(libssl-dev)
py_inc=$(python3 -c 'import sysconfig; print(sysconfig.get_path("include"))' 2>/dev/null || true)
[ -n "$py_inc" ] && [ -f "$py_inc/Python.h" ] || missing+=(python3-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # --no-install-recommends: no apparmor/git/needrestart etc. on an execution host.
    apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold \
        "${missing[@]}"
fi

# ---- the engine -------------------------------------------------------------------------
engine_answers() { timeout 15 docker info >/dev/null 2>&1; }

if engine_answers; then
    # Already running, maybe with other flags than ours: leave it alone, just use it.
    if [ "$(timeout 15 docker info --format '{{.LiveRestoreEnabled}}' 2>/dev/null)" != true ]; then
        say "note: the running engine has live-restore off (a dockerd restart kills jobs)"
    fi
    exit 0
fi

dockerd_alive() {
    [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null
}

if dockerd_alive; then
    say "dockerd (pid $(cat /var/run/docker.pid)) is running but not answering yet; waiting"
else
    if [ ! -d /sys/fs/cgroup ] || [ -z "$(ls -A /sys/fs/cgroup 2>/dev/null)" ]; then
        say "warning: /sys/fs/cgroup is empty; dockerd needs cgroups (cgroupfs-mount)"
    fi
    say "starting dockerd (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    # Flags (see docs/executor.md, "Operator settings"):
    #  --live-restore        an engine restart/upgrade does not kill running jobs; the agent
    #                        reattaches through labels (deadline) after its own restart too.
    #  --bridge=none         no docker0: jobs run with network "none", so no bridge is needed,
    #                        and none exists for a misconfigured container to reach.
    #  --iptables=false, --ip-forward=false, --ip-masq=false
    #                        the engine never edits the host firewall nor turns the host into
    #                        a router (no NAT path from any container to the outside).
    #  (--icc=false is refused by dockerd together with --iptables=false; with no bridge it
    #   has nothing to act on anyway.)
    #  --userland-proxy=false  no docker-proxy processes (no published ports are used).
    #  --no-new-privileges   engine-wide default: no container gains privileges via setuid.
    #  --log-driver=local, max-size  bounded logs for any container, not only our jobs.
    setsid nohup dockerd \
        --live-restore \
        --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
        --userland-proxy=false \
        --no-new-privileges \
        --log-driver=local --log-opt max-size=10m --log-opt max-file=2 \
        --log-level=warn \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
fi

for _ in $(seq "$DOCKERD_WAIT_S"); do
    if engine_answers; then
        say "engine is up: $(docker info --format '{{.ServerVersion}} security={{json .SecurityOptions}}')"
        exit 0
    fi
    sleep 1
done
say "the engine did not answer within ${DOCKERD_WAIT_S}s; last lines of $DOCKERD_LOG:"
tail -n 20 "$DOCKERD_LOG" >&2 || true
exit 1
