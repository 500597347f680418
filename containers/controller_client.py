"""The few HTTP calls an agent makes, each authenticated with the agent's own token."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from authz.wire import (
    AgentIdentity,
    LeaseState,
    RunReport,
    RunTask,
    SchemaCheckTask,
    SchemaVerdict,
    dump,
    parse,
    parse_task,
)


class ControllerRefused(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControllerClient:
    def __init__(self, url: str, token: str, timeout_s: float) -> None:
        self.url = url.rstrip("/") + "/api/v1/agent"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        kw.setdefault("timeout", self.timeout_s)
        r = self.http.request(method, self.url + path, **kw)  # ids in path are quoted
        if r.status_code >= 400:
            raise ControllerRefused(r.status_code, f"controller answered {r.status_code} to "
                                                   f"{path}: {r.text[:500]}")
        data: dict[str, Any] = r.json()
        return data

    def me(self) -> AgentIdentity:
        return parse(AgentIdentity, self._call("GET", "/me"))

    def next_task(self, wait_s: float) -> SchemaCheckTask | RunTask | None:
        data = self._call("POST", "/tasks/next", params={"wait": wait_s},
                          timeout=wait_s + self.timeout_s)
        task = data.get("task")
        return None if task is None else parse_task(task)

    def leased(self, job_id: str) -> LeaseState | None:
        try:
            return parse(LeaseState, self._call("GET", f"/jobs/{quote(job_id, safe='')}"))
        except ControllerRefused as e:
            if e.status == 404:
                return None
            raise

    def schema_verdict(self, dataset_id: str, verdict: SchemaVerdict) -> None:
        self._call("POST", f"/datasets/{quote(dataset_id, safe='')}/schema",
                   json=dump(verdict))

    def started(self, job_id: str) -> None:
        self._call("POST", f"/jobs/{quote(job_id, safe='')}/started", json={})

    def checking(self, job_id: str) -> None:
        self._call("POST", f"/jobs/{quote(job_id, safe='')}/checking", json={})

    def result(self, job_id: str, report: RunReport) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{quote(job_id, safe='')}/result", json=dump(report))
