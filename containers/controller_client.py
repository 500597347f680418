"""The few HTTP calls an agent makes, each authenticated with the agent's own token.

Every call survives an outage of the controller: a connection error, a timeout, or an
answer that says "not now" (502, 503, 504, 429) is retried with capped exponential backoff
and jitter for up to ``retry_for_s`` (default five minutes), and the agent's stop event
ends the wait at once. Each call is safe to repeat: the notices and the report are
idempotent on the controller (a repeated report is a 409, taken as acknowledged), and a
claim of work carries an ``Idempotency-Key``, so a claim repeated after a lost answer
gets the job it was already given instead of leasing a second one.
"""

from __future__ import annotations

import base64
import logging
import random
import secrets
import threading
import time
from typing import Any
from urllib.parse import quote

import requests

from authz.wire import PSI_CHUNK_BYTES as CHUNK_BYTES
from authz.wire import (
    AgentIdentity,
    AgentStatus,
    LeaseState,
    MaskKeyAnnouncement,
    RunReport,
    RunStarted,
    RunTask,
    SchemaCheckTask,
    SchemaVerdict,
    dump,
    parse,
    parse_task,
)

log = logging.getLogger("data-sandbox.agent")

#: Answers that mean "try again later", not "no".
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ControllerRefused(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControllerUnreachable(RuntimeError):
    """The controller did not answer (or kept answering "not now") for the whole budget."""


class ControllerClient:
    def __init__(self, url: str, token: str, timeout_s: float, *, retry_for_s: float = 300.0,
                 backoff_s: tuple[float, float] = (0.2, 10.0),
                 stop: threading.Event | None = None) -> None:
        self.url = url.rstrip("/") + "/api/v1/agent"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s
        self.retry_for_s = retry_for_s
        self.backoff_s = backoff_s
        self.stop = stop or threading.Event()

    def _call(self, method: str, path: str, retry_for_s: float | None = None, **kw: Any
              ) -> dict[str, Any]:
        kw.setdefault("timeout", self.timeout_s)
        deadline = time.monotonic() + (self.retry_for_s if retry_for_s is None else retry_for_s)
        delay = self.backoff_s[0]
        while True:
            try:
                r = self.http.request(method, self.url + path, **kw)  # ids in path are quoted
            except (requests.ConnectionError, requests.Timeout) as e:
                problem = f"{type(e).__name__}"
            else:
                if r.status_code not in RETRY_STATUSES:
                    break
                problem = f"HTTP {r.status_code}"
            if time.monotonic() + delay > deadline or self.stop.is_set():
                raise ControllerUnreachable(f"controller unreachable for {path}: {problem}")
            log.warning("controller call %s %s failed (%s); retrying in %.1f s",
                        method, path.split("/")[1], problem, delay)
            # Jitter: agents that lost the controller together do not return together.
            self.stop.wait(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.backoff_s[1])
        if r.status_code >= 400:
            raise ControllerRefused(r.status_code, f"controller answered {r.status_code} to "
                                                   f"{path}: {r.text[:500]}")
        data: dict[str, Any] = r.json()
        return data

    def me(self) -> AgentIdentity:
        return parse(AgentIdentity, self._call("GET", "/me"))

    def next_task(self, wait_s: float, status: AgentStatus | None = None,
                  claim_key: str | None = None) -> SchemaCheckTask | RunTask | None:
        # One key per claim, the same for its retries (see the module's docstring); the
        # agent passes one it keeps across restarts (containers/claims.py).
        data = self._call("POST", "/tasks/next", params={"wait": wait_s},
                          json=None if status is None else dump(status),
                          timeout=wait_s + self.timeout_s,
                          headers={"Idempotency-Key": claim_key or secrets.token_hex(16)})
        task = data.get("task")
        return None if task is None else parse_task(task)

    def leased(self, job_id: str, retry_for_s: float | None = None) -> LeaseState | None:
        try:
            return parse(LeaseState, self._call("GET", f"/jobs/{quote(job_id, safe='')}",
                                                retry_for_s=retry_for_s))
        except ControllerRefused as e:
            if e.status == 404:
                return None
            raise

    def schema_verdict(self, dataset_id: str, verdict: SchemaVerdict) -> None:
        self._call("POST", f"/datasets/{quote(dataset_id, safe='')}/schema",
                   json=dump(verdict))

    def started(self, job_id: str, mask_key: dict[str, object] | None = None
                ) -> dict[str, Any]:
        """The run started; a joint part's signed mask-key announcement rides along (one
        request and one transaction on the controller instead of two). The answer says
        ``announced`` when the key was recorded."""
        notice = RunStarted(mask_key=None if mask_key is None else
                            MaskKeyAnnouncement.model_validate(mask_key))
        return self._call("POST", f"/jobs/{quote(job_id, safe='')}/started", json=dump(notice))

    def checking(self, job_id: str) -> None:
        self._call("POST", f"/jobs/{quote(job_id, safe='')}/checking", json={})

    def mask_key(self, job_id: str, announcement: dict[str, object]) -> None:
        self._call("POST", f"/jobs/{quote(job_id, safe='')}/mask-key", json=announcement)

    def mask_keys(self, job_id: str, wait_s: float = 0.0) -> dict[str, object]:
        """The job's key set; with ``wait_s`` the controller holds the answer until the last
        key arrives (or the wait ends), so no sleeping poll is needed."""
        return self._call("GET", f"/jobs/{quote(job_id, safe='')}/mask-keys",
                          params={"wait": wait_s}, timeout=wait_s + self.timeout_s)

    def cell_holders(self, job_id: str, vector: dict[str, object]) -> dict[str, object]:
        """Publish this part's signed, masked vector of one cell-holders round (a retry of
        the same vector is answered as published); the last vector's answer carries the
        complete round (``round_set``)."""
        return self._call("POST", f"/jobs/{quote(job_id, safe='')}/cell-holders",
                          json=vector)

    def cell_holders_round(self, job_id: str, rnd: int, wait_s: float = 0.0
                           ) -> dict[str, object]:
        """Every provider's vector of round ``rnd``; held until the last arrives (long poll)."""
        return self._call("GET", f"/jobs/{quote(job_id, safe='')}/cell-holders/{rnd}",
                          params={"wait": wait_s}, timeout=wait_s + self.timeout_s)

    def psi_post(self, job_id: str, name: str, data: bytes) -> None:
        """Send message ``name`` in chunks of at most CHUNK_BYTES, one request each; a
        retried chunk is answered as sent (the controller keeps each chunk once)."""
        path = f"/jobs/{quote(job_id, safe='')}/psi/{quote(name, safe='')}"
        chunks = max(1, -(-len(data) // CHUNK_BYTES))
        for seq in range(chunks):
            part = data[seq * CHUNK_BYTES:(seq + 1) * CHUNK_BYTES]
            self._call("POST", path, json={"data_b64": base64.b64encode(part).decode(),
                                           "chunk": seq, "chunks": chunks})

    def psi_get(self, job_id: str, name: str) -> bytes | None:
        """Message ``name`` whole once the other part sent all of it, else None."""
        path = f"/jobs/{quote(job_id, safe='')}/psi/{quote(name, safe='')}"
        got = self._call("GET", path)
        if not got.get("ready") or not isinstance(got.get("data_b64"), str):
            return None
        parts, chunks = [base64.b64decode(got["data_b64"])], int(got.get("chunks") or 1)
        for seq in range(1, chunks):
            more = self._call("GET", path, params={"chunk": seq})
            parts.append(base64.b64decode(more["data_b64"]))
        return b"".join(parts)

    def result(self, job_id: str, report: RunReport) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{quote(job_id, safe='')}/result", json=dump(report))
