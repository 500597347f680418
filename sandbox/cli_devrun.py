"""``sandbox dev-run``: run a script locally on mock data, as the agent would run it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

import click

from authz.wire import JobState
from sandbox.cli_support import client, read_text

DEFAULT_MIN_CELL = 10


@click.command("dev-run")
@click.argument("script", type=click.File("rb"))
@click.option("--dataset", "dataset_ids", multiple=True, required=True,
              help="a dataset in the catalog (repeatable: several of one provider)")
@click.option("--permit", help="use this permit's columns and minimum cell count")
@click.option("--rows", default=200, show_default=True, type=click.IntRange(1, 10_000),
              help="mock rows per dataset")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="mock data seed (0 is what the agent's mock run uses)")
@click.option("--min-cell-count", type=click.IntRange(1), default=None,
              help=f"without --permit: the checks' minimum cell count [{DEFAULT_MIN_CELL}]")
@click.option("--out", "out_dir", default="dev-run-out", show_default=True,
              type=click.Path(file_okay=False), help="where the script's /out files go")
@click.option("--runtime", default="auto", show_default=True,
              help="OCI runtime, as for `sandbox agent`")
@click.pass_context
def dev_run(ctx: click.Context, script: IO[bytes], dataset_ids: tuple[str, ...],
            permit: str | None, rows: int, seed: int, min_cell_count: int | None,
            out_dir: str, runtime: str) -> None:
    """Run SCRIPT on the datasets' mock data in the runner image, with the agent's limits
    and output checks; show the whole console output and what the checks found.

    Outputs are named as the requester sees them after a real run: by position
    (``output-<i>``) unless released. The checks apply the permit's release (automatic
    without --permit). Exit status 0 released, 2 held for the output checkers, 1 otherwise.

    Needs a local Docker engine (and root, for the /out tmpfs) like an agent. Nothing here
    touches a provider's data: the mock data is made from the declared fields only.
    """
    from docker.errors import DockerException

    # imported here: CLI start-up time (the engine client only for a dev-run)
    from authz.catalog import HIGH_SENSITIVITY
    from authz.states import ScriptRelease
    from compute.errors import SandboxError
    from containers import devrun
    from containers.engine import choose_runtime, docker_client, engine_facts
    from containers.executor import DockerExecutor
    from containers.image import ensure_runner_image

    source = read_text(script, "script").encode()
    api = client(ctx)
    k = min_cell_count or DEFAULT_MIN_CELL
    columns: dict[str, Any] = {}
    release = ScriptRelease.AUTOMATIC
    if permit is not None:
        got = api.call("access.get_permit", permit_id=permit)
        columns, k = got["columns"], got["min_cell_count"]
        release = ScriptRelease(got["script_release"])
        if min_cell_count is not None:
            raise click.UsageError("--min-cell-count comes from the permit: drop it")
    tasks, blocked = [], []
    for ds_id in dataset_ids:
        ds = api.call("catalog.get_dataset", dataset_id=ds_id)
        if permit is not None and ds_id not in columns:
            raise click.UsageError(f"permit {permit} does not cover {ds_id}: it covers "
                                   f"{', '.join(columns)}")
        task = devrun.dataset_task(ds, columns.get(ds_id))
        tasks.append(task)
        blocked += [f.name for f in task.fields if f.sensitivity in HIGH_SENSITIVITY]
    try:
        engine = docker_client()
        chosen = choose_runtime(engine_facts(engine), runtime)
        image = ensure_runner_image(engine).tag
        _versions(engine, image, chosen)
        click.echo(f"dev-run: {getattr(script, 'name', 'script')} on mock data of "
                   f"{', '.join(dataset_ids)} ({rows} rows each, seed {seed}), image {image},"
                   f" runtime {chosen}, minimum cell count {k}, {release} release", err=True)
        run = devrun.run(DockerExecutor(engine, label_prefix="data-sandbox-dev",
                                        runtime=chosen),
                         source, tasks, image, min_cell_count=k, blocked_columns=blocked,
                         rows=rows, seed=seed, script_release=release)
    except (SandboxError, DockerException) as e:
        raise click.ClickException(f"{e}: the dev-run needs the local Docker engine and the "
                                   "runner image, as an agent does (see README, "
                                   "Requirements)") from e
    _report(run, Path(out_dir))
    sys.exit(exit_status(run))


def exit_status(run: Any) -> int:
    """As ``sandbox submit --wait``'s: 0 released, 2 waiting for people, 1 otherwise."""
    if not run.ok:
        return 1
    return {JobState.RELEASED: 0, JobState.AWAITING_REVIEW: 2}.get(run.report.state, 1)


def _versions(engine: Any, image: str, runtime: str | None) -> None:
    from containers import devrun  # imported here: CLI start-up time (see dev_run)

    there, here = devrun.image_versions(engine, image, runtime), devrun.local_versions()
    differ = there.differences(here)
    click.echo(f"runner image: python {there.python}, numpy {there.numpy}, pandas "
               f"{there.pandas}", err=True)
    if differ:
        click.echo("note: scripts run with the runner image's versions, which differ from "
                   "this Python's (" + "; ".join(differ) + "): test here, not in your "
                   "virtualenv", err=True)


def _report(run: Any, out_dir: Path) -> None:
    click.echo("--- console output (mock data: shown whole) ---")
    click.echo(run.console.rstrip() or "(none)")
    click.echo("--- outcome ---")
    if not run.ok:
        from containers.runjob import failure  # imported here: CLI start-up time

        click.echo(f"the script failed on mock data: {failure(run.result)}")
        click.echo("On the agent this fails on its mock run: no run of the permit is used.")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in run.outputs.items():
        (out_dir / name).write_bytes(content)
    if run.outputs:
        click.echo(f"files the script wrote to /out: {', '.join(run.outputs)} (copied to "
                   f"{out_dir}/)")
    click.echo("--- output checks (the agent's, on these outputs) ---")
    from authz.output_names import shown_name  # imported here: CLI start-up time

    report = run.report
    # Named as the controller names them for the requester and the ledger: an output not
    # released by its position (a held one too: its name is text the script chose), so
    # the dry run shows no name the real one hides. The files are checked in name order:
    # here, on mock data, the file each position stands for can be said.
    files = sorted(run.outputs) if len(run.outputs) == len(report.outputs) else []
    for i, o in enumerate(report.outputs, 1):
        name = shown_name(i, o.name, o.decision)
        why = f": {'; '.join(o.reasons)}" if o.reasons else ""
        known = f"  [{files[i - 1]}]" if files and files[i - 1] != name else ""
        click.echo(f"  {name}: {o.decision}{why}{known}")
        # What re-deriving the table from the (mock) input found: what the output checkers
        # would read beside a held table, here on mock data so shown whole.
        for finding in o.findings:
            click.echo(f"    finding: {finding}")
    click.echo(f"run: {report.state}" + (f" ({report.reason})" if report.reason else ""))
    click.echo("--- console output the requester would get from a run on real data ---")
    click.echo(report.log or "(none)")
