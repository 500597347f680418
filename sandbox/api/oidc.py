"""OIDC sign-in for people, for the CLI and SDK: a browser signs in at the identity provider
and the callback answers with a personal API token, as ``POST /sign-in`` does.

``GET /oidc/login`` redirects to the provider; the provider redirects back to
``GET /oidc/callback``. The operator configures the provider (docs/operations.md).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from authz import identities, people
from compute.errors import InvalidInput
from sandbox import auth, db, oidc

bp = Blueprint("oidc", __name__, url_prefix="/api/v1")


def _token_days() -> int | None:
    raw = request.args.get("token_days")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= people.MAX_TOKEN_DAYS:
        raise InvalidInput("token_days", f"must be a whole number of days from 1 to "
                                         f"{people.MAX_TOKEN_DAYS}")
    return int(raw)


@bp.get("/oidc/login")
def login() -> BaseResponse:
    """Redirect the browser to the identity provider, with a cookie binding it to the
    sign-in it starts."""
    cfg = oidc.required()
    started = oidc.start(db.use_writer(), _token_days())
    db.commit()
    resp = redirect(started.url, code=302)
    # Lax: the provider's redirect back is a top-level GET navigation, which carries it.
    resp.set_cookie(oidc.COOKIE, started.browser_secret,
                    max_age=int(oidc.LOGIN_TTL.total_seconds()),
                    path=urlsplit(cfg.redirect_url).path or "/", httponly=True,
                    secure=request.is_secure or cfg.redirect_url.startswith("https:"),
                    samesite="Lax")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/oidc/callback")
def callback() -> Response:
    """Finish the sign-in: a personal API token for the person, shown once."""
    cfg = oidc.required()
    ctx = db.use_writer()
    pending = oidc.take(ctx, request.args, request.cookies.get(oidc.COOKIE))
    db.commit()  # used once, whatever happens next
    claims = oidc.exchange(pending, request.args.get("code"))
    person, issued = identities.sign_in_oidc(ctx, claims, cfg.email_domains,
                                             pending.token_days)
    db.commit()
    resp = jsonify({"person": people.person_json(person), "token": issued.token,
                    "expires_at": issued.expires_at.isoformat() if issued.expires_at else None,
                    "method": identities.METHOD})
    resp.headers["Cache-Control"] = "no-store"
    resp.delete_cookie(oidc.COOKIE, path=urlsplit(cfg.redirect_url).path or "/")
    return resp


@bp.post("/people/<person_id>/oidc/unlink")
@auth.roles("admin", need=people.PersonRole.ADMIN)
def unlink(person_id: str) -> dict[str, Any]:
    """The operator removes a person's identity provider links; the next OIDC sign-in
    links again by verified email."""
    person = people.get_person(db.ctx(), auth.party(), person_id)
    removed = identities.unlink_oidc(db.ctx(), auth.party(), person)
    db.commit()
    return {"person_id": person.id, "unlinked": removed}
