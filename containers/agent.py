"""The provider-side agent: pulls tasks over HTTP, runs them in the provider's domain.

It never imports the controller. For each run it projects the permitted columns into a
per-job input file, runs the script with the Docker executor, checks the outputs, and
sends back only what passed (blocked outputs leave as a hash and a reason, never as
content).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz.errors import ExecutorError, InvalidInput, SandboxError
from compute.protocol import provider_submit
from compute.spec import spec_from_json
from containers import checks, datasets
from containers.executor import DockerExecutor, Limits, RunResult, RunSpec
from containers.hardening import read_outputs

log = logging.getLogger("data-sandbox.agent")


@dataclass
class AgentConfig:
    controller_url: str
    token: str
    data_roots: list[Path]
    work_root: Path
    image: str
    limits: Limits = field(default_factory=Limits)
    poll_wait_s: float = 5.0
    http_timeout_s: float = 30.0
    # Signs joint-statistics submissions; its public half is registered with the agent.
    signing_key: Ed25519PrivateKey | None = None


class ControllerRefused(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControllerClient:
    """The few calls an agent makes; every one authenticated with the agent's own token."""

    def __init__(self, url: str, token: str, timeout_s: float) -> None:
        self.url = url.rstrip("/") + "/api/v1/agent"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        kw.setdefault("timeout", self.timeout_s)
        r = self.http.request(method, self.url + path, **kw)
        if r.status_code >= 400:
            raise ControllerRefused(r.status_code, f"controller answered {r.status_code} to "
                                                   f"{path}: {r.text[:500]}")
        data: dict[str, Any] = r.json()
        return data

    def next_task(self, wait_s: float) -> dict[str, Any] | None:
        data = self._call("GET", "/tasks/next", params={"wait": wait_s},
                          timeout=wait_s + self.timeout_s)
        task: dict[str, Any] | None = data.get("task")
        return task

    def schema_verdict(self, dataset_id: str, body: dict[str, Any]) -> None:
        self._call("POST", f"/datasets/{dataset_id}/schema", json=body)

    def started(self, job_id: str) -> None:
        self._call("POST", f"/jobs/{job_id}/started", json={})

    def checking(self, job_id: str) -> None:
        self._call("POST", f"/jobs/{job_id}/checking", json={})

    def result(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}/result", json=body)


class Agent:
    def __init__(self, config: AgentConfig, executor: DockerExecutor) -> None:
        self.config = config
        self.executor = executor
        self.controller = ControllerClient(config.controller_url, config.token,
                                           config.http_timeout_s)

    def serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once(self.config.poll_wait_s)
            except Exception:  # keep serving: one bad task or a restart must not stop the agent
                log.exception("agent loop error")
                stop.wait(1.0)

    def run_once(self, wait_s: float = 0.0) -> bool:
        task = self.controller.next_task(wait_s)
        if task is None:
            return False
        if task["type"] == "schema_check":
            self.check_schema(task["dataset"])
        elif task["type"] == "run":
            self.run_job(task)
        return True

    def check_schema(self, ds: dict[str, Any]) -> None:
        try:
            path = datasets.resolve(ds["location"], self.config.data_roots)
            rows = datasets.schema_check(path, ds["format"], ds["fields"])
            verdict: dict[str, Any] = {"ok": True, "rows": rows}
        except InvalidInput as e:
            verdict = {"ok": False, "error": {"field": e.field, "rule": e.rule}}
        self.controller.schema_verdict(ds["id"], verdict)

    def run_job(self, task: dict[str, Any]) -> None:
        job_id = task["job_id"]
        job_dir = self.config.work_root / job_id
        try:
            report = self._run(task, job_dir)
        except SandboxError as e:
            report = {"state": "failed", "reason": f"{type(e).__name__}: {e}",
                      "rows_read": 0, "bytes_read": 0, "outputs": []}
        finally:
            self.executor.cleanup(job_id)
            shutil.rmtree(job_dir, ignore_errors=True)
        try:
            self.controller.result(job_id, report)
        except ControllerRefused as e:
            if e.status >= 500:
                raise
            # A report the controller refuses must not leave the job leased until it is
            # requeued and run again: report a plain failure, which carries no output.
            log.error("result for %s refused: %s", job_id, e)
            self.controller.result(job_id, {
                "state": "failed", "reason": f"agent report refused by the controller: {e}"[:2000],
                "rows_read": report.get("rows_read", 0), "bytes_read": report.get("bytes_read", 0),
                "outputs": []})

    def _run(self, task: dict[str, Any], job_dir: Path) -> dict[str, Any]:
        job_id = task["job_id"]
        in_dir = job_dir / "in"
        in_dir.mkdir(parents=True, exist_ok=True)
        script = base64.b64decode(task["script_b64"])
        script_path = job_dir / "script.py"
        script_path.write_bytes(script)
        single = len(task["datasets"]) == 1
        rows = size = 0
        digests = []
        rare: set[str] = set()
        for ds in task["datasets"]:
            src = datasets.resolve(ds["location"], self.config.data_roots)
            name = "data.csv" if single else f"{ds['code']}.csv"
            projected = datasets.project(src, ds["format"], [f["name"] for f in ds["fields"]],
                                         in_dir / name, task["min_cell_count"])
            rare |= projected.rare_values
            rows += projected.rows
            size += projected.size
            digests.append(projected.sha256)
        input_sha = digests[0] if single else _combine(digests)
        for p in [in_dir, *in_dir.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        extra: dict[str, Path] = {}
        if "joint" in task:
            spec_path = job_dir / "spec.json"
            spec_path.write_text(json.dumps(task["joint"]["spec"]))
            extra["spec.json"] = spec_path
        # The controller's lease is sized for its timeout: never run longer than that.
        limits = replace(self.config.limits,
                         timeout_s=min(self.config.limits.timeout_s, float(task["timeout_s"])))
        spec = RunSpec(job_id=job_id, image=self.config.image, script_path=script_path,
                       input_dir=in_dir, work_dir=job_dir / "work", limits=limits,
                       extra_files=extra)
        spec.work_dir.mkdir(exist_ok=True)
        self.executor.start(spec)
        self.controller.started(job_id)
        result = self.executor.wait(job_id)
        self.controller.checking(job_id)
        policy = checks.OutputPolicy(min_cell_count=task["min_cell_count"], rows_read=rows,
                                     blocked_columns=frozenset(task["blocked_columns"]),
                                     rare_values=frozenset(rare))
        base: dict[str, Any] = {
            "rows_read": rows, "bytes_read": size, "input_sha256": input_sha,
            "runner_image": self.config.image, "exit_code": result.exit_code,
            "log": checks.check_log(result.stdout, result.stderr, policy),
        }
        if not result.ok:
            return {**base, "state": "failed", "reason": _failure(result), "outputs": []}
        if "joint" in task:
            return {**base, **self._joint_submission(task, result.out_dir)}
        verdicts = checks.check_outputs(result.out_dir, policy)
        blocked = [v for v in verdicts if v.decision == "blocked"]
        outputs: list[dict[str, Any]] = [{
            "name": v.name, "sha256": v.sha256, "bytes": v.size, "decision": v.decision,
            "reasons": v.reasons,
            "content_b64": (base64.b64encode(v.content).decode()
                            if not blocked and v.content is not None else None),
        } for v in verdicts]
        if blocked:
            # Nothing of a suspect run leaves: released-looking siblings are withheld too.
            for o in outputs:
                if o["decision"] == "released":
                    o["decision"] = "blocked"
                    o["reasons"] = [*_reasons(o), "withheld: another output of this run "
                                                   "was blocked"]
            reason = "; ".join(f"{v.name}: {', '.join(v.reasons)}" for v in blocked)
            return {**base, "state": "blocked", "reason": reason[:2000], "outputs": outputs}
        return {**base, "state": "released", "outputs": outputs}


    def _joint_submission(self, task: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        """Encrypt the local aggregates; the plaintext never leaves the provider's domain."""
        if self.config.signing_key is None:
            raise ExecutorError("this agent has no signing key for joint submissions")
        files = read_outputs(out_dir, max_files=4, max_bytes=64 * 1024 * 1024)
        if set(files) != {"aggregates.json"}:
            raise ExecutorError("the local aggregation must write exactly aggregates.json")
        joint = task["joint"]
        schema = {f["name"]: f["type"] for ds in task["datasets"] for f in ds["fields"]}
        try:
            aggregates = json.loads(files["aggregates.json"])
        except ValueError:
            raise ExecutorError("aggregates.json is not JSON") from None
        submission, report = provider_submit(
            spec_from_json(joint["spec"], schema), aggregates,
            base64.b64decode(joint["public_context_b64"]), joint["context_fingerprint"],
            job_id=joint["joint_id"], provider_id=task["datasets"][0]["provider_id"],
            signing_key=self.config.signing_key, min_cell_count=task["min_cell_count"])
        raw = json.dumps(submission, sort_keys=True).encode()
        note = (f"encrypted submission; {report.suppressed_cells} cell(s) below "
                f"{report.min_cell_count} suppressed before encryption")
        return {"state": "released", "outputs": [{
            "name": "submission.json", "sha256": hashlib.sha256(raw).hexdigest(),
            "bytes": len(raw), "decision": "released", "reasons": [note],
            "content_b64": base64.b64encode(raw).decode()}]}


def _reasons(output: dict[str, Any]) -> list[str]:
    reasons: list[str] = output["reasons"]
    return reasons


def _failure(result: RunResult) -> str:
    if result.timed_out:
        return "timed out: killed at the wall-clock limit"
    if result.oom_killed:
        return "out of memory: killed at the memory limit"
    return result.error or f"exited with status {result.exit_code}"


def _combine(digests: list[str]) -> str:
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()
