"""The requester's ``sandbox`` commands: the catalog, mock data, local dev-runs, jobs,
permits and receipts. Lists are tables (``--json`` for JSON); objects are JSON."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO, Any

import click

from authz.wire import TERMINAL, JobState, OutputDecision
from sandbox.cli_support import client, print_json, read_text, show

JSON_FLAG = click.option("--json", "as_json", is_flag=True, help="print JSON, not a table")


@click.command("datasets")
@JSON_FLAG
@click.pass_context
def datasets(ctx: click.Context, as_json: bool) -> None:
    """The catalog: datasets you can see."""
    data = client(ctx).call("catalog.list_datasets")
    show(ctx, as_json, data, data["datasets"], [
        ("ID", lambda d: d["id"]), ("CODE", lambda d: d["code"]),
        ("V", lambda d: d.get("version")), ("NAME", lambda d: d["name"]),
        ("PROVIDER", lambda d: d["provider_id"]), ("STATUS", lambda d: d["status"]),
        ("FIELDS", lambda d: [f["name"] for f in d["fields"]]),
    ], "no datasets")


@click.command("requests")
@JSON_FLAG
@click.pass_context
def requests_(ctx: click.Context, as_json: bool) -> None:
    """Access requests: yours, or (a provider) those naming your datasets."""
    data = client(ctx).call("access.list_requests")
    show(ctx, as_json, data, data["requests"], [
        ("ID", lambda r: r["id"]), ("STATUS", lambda r: r["status"]),
        ("PERMIT", lambda r: r["permit_id"]),
        ("ITEMS", lambda r: [f"{i['dataset_id']}:{i['decision']}" for i in r["items"]]),
        ("PURPOSE", lambda r: r["purpose"]),
    ], "no access requests")


@click.command("permits")
@JSON_FLAG
@click.pass_context
def permits(ctx: click.Context, as_json: bool) -> None:
    """Permits: yours, or (a provider) those on your data."""
    data = client(ctx).call("access.list_permits")
    show(ctx, as_json, data, data["permits"], [
        ("ID", lambda p: p["id"]), ("STATUS", lambda p: p["status"]),
        ("EXPIRES", lambda p: p["expires_at"][:16]),
        ("RUNS", lambda p: f"{p['runs_used']}/{p['max_runs']}"),
        ("MIN CELL", lambda p: p["min_cell_count"]),
        ("RELEASE", lambda p: p["script_release"]), ("DATASETS", lambda p: list(p["columns"])),
    ], "no permits (apply with `sandbox request-create request.json`)")


@click.command("jobs")
@click.option("--permit", help="only this permit's jobs")
@JSON_FLAG
@click.pass_context
def jobs(ctx: click.Context, permit: str | None, as_json: bool) -> None:
    """Jobs: yours, or (a provider) those on your data."""
    data = client(ctx).call("jobs.list_jobs")
    rows = [j for j in data["jobs"] if permit is None or j["permit_id"] == permit]
    show(ctx, as_json, {"jobs": rows}, rows, [
        ("ID", lambda j: j["id"]), ("STATE", lambda j: j["state"]),
        ("SUBMITTED", lambda j: j["submitted_at"][:19]), ("PERMIT", lambda j: j["permit_id"]),
        ("OUTPUTS", lambda j: [f"{o['name']}:{o['decision']}" for o in j["outputs"]]),
        ("REASON", lambda j: j["reason"]),
    ], "no jobs")


@click.command("job")
@click.argument("job_id")
@click.pass_context
def job(ctx: click.Context, job_id: str) -> None:
    """One job, as JSON."""
    print_json(client(ctx).call("jobs.get_job", job_id=job_id))


@click.command("cancel")
@click.argument("job_id")
@click.pass_context
def cancel(ctx: click.Context, job_id: str) -> None:
    """Cancel a queued job of yours (it costs no run)."""
    done = client(ctx).call("jobs.cancel", job_id=job_id)
    click.echo(f"{done['id']} {done['state']}")


@click.command("receipt")
@click.argument("job_id")
@click.option("-o", "--output", "path", type=click.Path(dir_okay=False),
              help="write it to this file (default: standard output)")
@click.pass_context
def receipt(ctx: click.Context, job_id: str, path: str | None) -> None:
    """The job's offline-verifiable receipt (verify with `ledger-verify receipt`)."""
    got = client(ctx).call("jobs.receipt", job_id=job_id)
    if path is None:
        print_json(got)
        return
    import json

    Path(path).write_text(json.dumps(got, indent=2) + "\n")
    click.echo(f"receipt written to {path}; verify it with "
               f"`ledger-verify receipt {path} --log-key <the log's public key>`", err=True)


@click.command("output")
@click.argument("job_id")
@click.argument("name")
@click.option("-o", "--output", "target", type=click.Path(),
              help="write to this file, or into this directory under the name the "
                   "controller serves it as (its checked kind's extension: `-o .` writes "
                   "output-0.csv); default: standard output")
@click.pass_context
def output(ctx: click.Context, job_id: str, name: str, target: str | None) -> None:
    """A released output's content."""
    content, served = client(ctx).output_file(job_id, name)
    if target is None:
        sys.stdout.buffer.write(content)
        return
    path = Path(target)
    if path.is_dir():
        path = path / served
    path.write_bytes(content)
    click.echo(f"{len(content)} bytes written to {path}", err=True)


@click.command("submit")
@click.option("--permit", required=True, help="the permit id (pmt_…; `sandbox permits`)")
@click.option("--dataset", "dataset_ids", multiple=True, required=True)
@click.option("--wait", is_flag=True, help="follow the job to its end, showing its progress")
@click.option("--timeout", default=900.0, show_default=True, help="seconds --wait waits")
@click.argument("script", type=click.File("rb"))
@click.pass_context
def submit(ctx: click.Context, permit: str, dataset_ids: tuple[str, ...], wait: bool,
           timeout: float, script: IO[bytes]) -> None:
    """Submit a script under a permit. It first runs on mock data (a failure there costs
    no run and shows the whole console output); then on the provider's data.

    With --wait: exit status 0 released, 2 waiting for people (script approval, output
    review), 1 otherwise."""
    api = client(ctx)
    created = api.call("jobs.submit", {"permit_id": permit, "dataset_ids": list(dataset_ids),
                                       "script": read_text(script, "script")})
    if not wait:
        print_json(created)
        return
    final = follow(api, created["id"], timeout)
    summarize(final)
    if final["state"] in FOR_PEOPLE:
        click.echo(f"it now waits for people, not for this command: follow it with "
                   f"`sandbox job {final['id']}`", err=True)
        sys.exit(2)
    sys.exit(0 if final["state"] == JobState.RELEASED else 1)


PROGRESS = {
    JobState.QUEUED: "waiting for the provider's agent",
    JobState.DISPATCHED: "taken by the provider's agent (a new script runs on mock data "
                         "first)",
    JobState.RUNNING: "running on the provider's data",
    JobState.CHECKING: "the agent checks the outputs",
    JobState.AWAITING_APPROVAL: "the permit wants each new script approved by every "
                                "provider first",
    JobState.AWAITING_REVIEW: "the outputs wait for the providers' output checkers",
}
#: States where the job waits for people, not for the machine: --wait stops following.
FOR_PEOPLE = frozenset({JobState.AWAITING_APPROVAL, JobState.AWAITING_REVIEW})


def follow(api: Any, job_id: str, timeout_s: float, poll_s: float = 0.5) -> dict[str, Any]:
    """Poll the job until it ends, printing each state it reaches (to standard error)."""
    t0 = time.monotonic()
    seen = None
    while True:
        current: dict[str, Any] = api.call("jobs.get_job", job_id=job_id)
        if current["state"] != seen:
            seen = current["state"]
            hint = PROGRESS.get(seen, "")
            click.echo(f"[{time.monotonic() - t0:6.1f} s] {job_id} {seen}"
                       + (f": {hint}" if hint else ""), err=True)
        if current["state"] in TERMINAL or current["state"] in FOR_PEOPLE:
            return current
        if time.monotonic() - t0 > timeout_s:
            raise click.ClickException(
                f"{job_id} is still {current['state']} after {timeout_s:.0f} s: follow it "
                f"with `sandbox job {job_id}` (it goes on without this command)")
        time.sleep(poll_s)


def summarize(job: dict[str, Any]) -> None:
    click.echo(f"{job['id']}: {job['state']}")
    if job.get("reason"):
        click.echo(f"reason: {job['reason']}")
    for o in job["outputs"]:
        why = f" ({'; '.join(o['reasons'])})" if o["reasons"] else ""
        click.echo(f"  {o['name']}: {o['decision']}{why}")
        if o["decision"] == OutputDecision.RELEASED:
            click.echo(f"    fetch: sandbox output {job['id']} {o['name']} -o .")
    if job.get("log"):
        click.echo("console output:")
        click.echo(job["log"])


@click.command("mock-data")
@click.argument("dataset_id")
@click.option("--rows", default=200, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1))
@click.option("-o", "--output", "path", type=click.Path(dir_okay=False),
              help="write the CSV here (default: standard output)")
@click.pass_context
def mock_data(ctx: click.Context, dataset_id: str, rows: int, seed: int,
              path: str | None) -> None:
    """Mock data of a dataset, made from its declared fields only (no real value)."""
    body = client(ctx).call("catalog.mock_data", dataset_id=dataset_id,
                            query={"rows": rows, "seed": seed})
    if path is None:
        sys.stdout.buffer.write(body)
    else:
        Path(path).write_bytes(body)
        click.echo(f"{rows} mock rows of {dataset_id} (seed {seed}) written to {path}",
                   err=True)


COMMANDS = [datasets, requests_, permits, jobs, job, cancel, receipt, output, submit,
            mock_data]
