"""API tokens: ``<object id>.<secret>``, of which only SHA-256(secret) is stored.

The id part finds the row without scanning; the digest comparison is constant-time, so
neither a database reader nor a timing observer learns a usable token. The secret has
256 bits of entropy, so an unsalted fast hash is enough (it is not a password).
"""

from __future__ import annotations

import hashlib
import secrets


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(object_id: str) -> tuple[str, str]:
    """A new token for ``object_id`` and the digest to store."""
    secret = secrets.token_urlsafe(32)
    return f"{object_id}.{secret}", digest(secret)
