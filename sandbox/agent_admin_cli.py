"""Operator commands for a suspected agent: rotate its token, replace its signing key."""

from __future__ import annotations

import click

from sandbox.cli_common import api_client, call


def _ctx_call(operation: str, body: dict[str, object] | None = None, **params: str) -> None:
    client = api_client(click.get_current_context().find_root())
    call(client.call, operation, body, **params)


@click.command("agent-rotate-token")
@click.argument("agent_id")
def agent_rotate_token(agent_id: str) -> None:
    """Operator: a new token for an agent (printed once); the old one stops working."""
    _ctx_call("agent_admin.rotate_token", agent_id=agent_id)


@click.command("agent-replace-key")
@click.argument("agent_id")
@click.option("--public-key", required=True, help="hex public key from `sandbox agent-key`")
@click.option("--reason", required=True)
def agent_replace_key(agent_id: str, public_key: str, reason: str) -> None:
    """Operator: the agent signs with a new key from now; its old parts still verify."""
    _ctx_call("agent_admin.replace_signing_key", {"public_key": public_key, "reason": reason},
              agent_id=agent_id)


@click.command("agent-keys")
@click.argument("agent_id")
def agent_keys(agent_id: str) -> None:
    """Operator or regulator: every signing key the agent has used, and when."""
    _ctx_call("agent_admin.signing_keys", agent_id=agent_id)


COMMANDS = (agent_rotate_token, agent_replace_key, agent_keys)
