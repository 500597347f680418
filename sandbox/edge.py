"""The controller's edge: proxy headers, security headers, and rate limits.

Rate limits are kept in memory, per process: with W gunicorn workers a client may get up
to W times a limit before every worker has refused it (docs/operations.md). Tokens are
256-bit random secrets, so the failure limits do not stop guessing (nothing could
succeed); they stop a misconfigured or hostile client from loading the database with
lookups, and make it visible (``sandbox_rate_limited_total``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque

from flask import Flask, Response, current_app, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from compute.errors import SandboxError

WINDOW_S = 60.0
MAX_KEYS = 10_000
SERVER = "data-sandbox"
# Health probes carry no token and must not be refused for others' failures: a load
# balancer probing from the address its clients share would take the controller out.
PROBES = frozenset({"ops.healthz", "ops.readyz"})
SECURITY_HEADERS = {
    # A JSON API: nothing it answers may run, load anything, or be framed.
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Answers carry tokens (party creation, rotation) and private results: never cached.
    "Cache-Control": "no-store",
}


class RateLimited(SandboxError):
    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float, limit: str) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.limit = limit


class SlidingWindow:
    """At most ``limit`` events per key in any ``window_s``; bounded in memory.

    Each key keeps only its ``limit`` latest times. Past ``max_keys`` keys, keys with
    nothing in the window go first, then the least recently used (a flood of new keys
    can so evict a key early: the per-address limit still holds the flooding client).
    """

    def __init__(self, limit: int, window_s: float = WINDOW_S, max_keys: int = MAX_KEYS
                 ) -> None:
        self.limit, self.window_s, self.max_keys = limit, window_s, max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may have another event; 0 if it may now."""
        with self._lock:
            times = self._events.get(key)
            if times is None or len(times) < self.limit:
                return 0.0
            wait = self.window_s - (time.monotonic() - times[0])
            return max(0.0, wait)

    def hit(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            times = self._events.get(key)
            if times is None:
                if len(self._events) >= self.max_keys:
                    self._evict(now)
                times = self._events[key] = deque(maxlen=self.limit)
            else:
                self._events.move_to_end(key)
            times.append(now)

    def _evict(self, now: float) -> None:
        stale = [k for k, t in self._events.items() if now - t[-1] >= self.window_s]
        for k in stale:
            del self._events[k]
        while len(self._events) >= self.max_keys:
            self._events.popitem(last=False)


class Limits:
    def __init__(self, per_address: int, per_token: int, token_requests: int) -> None:
        self.failures_by_address = SlidingWindow(per_address)
        self.failures_by_token = SlidingWindow(per_token)
        self.requests_by_token = SlidingWindow(token_requests) if token_requests else None


def _limits() -> Limits:
    found: Limits = current_app.extensions["sandbox_limits"]
    return found


def _token_id() -> str | None:
    """The id part of a bearer token (``<id>.<secret>``); never the secret."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    object_id, sep, _ = token.strip().partition(".")
    if scheme.lower() != "bearer" or not sep or not object_id or len(object_id) > 64:
        return None
    return object_id


def _refuse(limit: str, retry_after_s: float, message: str) -> None:
    g.rate_limit = limit
    err = RateLimited(message, retry_after_s, limit)
    g.retry_after = err.retry_after_s
    raise err


def admit_caller(caller_id: str) -> None:
    """Per-token request rate, counted once the token authenticated (off when 0)."""
    limiter = _limits().requests_by_token
    if limiter is None:
        return
    wait = limiter.retry_after(caller_id)
    if wait:
        _refuse("token_rate", wait, "too many requests with this token; retry later")
    limiter.hit(caller_id)


def init_app(app: Flask) -> None:
    hops = int(app.config["PROXY_HOPS"])
    if hops:
        # Behind `hops` reverse proxies: the client's address and scheme are the ones the
        # nearest of them saw (X-Forwarded-For, X-Forwarded-Proto); never trusted when 0.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.extensions["sandbox_limits"] = Limits(
        int(app.config["AUTH_FAILURES_PER_ADDRESS_PER_MIN"]),
        int(app.config["AUTH_FAILURES_PER_TOKEN_PER_MIN"]),
        int(app.config["TOKEN_REQUESTS_PER_MIN"]))

    @app.before_request
    def _check_failures() -> None:
        if request.endpoint in PROBES:
            return
        limits = _limits()
        wait = limits.failures_by_address.retry_after(request.remote_addr or "-")
        if wait:
            _refuse("address", wait, "too many failed authentications from this address; "
                                     "retry later")
        tid = _token_id()
        if tid is not None:
            wait = limits.failures_by_token.retry_after(tid)
            if wait:
                _refuse("token_id", wait, "too many failed authentications with this "
                                          "token id; retry later")

    @app.after_request
    def _harden(response: Response) -> Response:
        if response.status_code == 401:
            limits = _limits()
            limits.failures_by_address.hit(request.remote_addr or "-")
            tid = _token_id()
            if tid is not None:
                limits.failures_by_token.hit(tid)
        if response.status_code == 429 and g.get("retry_after"):
            response.headers["Retry-After"] = str(g.retry_after)
        response.headers.update(SECURITY_HEADERS)
        if g.get("csp"):
            # A web page (sandbox.web) may load this origin's scripts, styles and images.
            response.headers["Content-Security-Policy"] = g.csp
        hsts = app.config["HSTS"]
        if hsts == "always" or (hsts == "auto" and request.is_secure):
            response.headers["Strict-Transport-Security"] = \
                f"max-age={int(app.config['HSTS_MAX_AGE_S'])}"
        if not str(request.environ.get("SERVER_SOFTWARE", "")).startswith("gunicorn"):
            # Werkzeug's server names itself and Python with their versions unless the
            # app sends a Server header; gunicorn's is set in sandbox.server.
            response.headers["Server"] = SERVER
        return response
