"""What every ``sandbox`` subcommand shares: the client, output (tables or JSON), and
errors that say what went wrong and what to do next, never as a traceback."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn

import click
import requests

from authz.states import JointJobState
from sandbox.client import ApiError, Client, ContractError, RequestRefused

Column = tuple[str, Callable[[dict[str, Any]], Any]]


def client(ctx: click.Context) -> Client:
    obj = ctx.find_root().obj
    return Client(obj["url"], obj["token"])


def wants_json(ctx: click.Context, flag: bool = False) -> bool:
    return flag or bool(ctx.find_root().obj.get("json"))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], empty: str) -> None:
    """Rows as an aligned text table (one line each), or ``empty`` if there are none."""
    if not rows:
        click.echo(empty)
        return
    cells = [[_cell(get(r)) for _, get in columns] for r in rows]
    heads = [h for h, _ in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    for line in [heads, *cells]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    text = ", ".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def show(ctx: click.Context, as_json: bool, data: Any, rows: Sequence[dict[str, Any]],
         columns: Sequence[Column], empty: str) -> None:
    if wants_json(ctx, as_json):
        print_json(data)
    else:
        table(rows, columns, empty)


def load_json(file: IO[str]) -> Any:
    """A JSON file's content, or a one-line error naming the file, the line and the fix."""
    name = getattr(file, "name", "the file")
    try:
        return json.load(file)
    except json.JSONDecodeError as e:
        raise click.ClickException(f"{name} is not valid JSON (line {e.lineno}, column "
                                   f"{e.colno}: {e.msg}): fix it and run the command again"
                                   ) from None
    except UnicodeDecodeError:
        raise click.ClickException(f"{name} is not UTF-8 text: save it as UTF-8 JSON"
                                   ) from None


def read_text(file: IO[bytes], what: str) -> str:
    name = getattr(file, "name", what)
    try:
        return file.read().decode("utf-8")
    except UnicodeDecodeError:
        raise click.ClickException(f"{name} is not UTF-8 text: save the {what} as UTF-8"
                                   ) from None


def next_step(e: ApiError) -> str:
    """What to do about an error answer: the controller says what went wrong (and, where
    only it knows, what to do); this adds the step on the caller's side."""
    body = e.body if isinstance(e.body, dict) else {}
    if e.status == 401:
        return ("the token was refused: check --token or SANDBOX_TOKEN (a rotated token, or "
                "one of a deactivated party or agent, stops working at once)")
    if e.status == 403:
        return "your role may not do this: `sandbox me` shows who the token belongs to"
    if e.status == 404 and "checkpoint" in str(body.get("message", "")):
        return "the log signs a checkpoint every few seconds: try again shortly"
    if e.status == 404:
        return ("check the id: `sandbox jobs`, `sandbox permits`, `sandbox requests` and "
                "`sandbox datasets` list what you can see")
    if e.status == 422:
        return ("fix the file or its declared fields, then register it again under the same "
                "code (it becomes the code's next version)")
    if e.status == 400 and body.get("field"):
        return f"fix {body['field']} and run the command again"
    if e.status == 409:
        return ("`sandbox permits` shows your permits' state and runs left; `sandbox job "
                "JOB_ID` a job's")
    if e.status == 413:
        return "the request is too large: send a smaller file"
    if e.status == 429:
        return "too many requests: wait a few seconds and try again"
    if e.status == 503 and body.get("error") == JointJobState.AWAITING_WITNESSES:
        return "the result waits for the witnesses' cosignatures: try again in a minute"
    if e.status >= 500:
        return "the controller failed or is not ready: try again; if it persists, tell the operator"
    return "check the command's arguments (`sandbox COMMAND --help`)"


def fail_api(e: ApiError, as_json: bool) -> NoReturn:
    if as_json:
        print_json(e.body)
    body = e.body if isinstance(e.body, dict) else {"message": str(e.body)[:500]}
    message = body.get("message") or body.get("error") or f"HTTP {e.status}"
    # Refused here by the API's own spec: the controller was not asked (no run was spent).
    where = "refused before sending" if isinstance(e, RequestRefused) else f"HTTP {e.status}"
    click.echo(f"Error: {message} ({where})", err=True)
    click.echo(f"What to do: {next_step(e)}", err=True)
    sys.exit(1)


class SandboxGroup(click.Group):
    """Turns the errors a command can meet into a message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as e:
            fail_api(e, bool((ctx.obj or {}).get("json")))
        except ContractError as e:
            click.echo(f"Error: {e}", err=True)
            click.echo("What to do: this client and the controller speak different versions "
                       "of the API: use the client of the controller's release", err=True)
            sys.exit(1)
        except (requests.ConnectionError, requests.Timeout) as e:
            url = (ctx.obj or {}).get("url", "?")
            click.echo(f"Error: cannot reach the controller at {url} ({type(e).__name__})",
                       err=True)
            click.echo("What to do: check --url or SANDBOX_URL, and that the controller is "
                       "running (`sandbox serve`; GET /readyz answers when it is ready)",
                       err=True)
            sys.exit(1)
