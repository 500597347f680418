"""``sandbox`` commands for people and release review: sign-in, accounts, accreditation,
the output checkers' queue and decisions, justifications, and script approval.

:mod:`sandbox.cli` adds :data:`COMMANDS` to its group; every command is one API call.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click

from sandbox.cli_common import api_client, call
from sandbox.client import Client


@click.command("login")
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, envvar="SANDBOX_PASSWORD")
@click.option("--totp", help="the 6-digit code, once TOTP is enrolled")
@click.option("--days", type=int, help="token lifetime in days (default: no expiry)")
@click.pass_context
def login(ctx: click.Context, email: str, password: str, totp: str | None,
          days: int | None) -> None:
    """Sign in as a person; prints a personal token (use it as SANDBOX_TOKEN)."""
    body: dict[str, Any] = {"email": email, "password": password}
    if totp:
        body["totp"] = totp
    if days:
        body["token_days"] = days
    call(Client(ctx.obj["url"]).call, "people.sign_in", body)


@click.command("people")
@click.argument("party_id")
@click.pass_context
def people(ctx: click.Context, party_id: str) -> None:
    """The people of a party (the operator, or the party itself)."""
    call(api_client(ctx).call, "people.list_people", party_id=party_id)


@click.command("person-create")
@click.argument("party_id")
@click.option("--name", required=True)
@click.option("--email", required=True)
@click.option("--role", "roles", multiple=True, required=True,
              help="approver, output_checker, dataset_steward, analyst, auditor or admin")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              envvar="SANDBOX_NEW_PASSWORD")
@click.pass_context
def person_create(ctx: click.Context, party_id: str, name: str, email: str,
                  roles: tuple[str, ...], password: str) -> None:
    """Add a person to a party (the operator, or the party's service account)."""
    call(api_client(ctx).call, "people.create",
         {"name": name, "email": email, "roles": list(roles), "password": password},
         party_id=party_id)


@click.command("person-verify")
@click.argument("person_id")
@click.option("--method", required=True, help="how the identity was verified")
@click.pass_context
def person_verify(ctx: click.Context, person_id: str, method: str) -> None:
    """Operator: record that a person's identity was verified, and how."""
    call(api_client(ctx).call, "people.verify_identity", {"method": method},
         person_id=person_id)


@click.command("person-accredit")
@click.argument("person_id")
@click.option("--kind", required=True, help="e.g. safe researcher training")
@click.option("--days", type=int, default=365, show_default=True,
              help="valid for this many days from today")
@click.pass_context
def person_accredit(ctx: click.Context, person_id: str, kind: str, days: int) -> None:
    """Operator: record training a person completed, valid from today."""
    now = datetime.now(UTC)
    call(api_client(ctx).call, "people.accredit", {
        "kind": kind, "awarded_at": now.isoformat(),
        "expires_at": (now + timedelta(days=days)).isoformat()}, person_id=person_id)


@click.command("reviews")
@click.pass_context
def reviews(ctx: click.Context) -> None:
    """Output checker: jobs awaiting review on my organisation's data."""
    call(api_client(ctx).call, "reviews.queue")


@click.command("review")
@click.argument("job_id")
@click.pass_context
def review(ctx: click.Context, job_id: str) -> None:
    """Output checker: a job's code, held outputs, findings and justifications."""
    call(api_client(ctx).call, "reviews.material", job_id=job_id)


@click.command("review-decide")
@click.argument("job_id")
@click.argument("name")
@click.option("--decision", type=click.Choice(["approve", "reject", "return"]), required=True)
@click.option("--comment", required=True, help="why; never quote values from the output")
@click.pass_context
def review_decide(ctx: click.Context, job_id: str, name: str, decision: str,
                  comment: str) -> None:
    """Output checker: approve, reject or return one held output."""
    call(api_client(ctx).call, "reviews.decide", {"decision": decision, "comment": comment},
         job_id=job_id, name=name)


@click.command("justify")
@click.argument("job_id")
@click.argument("name")
@click.argument("justification")
@click.pass_context
def justify(ctx: click.Context, job_id: str, name: str, justification: str) -> None:
    """Requester: say why a held output is safe to release (before the first decision)."""
    call(api_client(ctx).call, "reviews.justify", {"justification": justification},
         job_id=job_id, name=name)


@click.command("script")
@click.argument("job_id")
@click.pass_context
def script(ctx: click.Context, job_id: str) -> None:
    """A job's full code (its requester, and the provider whose data it reads)."""
    call(api_client(ctx).call, "reviews.script", job_id=job_id)


@click.command("approve-script")
@click.argument("job_id")
@click.pass_context
def approve_script(ctx: click.Context, job_id: str) -> None:
    """Provider's approver: let this exact script run under its permit."""
    call(api_client(ctx).call, "reviews.approve_script", job_id=job_id)


@click.command("refuse-script")
@click.argument("job_id")
@click.option("--reason", required=True)
@click.pass_context
def refuse_script(ctx: click.Context, job_id: str, reason: str) -> None:
    """Provider's approver: refuse the script; the job is blocked with the reason."""
    call(api_client(ctx).call, "reviews.refuse_script", {"reason": reason}, job_id=job_id)


COMMANDS = [login, people, person_create, person_verify, person_accredit, reviews, review,
            review_decide, justify, script, approve_script, refuse_script]
