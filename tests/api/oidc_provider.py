"""A real OpenID Connect provider on 127.0.0.1, built from Authlib's own server parts.

Authorization Code grant with the OpenID Connect extension and PKCE (S256 required),
client_secret_basic at the token endpoint, ID tokens signed RS256 with a key generated
for the test, and the discovery document and JWKS served over HTTP. There is no login
page: the test says who is signed in at the provider (``provider.user``) and consent is
automatic. ``provider.id_token_overrides`` and ``provider.signing_key`` let a test make
the provider misbehave (a wrong nonce, audience or expiry, a key not in its JWKS).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import AuthorizationCodeMixin, UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

CLIENT_ID = "data-sandbox-test"
CLIENT_SECRET = secrets.token_urlsafe(24)


@dataclass
class User:
    sub: str
    email: str | None
    email_verified: bool = True

    def get_user_id(self) -> str:
        return self.sub


class Client(ClientMixin):  # type: ignore[misc]
    def __init__(self, redirect_uri: str) -> None:
        self.client_id, self.redirect_uri = CLIENT_ID, redirect_uri

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s in ("openid", "email", "profile"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, CLIENT_SECRET)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    redirect_uri: str
    scope: str
    user: User
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


class Provider:
    """The provider's state: its key, its one client, who is signed in, issued codes."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-1", "use": "sig"},
                                       private=True)
        self.signing_key = self.key
        self.user: User | None = None
        self.id_token_overrides: dict[str, Any] = {}
        self.codes: dict[str, Code] = {}
        self.issuer = ""
        self.client: Client | None = None
        self.token_requests = 0


def build(provider: Provider) -> Flask:
    app = Flask("test_oidc_provider")

    class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic"]

        def save_authorization_code(self, code: str, req: Any) -> None:
            assert provider.user is not None
            provider.codes[code] = Code(
                code, req.payload.redirect_uri, req.payload.scope, provider.user,
                req.payload.data.get("nonce"), req.payload.data.get("code_challenge"),
                req.payload.data.get("code_challenge_method"))

        def query_authorization_code(self, code: str, client: Client) -> Code | None:
            return provider.codes.get(code)

        def delete_authorization_code(self, code: Code) -> None:
            provider.codes.pop(code.code, None)

        def authenticate_user(self, code: Code) -> User:
            return code.user

    class ProviderOpenIDCode(OpenIDCode):  # type: ignore[misc]
        def exists_nonce(self, nonce: str, req: Any) -> bool:
            return any(c.nonce == nonce for c in provider.codes.values())

        def resolve_client_private_key(self, client: Client) -> RSAKey:
            return provider.signing_key

        def get_client_algorithm(self, client: Client) -> str:
            return "RS256"

        def get_encode_header(self, client: Client) -> dict[str, str]:
            return {"alg": "RS256", "kid": provider.signing_key.kid or "test-1"}

        def get_client_claims(self, client: Client) -> dict[str, Any]:
            now = int(time.time())
            return {"iss": provider.issuer, "aud": [client.get_client_id()],
                    "iat": now, "exp": now + 300}

        def generate_user_info(self, user: User, scope: str) -> UserInfo:
            info = UserInfo(sub=user.sub)
            if "email" in scope and user.email is not None:
                info["email"], info["email_verified"] = user.email, user.email_verified
            # Applied last: encode_id_token lays user info over the standard claims.
            info.update(provider.id_token_overrides)
            return info

    def query_client(client_id: str) -> Client | None:
        return provider.client if client_id == CLIENT_ID else None

    def save_token(token: dict[str, Any], req: Any) -> None:
        provider.token_requests += 1

    server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
    server.register_grant(AuthorizationCodeGrant,
                          [ProviderOpenIDCode(require_nonce=True), CodeChallenge(required=True)])

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Response:
        return jsonify({
            "issuer": provider.issuer,
            "authorization_endpoint": provider.issuer + "/authorize",
            "token_endpoint": provider.issuer + "/token",
            "jwks_uri": provider.issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "scopes_supported": ["openid", "email", "profile"],
        })

    @app.get("/jwks")
    def jwks() -> Response:
        return jsonify({"keys": [provider.key.as_dict(private=False)]})

    @app.get("/authorize")
    def authorize() -> Response:
        # No login page: whoever the test put in provider.user is signed in and consents.
        grant = server.get_consent_grant(end_user=provider.user)
        resp: Response = server.create_authorization_response(grant_user=provider.user,
                                                              grant=grant)
        return resp

    @app.post("/token")
    def token() -> Response:
        resp: Response = server.create_token_response()
        return resp

    return app


@contextmanager
def running(redirect_uri: str) -> Iterator[Provider]:
    """The provider serving on a free loopback port until the block ends."""
    provider = Provider()
    app = build(provider)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    provider.issuer = f"http://127.0.0.1:{server.server_port}"
    provider.client = Client(redirect_uri)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        thread.join()
