"""The ``sandbox`` command: server administration, and every party's API calls over HTTP."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sandbox import agent_admin_cli, cli_devrun, cli_people, cli_requester, keys_cli
from sandbox.cli_common import api_client as _client
from sandbox.cli_common import call as _call
from sandbox.cli_support import SandboxGroup, load_json, print_json, show

if TYPE_CHECKING:
    from sandbox.settings import Settings

_print = print_json


@click.group(cls=SandboxGroup)
@click.option("--url", envvar="SANDBOX_URL", default="http://127.0.0.1:8080", show_default=True)
@click.option("--token", envvar="SANDBOX_TOKEN", default=None, help="API token (or SANDBOX_TOKEN)")
@click.option("--json", "as_json", is_flag=True,
              help="JSON everywhere: lists, and error answers (on standard output)")
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None, as_json: bool) -> None:
    ctx.obj = {"url": url, "token": token, "json": as_json}
    # The HTTP library's own retry warnings: a failure is reported once, with what to do.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


# people and release review; the requester's development loop
for _command in [*cli_people.COMMANDS, *cli_requester.COMMANDS, cli_devrun.dev_run,
                 *agent_admin_cli.COMMANDS, keys_cli.keys]:
    main.add_command(_command)


# --- server administration (local, on the controller host) ---------------------------

@main.command("init-db")
def init_db() -> None:
    """Create or upgrade the database schema (Alembic)."""
    # Each command imports what it needs: the CLI starts fast, and the requester's
    # commands never load the server, the engine client or TenSEAL.
    from sqlalchemy import make_url

    # imported here: CLI start-up time (above)
    from sandbox import create_app
    from sandbox.migrate import upgrade

    app = create_app({"START_CHECKPOINTER": False})
    upgrade(app.config["DATABASE_URL"])
    # Without the password: this line lands in container and service logs.
    shown = make_url(app.config["DATABASE_URL"]).render_as_string(hide_password=True)
    click.echo(f"database at {shown} is at the latest schema")


@main.command("create-admin")
@click.argument("name")
def create_admin(name: str) -> None:
    """Create an operator (admin) party; its token is printed once and never stored."""
    # imported here: CLI start-up time (see init-db)
    from sandbox import create_app
    from sandbox.bootstrap import create_first_admin

    app = create_app({"START_CHECKPOINTER": False})
    issued = create_first_admin(app, name)
    _print({"id": issued.id, "token": issued.token})


@main.command("serve")
@click.option("--host", default=None, help="address to listen on  [SANDBOX_HOST: 127.0.0.1]")
@click.option("--port", default=None, type=click.IntRange(1, 65535),
              help="port  [SANDBOX_PORT: 8080]")
@click.option("--workers", default=None, type=click.IntRange(1, 64),
              help="worker processes  [SANDBOX_WORKERS: 1 per CPU, 2-8]")
@click.option("--threads", default=None, type=click.IntRange(1, 256),
              help="threads per worker  [SANDBOX_THREADS: 8]")
def serve(host: str | None, port: int | None, workers: int | None,
          threads: int | None) -> None:
    """Run the controller under gunicorn; settings from SANDBOX_* (`sandbox config`)."""
    # imported here: CLI start-up time (see init-db)
    from sandbox import server

    s = _settings()
    workers, threads = s.serving_shape(workers, threads)
    server.serve(s, host=host or s.host, port=port or s.port, workers=workers,
                 threads=threads)


@main.command("config")
def config() -> None:
    """Print the controller's effective settings as JSON (secrets masked) and exit."""
    # imported here: CLI start-up time (see init-db)
    from sandbox.settings import masked, unknown_variables

    _print({**masked(_settings()), "ignored_variables": unknown_variables()})


def _settings() -> Settings:
    """The settings, or exit 2 naming the variable and the rule it broke."""
    # imported here: CLI start-up time (see init-db)
    from sandbox.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)


@main.command("agent-key")
@click.argument("path", type=click.Path(dir_okay=False))
def agent_key(path: str) -> None:
    """Create an agent's Ed25519 signing key (mode 0600); print its public key (hex)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.private_bytes_raw().hex() + "\n")
    click.echo(key.public_key().public_bytes_raw().hex())


@main.command("agent")
@click.option("--data-root", "data_roots", multiple=True, required=True,
              help="PATH, or PROVIDER_ID=PATH (required when serving several providers)")
@click.option("--work-root", required=True, type=click.Path())
@click.option("--signing-key-file", type=click.Path(exists=True, dir_okay=False),
              help="Ed25519 key from `sandbox agent-key` (needed for joint statistics)")
@click.option("--slots", default=1, show_default=True, help="jobs run side by side")
@click.option("--runtime", default="auto", show_default=True,
              help="OCI runtime for jobs: auto (gVisor's runsc whenever the engine has it, "
                   "else runc), or one registered with the engine, e.g. runc to opt out")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="what the agent logs to stderr (info: its start and its jobs' troubles)")
@click.option("--warm-start/--no-warm-start", default=True, show_default=True,
              help="keep each slot's next container started ahead of its job")
@click.option("--mock-first/--no-mock-first", default=True, show_default=True,
              help="run each new script on mock data before the provider's data (a script "
                   "error then costs no run)")
@click.option("--timing-grain", default=5.0, show_default=True, type=click.FloatRange(0),
              help="seconds: a run's end is reported only at a multiple of this after its "
                   "start (0: at once; run time is a channel the script controls)")
@click.option("--metrics-port", envvar="SANDBOX_AGENT_METRICS_PORT", default=None,
              type=click.IntRange(1, 65535),
              help="serve /metrics, /readyz, /healthz on this port  [default: off]")
@click.option("--metrics-host", envvar="SANDBOX_AGENT_METRICS_HOST", default="127.0.0.1",
              show_default=True, help="address of the metrics port")
@click.option("--stage-root", envvar="SANDBOX_AGENT_STAGE_ROOT", default=None,
              type=click.Path(file_okay=False),
              help="where jobs' stages go  [default: /var/lib/data-sandbox/stage]; in a "
                   "container, the same path as on the engine's host")
@click.option("--max-image-age-days", envvar="SANDBOX_AGENT_MAX_IMAGE_AGE_DAYS", default=30.0,
              show_default=True, type=click.FloatRange(0.01, 3650),
              help="a runner image older than this is reported (start-up warning, /readyz)")
def agent(data_roots: tuple[str, ...], work_root: str, signing_key_file: str | None,
          slots: int, runtime: str, log_level: str, warm_start: bool, mock_first: bool,
          timing_grain: float, metrics_port: int | None, metrics_host: str,
          stage_root: str | None, max_image_age_days: float) -> None:
    """Run a provider-side agent against the controller at --url with the agent's --token."""
    import logging

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    # imported here: CLI start-up time (see init-db)
    from compute.errors import SandboxError
    from containers.agent import Agent
    from containers.agent_config import AgentConfig
    from containers.agent_metrics import AgentMetrics, serve_metrics
    from containers.engine import choose_runtime, docker_client, engine_facts
    from containers.executor import DockerExecutor
    from containers.image import ensure_runner_image, image_age_s

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ctx = click.get_current_context().find_root()
    client = docker_client()
    try:  # an explicit runtime the engine lacks: refuse to start, say why
        chosen = choose_runtime(engine_facts(client), runtime)
    except SandboxError as e:
        raise click.ClickException(str(e)) from e
    image = ensure_runner_image(client)
    cfg = AgentConfig(controller_url=ctx.obj["url"], token=ctx.obj["token"] or "",
                      data_roots=[Path(p) for p in data_roots if "=" not in p],
                      # Mixing both forms is refused by Agent.check_config at start.
                      provider_roots=_provider_roots(data_roots), work_root=Path(work_root),
                      image=image.tag, slots=slots, warm_start=warm_start,
                      timing_grain_s=timing_grain, mock_first=mock_first,
                      signing_key=None if signing_key_file is None else
                      Ed25519PrivateKey.from_private_bytes(
                          bytes.fromhex(Path(signing_key_file).read_text().strip())))
    stop = threading.Event()
    # SIGTERM/SIGINT end the slots after their current job, and each slot removes its warm
    # container on the way out (a SIGKILLed agent leaves it to its next start's reset).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    metrics = AgentMetrics(slots, max_image_age_days, lambda: image_age_s(client, image.tag))
    metrics.banner()
    if metrics_port is not None:
        serve_metrics(metrics, metrics_host, metrics_port)
    executor = (DockerExecutor(client, runtime=chosen) if stage_root is None
                else DockerExecutor(client, runtime=chosen, stage_root=Path(stage_root)))
    if not Agent(cfg, executor, metrics).serve(stop):
        # The reason is logged above (a refused token or configuration): no retry helps.
        raise click.ClickException("the agent did not start; see the error above")


def _provider_roots(specs: tuple[str, ...]) -> dict[str, list[Path]]:
    roots: dict[str, list[Path]] = {}
    for spec in specs:
        if "=" in spec:
            provider, _, path = spec.partition("=")
            roots.setdefault(provider, []).append(Path(path))
    return roots


# --- API calls -----------------------------------------------------------------------

@main.command("me")
@click.pass_context
def me(ctx: click.Context) -> None:
    _call(_client(ctx).call, "parties.me")


@main.command("party-create")
@click.option("--name", required=True)
@click.option("--role", required=True)
@click.option("--code")
@click.pass_context
def party_create(ctx: click.Context, name: str, role: str, code: str | None) -> None:
    body = {"name": name, "role": role, **({"code": code} if code else {})}
    _call(_client(ctx).call, "parties.create_party", body)


@main.command("agent-create")
@click.option("--name", required=True)
@click.option("--provider", "providers", multiple=True, required=True)
@click.option("--public-key", help="hex public key printed by `sandbox agent-key`")
@click.pass_context
def agent_create(ctx: click.Context, name: str, providers: tuple[str, ...],
                 public_key: str | None) -> None:
    body: dict[str, Any] = {"name": name, "providers": list(providers)}
    if public_key:
        body["public_key"] = public_key
    _call(_client(ctx).call, "parties.create_agent", body)


@main.command("deactivate")
@click.argument("party_or_agent_id")
@click.pass_context
def deactivate(ctx: click.Context, party_or_agent_id: str) -> None:
    """Operator: lock a party or an agent out (its token stops working)."""
    kind = "agents" if party_or_agent_id.startswith("agt_") else "parties"
    _call(_client(ctx).call, "parties.deactivate",
          route=f"POST /api/v1/{kind}/<party_id>/deactivate", party_id=party_or_agent_id)


@main.command("rotate-token")
@click.pass_context
def rotate_token(ctx: click.Context) -> None:
    """Replace the caller's token; the new one is printed once."""
    _call(_client(ctx).call, "parties.rotate_token")


@main.command("dataset-register")
@click.argument("metadata", type=click.File())
@click.pass_context
def dataset_register(ctx: click.Context, metadata: Any) -> None:
    """Register a dataset from a JSON file of catalog metadata."""
    _call(_client(ctx).call, "catalog.register", load_json(metadata))


@main.command("request-create")
@click.argument("request", type=click.File())
@click.pass_context
def request_create(ctx: click.Context, request: Any) -> None:
    _call(_client(ctx).call, "access.create_request", load_json(request))


@main.command("approve")
@click.argument("request_id")
@click.argument("dataset_id")
@click.option("--days", default=30, show_default=True)
@click.option("--max-runs", default=10, show_default=True)
@click.option("--min-cell-count", default=10, show_default=True)
@click.option("--column", "columns", multiple=True, help="narrow to these columns")
@click.option("--risk-assessment", required=True)
@click.option("--script-release", type=click.Choice(["review", "automatic"]),
              default="review", show_default=True,
              help="automatic: checked script outputs are released without a human decision")
@click.pass_context
def approve(ctx: click.Context, request_id: str, dataset_id: str, days: int, max_runs: int,
            min_cell_count: int, columns: tuple[str, ...], risk_assessment: str,
            script_release: str) -> None:
    body: dict[str, Any] = {
        "expires_at": (datetime.now(UTC) + timedelta(days=days)).isoformat(),
        "max_runs": max_runs, "min_cell_count": min_cell_count,
        "risk_assessment": risk_assessment, "script_release": script_release,
    }
    if columns:
        body["columns"] = list(columns)
    _call(_client(ctx).call, "access.approve", body, request_id=request_id,
          dataset_id=dataset_id)


@main.command("deny")
@click.argument("request_id")
@click.argument("dataset_id")
@click.option("--reason", required=True)
@click.pass_context
def deny(ctx: click.Context, request_id: str, dataset_id: str, reason: str) -> None:
    _call(_client(ctx).call, "access.deny", {"reason": reason}, request_id=request_id,
          dataset_id=dataset_id)


@main.command("revoke")
@click.argument("permit_id")
@click.option("--reason", required=True)
@click.pass_context
def revoke(ctx: click.Context, permit_id: str, reason: str) -> None:
    _call(_client(ctx).call, "access.revoke", {"reason": reason}, permit_id=permit_id)


@main.command("joint")
@click.option("--permit", required=True)
@click.option("--dataset", "dataset_ids", multiple=True, required=True,
              help="one dataset per provider (at least three providers)")
@click.option("--json", "as_json", is_flag=True, help="print the statistics as JSON")
@click.argument("spec", type=click.File())
@click.pass_context
def joint(ctx: click.Context, permit: str, dataset_ids: tuple[str, ...], as_json: bool,
          spec: Any) -> None:
    """Requester: joint statistics under homomorphic encryption.

    A fresh CKKS key pair is made in this process; only its public part is uploaded, and
    the secret key never leaves memory. The aggregate is decrypted and rounded here.
    """
    # imported here: CLI start-up time (TenSEAL loads only for joint statistics)
    from compute.derive import format_result
    from sandbox.sdk import JointStatistics

    sdk = JointStatistics(_client(ctx))
    try:
        run = sdk.submit(permit, dataset_ids, load_json(spec))
        result = sdk.result(run, sdk.wait(run))
    except RuntimeError as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else format_result(result))


@main.command("usage")
@click.option("--json", "as_json", is_flag=True, help="print JSON, not a table")
@click.pass_context
def usage(ctx: click.Context, as_json: bool) -> None:
    """Provider: who used my data, when, for what, how much."""
    data = _client(ctx).call("access.usage")
    show(ctx, as_json, data, data["usage"], [
        ("JOB", lambda u: u["job_id"]), ("REQUESTER", lambda u: u["requester_name"]),
        ("STATE", lambda u: u["state"]), ("STARTED", lambda u: (u["started_at"] or "")[:19]),
        ("ROWS", lambda u: u["rows_read"]), ("PURPOSE", lambda u: u["purpose"]),
    ], "no use of your data yet")


@main.command("checkpoint")
@click.pass_context
def checkpoint(ctx: click.Context) -> None:
    """Regulator: the log's latest signed checkpoint."""
    click.echo(_client(ctx).call("ledger.checkpoint"), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
