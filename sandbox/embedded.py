"""The embedded default: controller and local agents in one process, talking over HTTP.

The agent is given only the controller's URL and its own token, exactly as a separate
process on a provider's host would be, so nothing here bypasses the API.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from containers.agent import Agent
from containers.agent_config import AgentConfig
from containers.engine import AUTO_RUNTIME, choose_runtime, docker_client, engine_facts
from containers.executor import DockerExecutor, Limits
from sandbox import db


class EmbeddedStack:
    #: Whether an agent can be started for any new provider's domain (the demo's
    #: scenario 3 adds two); a compose stack runs only the agents of its compose file.
    hosts_any_domain = True

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0) -> None:
        # Per-request access lines would drown what the demo and tests print.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.app = app
        self.server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self.url = f"http://{host}:{self.server.server_port}"
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> EmbeddedStack:
        t = threading.Thread(target=self.server.serve_forever, name="controller", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def start_agent(self, token: str, data_roots: list[Path], work_root: Path, image: str,
                    limits: Limits | None = None, poll_wait_s: float = 1.0,
                    signing_key: Ed25519PrivateKey | None = None,
                    labels: dict[str, str] | None = None, slots: int = 1,
                    timing_grain_s: float = 5.0, runtime: str = AUTO_RUNTIME,
                    mock_first: bool = True) -> Agent:
        """``runtime``: ``auto`` (gVisor when the engine has it, else runc), or a runtime
        registered with the engine (an unknown one raises here, before the agent starts)."""
        client = docker_client()
        executor = DockerExecutor(client, extra_labels=labels,
                                  runtime=choose_runtime(engine_facts(client), runtime))
        agent = Agent(AgentConfig(controller_url=self.url, token=token, data_roots=data_roots,
                                  work_root=work_root, image=image,
                                  limits=limits or Limits(), poll_wait_s=poll_wait_s,
                                  signing_key=signing_key, slots=slots,
                                  timing_grain_s=timing_grain_s, mock_first=mock_first),
                      executor)
        t = threading.Thread(target=agent.serve, args=(self._stop,), name="agent", daemon=True)
        t.start()
        self._threads.append(t)
        return agent

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        for t in self._threads:
            t.join(timeout=30)
        db.dispose(self.app)
