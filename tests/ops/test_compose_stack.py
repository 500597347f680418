"""The compose stack, reduced: PostgreSQL, the witness, the controller and one agent in
their containers (built offline), ready, measured, and not ready once the database goes.

`make compose-demo` plays all of scenario 1 on the full stack (three agents); here only
what can fail on its own: images that start, the wiring of secrets and ports, readiness
through the witness, the agent's metrics, and the controller's answer to a lost database.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from containers.engine import docker_client
from containers.image import ensure_runner_image
from containers.service_images import ensure_service_images
from sandbox import compose_demo as cd
from sandbox.client import Client

pytestmark = [pytest.mark.docker, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("docker-compose") is None,
                                 reason="docker-compose not installed (make compose)")]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[cd.ComposeStack, str]]:
    client = docker_client(timeout_s=900)
    runner = ensure_runner_image(client)
    images = {name: img.tag for name, img in ensure_service_images(client).items()}
    state = tmp_path / "state"
    compose = cd.compose_command(state)
    cd.prepare(state, images, "runc")
    try:
        subprocess.run([*compose, "up", "-d", "postgres", "witness", "controller"],
                       check=True, capture_output=True)
        s = cd.ComposeStack(state, compose)
        cd.wait_answer(f"{s.url}/readyz", 180)
        yield s, runner.tag
    finally:
        subprocess.run([*compose, "down", "-v", "--remove-orphans"], capture_output=True,
                       check=False)
        for shared in ("jobs", "stage"):
            subprocess.run(["umount", "-l", str(state / shared)], check=False)


def test_the_stack_serves_is_ready_and_fails_readiness_without_its_database(
        stack: tuple[cd.ComposeStack, str]) -> None:
    s, runner = stack
    ready = requests.get(f"{s.url}/readyz", timeout=10).json()
    assert ready["checks"] == {"database": "ok", "schema": "ok", "checkpoint": "ok",
                               "witnesses": "ok"}
    admin = Client(s.url, cd.create_admin(s.compose))
    party = admin.post("/parties", {"name": "City General Hospital", "role": "provider",
                                    "code": "H-CITY"})
    key = Ed25519PrivateKey.generate()
    agent = admin.post("/agents", {"name": "H-CITY agent", "providers": [party["id"]],
                                   "public_key": key.public_key().public_bytes_raw().hex()})
    s.start_agent(agent["token"], [s.state / "domains" / "H-CITY"],
                  s.state / "jobs" / "H-CITY", runner, signing_key=key)
    port = cd.AGENT_METRICS_PORTS["H-CITY"]
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert "sandbox_agent_slots 1.0" in metrics
    # A fresh runner image: the agent is ready.
    assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
    env = dict(line.split("=", 1) for line in
               (s.state / "compose.env").read_text().splitlines())
    scrape = requests.get(f"{s.url}/metrics", timeout=10,
                          headers={"Authorization": f"Bearer {env['METRICS_TOKEN']}"})
    assert scrape.status_code == 200 and "sandbox_database_up 1.0" in scrape.text

    # The image carries the font the regulator's PDF report is drawn with.
    font = subprocess.run([*s.compose, "exec", "-T", "controller", "python3", "-c",
                           "from sandbox.web.report_pdf import FONTS; "
                           "print(any(p.is_file() for p in FONTS))"],
                          capture_output=True, text=True, check=True)
    assert font.stdout.strip() == "True"

    subprocess.run([*s.compose, "stop", "postgres"], check=True, capture_output=True)
    gone = requests.get(f"{s.url}/readyz", timeout=10)
    assert gone.status_code == 503 and gone.json()["field"] == "database"
