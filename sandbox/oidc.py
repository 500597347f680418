"""OpenID Connect sign-in: the Authorization Code flow with PKCE, through Authlib.

:func:`start` creates the provider's authorization URL with a fresh ``state``, ``nonce``
and PKCE ``code_verifier`` (S256), and keeps them in ``oidc_logins`` (any worker can
finish the sign-in; each is used once and expires in :data:`LOGIN_TTL`). The browser
that started it gets a secret cookie; :func:`take` refuses a callback without it, so a
callback URL carried to another browser signs nobody in there (login CSRF).

:func:`exchange` trades the code (and the verifier) for tokens at the provider's token
endpoint, and Authlib verifies the ID token: its signature against the provider's JWKS
(fetched again once when a key id is unknown, as after a key rotation), ``iss``, ``aud``,
``azp``, ``exp``, ``iat`` and the ``nonce``. Only asymmetric signatures count: a token
signed with the client secret (HS256) or not at all is refused.

The provider's discovery document and keys are fetched when first needed, not at start,
so a controller starts while the provider is down; its ``issuer`` must be the configured
one exactly (OpenID Connect Discovery §4.3).
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import FrameworkIntegration
from authlib.integrations.flask_client import FlaskOAuth2App
from flask import Flask, current_app, g
from joserfc.errors import JoseError
from sqlalchemy import delete, func, select

from authz.context import Ctx
from authz.identities import Claims
from authz.models import OidcLogin
from authz.tokens import digest
from compute.errors import InvalidInput, NotFound, SandboxError, Unauthenticated
from sandbox.edge import RateLimited

LOGIN_TTL = timedelta(minutes=10)
#: Sign-ins under way at once. Starting one needs no token, so this bounds what
#: anonymous callers can make the controller store (at most this many rows for LOGIN_TTL).
MAX_PENDING = 10_000
HTTP_TIMEOUT_S = 10
SCOPE = "openid email"
#: Signature algorithms an ID token may use: the provider's public keys only.
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
              "ES256", "ES384", "ES512", "EdDSA")
COOKIE = "sandbox_oidc"
# What a provider may send back as an error code (RFC 6749 §4.1.2.1: printable ASCII).
_ERROR_CODE = frozenset("abcdefghijklmnopqrstuvwxyz_")


class IdentityProviderError(SandboxError):
    """The identity provider could not be reached, or answered what the protocol forbids."""

    http_status = 502
    code = "identity_provider_error"


@dataclass(frozen=True)
class Config:
    issuer: str
    client_id: str
    client_secret: str
    redirect_url: str
    email_domains: frozenset[str]


@dataclass(frozen=True)
class Started:
    url: str  # the provider's authorization URL to send the browser to
    browser_secret: str  # to set as the COOKIE cookie on that redirect


@dataclass(frozen=True)
class Pending:
    """A started sign-in, taken out of the database: what finishing it needs."""

    nonce: str
    code_verifier: str
    token_days: int | None


def config(app: Flask | None = None) -> Config | None:
    """The app's OIDC settings, or None when OIDC sign-in is off."""
    cfg = (app or current_app).config
    if not cfg.get("OIDC_ISSUER"):
        return None
    return Config(cfg["OIDC_ISSUER"], cfg["OIDC_CLIENT_ID"], cfg["OIDC_CLIENT_SECRET"],
                  cfg["OIDC_REDIRECT_URL"],
                  frozenset(d.lower() for d in cfg["OIDC_EMAIL_DOMAINS"]))


def required() -> Config:
    found = config()
    if found is None:
        raise NotFound("OIDC sign-in is not configured here; sign in with your password "
                       "(POST /api/v1/sign-in)")
    return found


_clients_lock = threading.Lock()


def _client() -> Any:
    """The app's Authlib client (one per app: it caches the discovery document and keys)."""
    cfg = required()
    extensions = current_app.extensions
    with _clients_lock:
        client = extensions.get("sandbox_oidc")
        if client is None:
            client = FlaskOAuth2App(
                FrameworkIntegration("oidc"), name="oidc",
                client_id=cfg.client_id, client_secret=cfg.client_secret,
                server_metadata_url=cfg.issuer.rstrip("/") + "/.well-known/openid-configuration",
                client_kwargs={"scope": SCOPE, "code_challenge_method": "S256",
                               "default_timeout": HTTP_TIMEOUT_S})
            extensions["sandbox_oidc"] = client
    _check_metadata(client, cfg)
    return client


def _check_metadata(client: Any, cfg: Config) -> None:
    try:
        metadata = client.load_server_metadata()
    except (requests.RequestException, ValueError) as e:
        raise IdentityProviderError("the identity provider's discovery document could not "
                                    "be read; try again later, or ask the operator to check "
                                    "SANDBOX_OIDC_ISSUER") from e
    if metadata.get("_sandbox_checked"):
        return
    problem = None
    if metadata.get("issuer") != cfg.issuer:
        problem = "names another issuer than SANDBOX_OIDC_ISSUER"
    elif not all(isinstance(metadata.get(k), str) for k in
                 ("authorization_endpoint", "token_endpoint", "jwks_uri")):
        problem = "lacks an authorization, token or JWKS endpoint"
    else:
        advertised = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        algs = [a for a in advertised if a in ASYMMETRIC]
        if not algs:
            problem = "offers no asymmetric ID token signature"
        # Authlib verifies with the algorithms listed here: the asymmetric ones only.
        metadata["id_token_signing_alg_values_supported"] = algs
    if problem:
        metadata.pop("_loaded_at", None)  # read it again next time: it may be fixed
        raise IdentityProviderError(f"the identity provider's discovery document {problem}; "
                                    "ask the operator to check the OIDC settings")
    metadata["_sandbox_checked"] = True


def start(ctx: Ctx, token_days: int | None, redirect_url: str | None = None) -> Started:
    """A new sign-in at the provider; the caller commits, then redirects the browser.

    ``redirect_url`` (default SANDBOX_OIDC_REDIRECT_URL) is where the provider sends the
    browser back: a page that finishes its own sign-in passes its URL here and to
    :func:`exchange`, and registers it at the provider too.
    """
    cfg = required()
    try:
        rv = _client().create_authorization_url(redirect_url or cfg.redirect_url)
    except AuthlibBaseError as e:
        raise IdentityProviderError("could not create the sign-in request; ask the "
                                    "operator to check the OIDC settings") from e
    now = ctx.now()
    # Sign-ins never finished are dropped here, so the table holds only live ones.
    ctx.session.execute(delete(OidcLogin).where(OidcLogin.expires_at <= now))
    if (ctx.session.scalar(select(func.count()).select_from(OidcLogin)) or 0) >= MAX_PENDING:
        g.retry_after = 60
        raise RateLimited("too many sign-ins are under way; try again in a minute", 60,
                          "oidc_pending_sign_ins")
    browser = secrets.token_urlsafe(32)
    ctx.session.add(OidcLogin(state_digest=digest(rv["state"]), browser_digest=digest(browser),
                              nonce=rv["nonce"], code_verifier=rv["code_verifier"],
                              token_days=token_days, expires_at=now + LOGIN_TTL))
    return Started(rv["url"], browser)


def take(ctx: Ctx, args: Mapping[str, str], browser_secret: str | None) -> Pending:
    """The sign-in this callback finishes, deleted so it is used once only.

    The caller commits the deletion before :func:`exchange`: the provider's answer is
    waited for outside any transaction.
    """
    state = args.get("state") or ""
    if not state or len(state) > 200:
        raise InvalidInput("state", "the callback needs the state the sign-in started with")
    login = ctx.session.get(OidcLogin, digest(state))
    if login is not None:
        ctx.session.delete(login)
        ctx.session.flush()
    unknown = Unauthenticated("sign-in refused: this sign-in is unknown, used or expired; "
                              "start again at /api/v1/oidc/login")
    if login is None or login.expires_at <= ctx.now():
        raise unknown
    if not browser_secret or not hmac.compare_digest(login.browser_digest,
                                                     digest(browser_secret)):
        raise Unauthenticated("sign-in refused: finish the sign-in in the browser that "
                              "started it (start again at /api/v1/oidc/login)")
    error = args.get("error")
    if error:
        shown = error if set(error) <= _ERROR_CODE and len(error) <= 40 else "an error"
        raise Unauthenticated(f"the identity provider refused the sign-in ({shown}); "
                              "start again at /api/v1/oidc/login")
    return Pending(login.nonce, login.code_verifier, login.token_days)


def exchange(pending: Pending, code: str | None, redirect_url: str | None = None) -> Claims:
    """The code for tokens, and the verified ID token's claims about the person."""
    cfg = required()
    if not code or len(code) > 2000:
        raise InvalidInput("code", "the callback needs the provider's authorization code")
    client = _client()
    try:
        token = client.fetch_access_token(redirect_url or cfg.redirect_url, code=code,
                                          code_verifier=pending.code_verifier)
    except requests.RequestException as e:
        raise IdentityProviderError("the identity provider's token endpoint could not be "
                                    "reached; start again later") from e
    except AuthlibBaseError as e:
        raise Unauthenticated("sign-in refused: the identity provider did not accept the "
                              "authorization code; start again at /api/v1/oidc/login") from e
    if not isinstance(token, dict) or not isinstance(token.get("id_token"), str):
        raise Unauthenticated("sign-in refused: the identity provider sent no ID token")
    # Checked here, not left to the discovery document: iss and aud are always required.
    options = {"iss": {"essential": True, "value": cfg.issuer},
               "aud": {"essential": True, "value": cfg.client_id},
               "sub": {"essential": True}, "exp": {"essential": True}}
    try:
        claims = client.parse_id_token(token, nonce=pending.nonce, claims_options=options,
                                       leeway=60)
    except requests.RequestException as e:
        raise IdentityProviderError("the identity provider's keys could not be read; "
                                    "start again later") from e
    except (JoseError, AuthlibBaseError, ValueError) as e:
        raise Unauthenticated("sign-in refused: the ID token did not verify; start again "
                              "at /api/v1/oidc/login") from e
    subject, email = claims.get("sub"), claims.get("email")
    if not isinstance(subject, str) or not 0 < len(subject) <= 255:
        raise Unauthenticated("sign-in refused: the ID token names no valid subject")
    return Claims(issuer=cfg.issuer, subject=subject,
                  email=email if isinstance(email, str) and len(email) <= 254 else None,
                  email_verified=claims.get("email_verified") is True)
