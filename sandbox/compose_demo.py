"""`make compose-demo`: scenario 1 against the product running as separate containers.

scripts/deploy/compose.yaml runs PostgreSQL, a witness, the controller and one agent per
hospital, each in a container of its own built offline (containers.service_images). This
prepares their secrets and directories, starts the services, creates the first admin
inside the controller's container, then plays :func:`sandbox.demo.run` over HTTP: each
hospital's agent is started as its own compose service when the scenario registers it.

Everything listens on 127.0.0.1 (host networking; see the compose file for why).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compute.sealing import create_key_file
from containers.engine import docker_client
from containers.image import ensure_runner_image
from containers.service_images import CONTROLLER_UID, ensure_service_images
from ledger.checkpoint import generate_key_file
from ledger.note import ALG_COSIGNATURE_V1
from sandbox import demo
from sandbox.client import Client

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "scripts" / "deploy" / "compose.yaml"
PROJECT = "data-sandbox-demo"
CONTROLLER_PORT = 18080
LOG_ORIGIN = "compose.data-sandbox.local/log"
AGENT_SERVICES = {code: f"agent-{code.lower()}" for _, code, _, _ in demo.HOSPITALS}
# Each agent's metrics port (scripts/deploy/compose.yaml).
AGENT_METRICS_PORTS = dict(zip(AGENT_SERVICES, (19101, 19102, 19103), strict=True))


def _write_secret(path: Path, text: str, uid: int = 0) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chown(path, uid, uid)


def _shared_mount(path: Path) -> None:
    """Make ``path`` a shared mount point, so a tmpfs an agent mounts below it (a job's
    /out) is seen by the engine too. Idempotent."""
    path.mkdir(parents=True, exist_ok=True)
    found = subprocess.run(["findmnt", "-n", "-o", "PROPAGATION", "--mountpoint", str(path)],
                           capture_output=True, text=True, check=False).stdout.strip()
    if not found:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    if "shared" not in found:
        subprocess.run(["mount", "--make-rshared", str(path)], check=True)


class ComposeStack:
    """What :func:`sandbox.demo.run` needs of a stack: its URL, and starting an agent."""

    hosts_any_domain = False  # the agents are the compose file's three hospitals'

    def __init__(self, state: Path, compose: list[str]) -> None:
        self.state = state
        self.compose = compose
        self.url = f"http://127.0.0.1:{CONTROLLER_PORT}"

    def start_agent(self, token: str, data_roots: list[Path], work_root: Path, image: str,
                    signing_key: Ed25519PrivateKey | None = None) -> None:
        code = data_roots[0].name  # the demo's hospital code names its domain directory
        agents = self.state / "agents"
        _write_secret(agents / f"{code}.env", f"SANDBOX_TOKEN={token}\n")
        assert signing_key is not None  # scenario 1's agents all sign joint submissions
        _write_secret(agents / f"{code}.key", signing_key.private_bytes_raw().hex() + "\n")
        subprocess.run([*self.compose, "up", "-d", "--no-deps", AGENT_SERVICES[code]],
                       check=True)
        # Serving once its metrics port answers: the scenario then registers a dataset,
        # whose schema check the agent must take within SANDBOX_SCHEMA_CHECK_WAIT_S.
        wait_answer(f"http://127.0.0.1:{AGENT_METRICS_PORTS[code]}/healthz", 120)


def compose_command(state: Path) -> list[str]:
    return ["docker-compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), "--env-file",
            str(state / "compose.env")]


def prepare(state: Path, images: dict[str, str], runtime: str) -> Path:
    """Secrets, directories and the compose variables; returns the env file's path."""
    for sub in ("secrets", "agents", "domains"):
        (state / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    _shared_mount(state / "jobs")
    _shared_mount(state / "stage")
    sec = state / "secrets"
    db_password = secrets.token_hex(24)
    _write_secret(sec / "postgres_password", secrets.token_hex(24) + "\n", 0)
    _write_secret(sec / "sandbox_db_password", db_password + "\n", 0)
    # The postgres image's user reads its password files: world-readable inside the
    # state directory, which only root can enter.
    for name in ("postgres_password", "sandbox_db_password"):
        (sec / name).chmod(0o644)
    (sec / "log.key").unlink(missing_ok=True)
    log_vkey = generate_key_file(sec / "log.key", LOG_ORIGIN)
    os.chown(sec / "log.key", CONTROLLER_UID, CONTROLLER_UID)
    # The keyring that seals scripts, logs and outputs at rest (compute.sealing): 0600,
    # readable by the controller's user only.
    (sec / "sealing.key").unlink(missing_ok=True)
    create_key_file(sec / "sealing.key")
    os.chown(sec / "sealing.key", CONTROLLER_UID, CONTROLLER_UID)
    (sec / "witness.key").unlink(missing_ok=True)
    witness_vkey = generate_key_file(sec / "witness.key", "witness.compose.local",
                                     ALG_COSIGNATURE_V1)
    os.chown(sec / "witness.key", CONTROLLER_UID, CONTROLLER_UID)
    for n, code in enumerate(AGENT_SERVICES, 1):
        (state / "stage" / str(n)).mkdir(exist_ok=True)
        _write_secret(state / "agents" / f"{code}.env", "")
        _write_secret(state / "agents" / f"{code}.key", "")
        (state / "domains" / code).mkdir(exist_ok=True)
        (state / "jobs" / code).mkdir(exist_ok=True)
    env = {"DEMO_DIR": str(state), "CONTROLLER_IMAGE": images["controller"],
           "AGENT_IMAGE": images["agent"], "POSTGRES_IMAGE": images["postgres"],
           "SANDBOX_DB_PASSWORD": db_password, "METRICS_TOKEN": secrets.token_urlsafe(32),
           "LOG_ORIGIN": LOG_ORIGIN, "LOG_VKEY": log_vkey, "WITNESS_VKEY": witness_vkey,
           "CONTROLLER_PORT": str(CONTROLLER_PORT), "AGENT_RUNTIME": runtime}
    env_file = state / "compose.env"
    _write_secret(env_file, "".join(f"{k}={v}\n" for k, v in env.items()))
    return env_file


def create_admin(compose: list[str]) -> str:
    """The first admin, created inside the controller's container; its token."""
    out = subprocess.run([*compose, "exec", "-T", "controller", "sandbox", "create-admin",
                          "Platform operator"], capture_output=True, text=True, check=True)
    token: str = json.loads(out.stdout)["token"]
    return token


def wait_answer(url: str, timeout_s: float) -> None:
    """Until ``url`` answers 200, or exit naming it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(url, timeout=3).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer 200 within {timeout_s:g} s")
        time.sleep(1)


def show_agent_metrics() -> None:
    for code, port in AGENT_METRICS_PORTS.items():
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        runs = [ln for ln in text.splitlines()
                if ln.startswith(("sandbox_agent_runs_total", "sandbox_agent_slots "))]
        demo.say(f"{code} agent metrics: {'; '.join(runs)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sandbox.compose_demo")
    p.add_argument("--state", type=Path, default=Path("/var/lib/data-sandbox-demo"))
    p.add_argument("--runtime", default="auto", help="agents' OCI runtime (auto, runc, runsc)")
    p.add_argument("--keep", action="store_true", help="leave the stack running")
    args = p.parse_args(argv)
    client = docker_client(timeout_s=900)
    runner = ensure_runner_image(client)
    images = {name: img.tag for name, img in ensure_service_images(client).items()}
    state = args.state.absolute()
    compose = compose_command(state)
    demo.step(1, f"Compose stack {PROJECT}: images {', '.join(images.values())}")
    if (state / "compose.env").exists():  # a previous run's stack and volumes
        subprocess.run([*compose, "down", "-v", "--remove-orphans"], check=False)
    # The regulator's saved checkpoint is of the log that went with those volumes: this
    # run's log has a new key, and an auditor rightly refuses a checkpoint it cannot verify.
    (state / "regulator-state").unlink(missing_ok=True)
    prepare(state, images, args.runtime)
    subprocess.run([*compose, "up", "-d", "postgres", "witness", "controller"], check=True)
    stack = ComposeStack(state, compose)
    try:
        wait_answer(f"{stack.url}/readyz", 180)
        admin_token = create_admin(compose)
        demo.say(f"controller ready at {stack.url} on PostgreSQL; witness quorum 1")
        code = demo.run(stack, Client(stack.url, admin_token), runner.tag, state)  # type: ignore[arg-type]
        if code == 0:
            show_agent_metrics()
        return code
    finally:
        if not args.keep:
            subprocess.run([*compose, "down", "-v", "--remove-orphans"], check=False)
            for shared in ("jobs", "stage"):  # the agents unmounted their jobs' /out
                subprocess.run(["umount", "-l", str(state / shared)], check=False)


if __name__ == "__main__":
    sys.exit(main())
