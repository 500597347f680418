"""Authentication failures are limited per client address and per token id (429)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.harness import Controller, metric_value

pytestmark = pytest.mark.slow


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Controller]:
    c = Controller(tmp_path, workers=2, env={
        "SANDBOX_AUTH_FAILURES_PER_ADDRESS_PER_MIN": "5",
        "SANDBOX_AUTH_FAILURES_PER_TOKEN_PER_MIN": "3"}).prepare().start()
    yield c
    c.stop()


def test_wrong_tokens_get_429_with_retry_after(limited: Controller) -> None:
    # One keep-alive connection: one worker, whose in-memory limits are counted here.
    conn = limited.connect()

    def me(token: str) -> tuple[int, dict[str, object], str | None]:
        r = limited.request("GET", "/api/v1/me", {"Authorization": f"Bearer {token}"},
                            conn=conn)
        return r.status, r.json(), r.headers["Retry-After"]

    try:
        assert [me("pty_target.wrong")[0] for _ in range(3)] == [401, 401, 401]
        status, body, retry = me("pty_target.wrong")
        assert status == 429 and body["error"] == "rate_limited"
        assert "token id" in str(body["message"])
        assert retry is not None and 1 <= int(retry) <= 60
        # Another token id from the same address still gets its own answer...
        assert me("pty_other.wrong")[0] == 401
        assert me("pty_other.wrong")[0] == 401
        # ...until the address itself has failed five times.
        status, body, retry = me(limited.admin_token)
        assert status == 429 and "address" in str(body["message"])
        assert retry is not None and 1 <= int(retry) <= 60
        assert set(body) == {"error", "message"}
    finally:
        conn.close()


def test_rate_limits_are_counted(limited: Controller) -> None:
    conn = limited.connect()
    try:
        for _ in range(6):
            limited.request("GET", "/api/v1/me", {"Authorization": "Bearer pty_x.wrong"},
                            conn=conn)
    finally:
        conn.close()
    # Three failures, then three refusals: the address (limit 5) may still scrape.
    text = limited.metrics()
    assert (metric_value(text, "sandbox_auth_failures_total") or 0) >= 3
    assert (metric_value(text, "sandbox_rate_limited_total", 'limit="token_id"') or 0) >= 1
