#!/usr/bin/env bash
# Make this host able to run the project: Docker engine with gVisor (runsc) registered,
# debootstrap (runner image), iproute2 (network-namespace tests), PostgreSQL 15 (test suite).
# Idempotent, non-interactive, needs root; a fast no-op when everything is already there.
#
# Usage: bash scripts/ensure-system.sh        (what `make engine` runs)
# Env:   DOCKERD_LOG (default /var/log/data-sandbox-dockerd.log)
#        DOCKERD_WAIT_S (default 60): how long to wait for a started engine to answer
#        DOCKER_DAEMON_JSON (default /etc/docker/daemon.json)
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/data-sandbox-dockerd.log}
DOCKERD_WAIT_S=${DOCKERD_WAIT_S:-60}
DOCKER_DAEMON_JSON=${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}
RUNSC=/usr/bin/runsc
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
# gVisor: a user-space kernel between a job and the host kernel (docs/threat-model.md).
# Debian's package; the agent uses it whenever the engine has it registered.
[ -x "$RUNSC" ] || missing+=(runsc)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
# A C toolchain and the OpenSSL and Python headers build the optional
# ledger/_merkle_accel.c (pip install -e; without them the install still succeeds and the
# ledger runs its slower pure-Python Merkle code). libc6-dev: only a Recommends of gcc.
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -f /usr/include/stdio.h ] || missing+=(libc6-dev)
[ -f /usr/include/openssl/evp.h ] || missing+=(libssl-dev)
# The web UI's browser tests (tests/web/): Debian's Chromium and its WebDriver (browser
# builds cannot be downloaded), and a CJK font so 简体中文 pages render their text (the
# regulator's PDF report embeds the same font).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)
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
engine_has_runsc() {
    local runtimes
    runtimes=$(timeout 15 docker info --format '{{json .Runtimes}}' 2>/dev/null) || return 1
    [[ "$runtimes" == *'"runsc":'* ]]
}

# The engine's `runtimes` entry for gVisor, merged into daemon.json (other keys are kept; the
# file stays valid JSON, written to a temporary file and renamed into place). Prints
# "changed" when the file was rewritten. runtimeArgs:
#  --platform=ptrace  works on any host, nested virtualisation or not (KVM needs /dev/kvm).
#  --network=none     without it runsc refuses a container with network "none" ("cannot run
#                     with network enabled in root network namespace"); jobs never have one.
# https://gvisor.dev/docs/user_guide/quick_start/docker/ ,
# https://gvisor.dev/docs/user_guide/networking/#network-passthrough
register_runsc() {
    mkdir -p "$(dirname "$DOCKER_DAEMON_JSON")"
    python3 - "$DOCKER_DAEMON_JSON" "$RUNSC" <<'PY'
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        text = f.read()
except FileNotFoundError:
    text = ""
conf = json.loads(text) if text.strip() else {}
if not isinstance(conf, dict):
    sys.exit(f"{path}: not a JSON object; fix it by hand")
want = {"path": runsc, "runtimeArgs": ["--platform=ptrace", "--network=none"]}
runtimes = conf.setdefault("runtimes", {})
if runtimes.get("runsc") != want:
    runtimes["runsc"] = want
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(conf, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    print("changed")
PY
}

dockerd_alive() {
    [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null
}

# Wait until the engine lists runsc among its runtimes (after a reload or a fresh start).
wait_for_runsc() {
    for _ in $(seq "$DOCKERD_WAIT_S"); do
        engine_has_runsc && return 0
        sleep 1
    done
    say "the engine does not list runsc after ${DOCKERD_WAIT_S}s; last lines of $DOCKERD_LOG:"
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    return 1
}

# A running engine without runsc: register it and reload the configuration with SIGHUP
# (runtimes are reloadable; a restart would stop other people's containers, and without
# live-restore every job). https://docs.docker.com/engine/reference/commandline/dockerd/#miscellaneous-options
ensure_runsc_on_running_engine() {
    engine_has_runsc && return 0
    register_runsc >/dev/null
    if ! dockerd_alive; then
        say "runsc is registered in $DOCKER_DAEMON_JSON, but no dockerd pid to reload; restart the engine to use it"
        return 1
    fi
    say "registering runsc with the running engine (SIGHUP to dockerd $(cat /var/run/docker.pid))"
    kill -HUP "$(cat /var/run/docker.pid)"
    wait_for_runsc
}

if engine_answers; then
    # Already running, maybe with other flags than ours: leave it alone, just use it.
    if [ "$(timeout 15 docker info --format '{{.LiveRestoreEnabled}}' 2>/dev/null)" != true ]; then
        say "note: the running engine has live-restore off (a dockerd restart kills jobs)"
    fi
    ensure_runsc_on_running_engine
    exit $?
fi

if dockerd_alive; then
    say "dockerd (pid $(cat /var/run/docker.pid)) is running but not answering yet; waiting"
else
    if [ ! -d /sys/fs/cgroup ] || [ -z "$(ls -A /sys/fs/cgroup 2>/dev/null)" ]; then
        say "warning: /sys/fs/cgroup is empty; dockerd needs cgroups (cgroupfs-mount)"
    fi
    # Before the start: the new engine reads the runsc entry with the rest of its config.
    register_runsc >/dev/null
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
        # Started before this run (not answering then) or by us: runsc either way.
        ensure_runsc_on_running_engine
        exit $?
    fi
    sleep 1
done
say "the engine did not answer within ${DOCKERD_WAIT_S}s; last lines of $DOCKERD_LOG:"
tail -n 20 "$DOCKERD_LOG" >&2 || true
exit 1
