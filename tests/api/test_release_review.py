"""Release review: held outputs, output checkers, the two-person rule, the ledger."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from tests.api.helpers import permit_for
from tests.api.test_people import ledger
from tests.conftest import Actor

TABLE = b"age_band,n\n0-17,12\n18-64,40\n"
OTHER = b"sex,n\nf,30\nm,22\n"


class Review:
    """A provider with two output checkers and an approver, a requester's analyst, an agent,
    and a permit whose script outputs go to review."""

    def __init__(self, make_party: Any, make_agent: Any, make_person: Any,
                 quorum: int = 1) -> None:
        self.provider, self.requester = make_party("provider"), make_party("requester")
        self.regulator = make_party("regulator")
        self.agent = make_agent(self.provider)
        self.checkers = [make_person(self.provider, "output_checker") for _ in range(2)]
        self.approver = make_person(self.provider, "approver")
        self.analyst = make_person(self.requester, "analyst")
        self.ds, self.permit_id = permit_for(self.analyst, self.provider, self.agent,
                                             script_release="review", review_quorum=quorum)

    def held_job(self, *outputs: tuple[str, bytes]) -> str:
        """A job whose run ended with ``outputs`` held for review (as the agent reports)."""
        r = self.analyst.post("/jobs", {"permit_id": self.permit_id,
                                        "dataset_ids": [self.ds["id"]],
                                        "script": "print('x')\n"})
        assert r.status_code == 201, r.json
        job_id: str = r.json["id"]
        assert self.agent.post("/agent/tasks/next").json["task"]["job_id"] == job_id
        r = self.agent.post(f"/agent/jobs/{job_id}/result", {
            "state": "awaiting_review", "rows_read": 500, "bytes_read": 9000,
            "input_sha256": "a" * 64, "runner_image": "img", "outputs": [{
                "name": name, "sha256": hashlib.sha256(c).hexdigest(), "bytes": len(c),
                "decision": "pending_review", "reasons": ["passed the file checks"],
                "content_b64": base64.b64encode(c).decode()} for name, c in outputs]})
        assert r.status_code == 200 and r.json["state"] == "awaiting_review", r.json
        return job_id

    def decide(self, who: Actor, job_id: str, name: str, decision: str = "approve",
               comment: str = "safe: counts of at least ten") -> Any:
        return who.post(f"/reviews/{job_id}/outputs/{name}",
                        {"decision": decision, "comment": comment})


@pytest.fixture
def review(make_party: Any, make_agent: Any, make_person: Any) -> Review:
    return Review(make_party, make_agent, make_person)


def test_held_outputs_reach_the_checkers_not_the_requester(review: Review) -> None:
    job_id = review.held_job(("t.csv", TABLE))
    job = review.analyst.get(f"/jobs/{job_id}").json
    assert job["state"] == "awaiting_review"
    assert review.analyst.get(f"/jobs/{job_id}/outputs/output-1").status_code == 404
    queue = review.checkers[0].get("/reviews").json["reviews"]
    assert [(q["job_id"], q["outputs_pending"]) for q in queue] == [(job_id, 1)]
    seen = review.checkers[0].get(f"/reviews/{job_id}").json
    assert seen["script"] == "print('x')\n" and seen["outputs"][0]["content"] == TABLE.decode()
    assert seen["outputs"][0]["findings"] == ["passed the file checks"]
    # Not for an approver without the checker role, nor for the requester.
    assert review.approver.get(f"/reviews/{job_id}").status_code == 403
    assert review.analyst.get(f"/reviews/{job_id}").status_code == 403


def test_one_approval_releases_and_the_ledger_names_the_checker(review: Review) -> None:
    job_id = review.held_job(("t.csv", TABLE))
    r = review.analyst.post(f"/jobs/{job_id}/outputs/output-1/justification",
                            {"justification": "Age bands of at least ten people each."})
    assert r.status_code == 200, r.json
    checker = review.checkers[0]
    assert checker.get(f"/reviews/{job_id}").json["outputs"][0]["justification"]
    r = review.decide(checker, job_id, "output-1")
    assert r.status_code == 200, r.json
    job = review.analyst.get(f"/jobs/{job_id}").json
    assert job["state"] == "released"
    out = job["outputs"][0]
    assert out["decision"] == "released" and out["review_s"] is not None
    assert out["reviews"][0]["reviewer_id"] == checker.id
    assert review.analyst.get(f"/jobs/{job_id}/outputs/output-1").data == TABLE
    entries = ledger(review.regulator)
    decided = [e for e in entries if e["kind"] == "review.decided"]
    assert [(e["actor"], e["body"]["acting_for"], e["body"]["decision"]) for e in decided] == [
        (checker.id, review.provider.id, "approve")]
    assert "comment" not in decided[0]["body"]  # its digest only
    completed = [e for e in entries if e["kind"] == "review.completed"]
    assert completed[0]["body"]["state"] == "released"
    assert completed[0]["body"]["outputs"][0]["sha256"] == hashlib.sha256(TABLE).hexdigest()
    # The job's receipt is now the entry that released it.
    assert job["ledger_index"] == completed[0]["index"]


def test_a_rejection_discards_and_a_return_says_why(review: Review) -> None:
    job_id = review.held_job(("a.csv", TABLE), ("b.csv", OTHER))
    assert review.decide(review.checkers[0], job_id, "output-1", "reject").status_code == 200
    assert review.analyst.get(f"/jobs/{job_id}").json["state"] == "awaiting_review"
    r = review.decide(review.checkers[1], job_id, "output-2", "return",
                      "please band ages more coarsely")
    assert r.status_code == 200
    job = review.analyst.get(f"/jobs/{job_id}").json
    assert job["state"] == "blocked"
    assert [o["decision"] for o in job["outputs"]] == ["rejected", "returned"]
    assert job["outputs"][1]["reviews"][0]["comment"] == "please band ages more coarsely"
    seen = review.checkers[0].get(f"/reviews/{job_id}").json
    assert [o["content"] for o in seen["outputs"]] == [None, None]  # discarded


def test_the_two_person_rule(make_party: Any, make_agent: Any, make_person: Any) -> None:
    review = Review(make_party, make_agent, make_person, quorum=2)
    job_id = review.held_job(("t.csv", TABLE))
    first, second = review.checkers
    assert review.decide(first, job_id, "output-1").status_code == 200
    assert review.analyst.get(f"/jobs/{job_id}").json["state"] == "awaiting_review"
    # The same person twice does not make two.
    r = review.decide(first, job_id, "output-1")
    assert r.status_code == 409 and "different people" in r.json["message"]
    # The provider's service account never decides; the requester's people cannot.
    assert review.decide(review.provider, job_id, "output-1").status_code == 403
    assert review.decide(review.analyst, job_id, "output-1").status_code == 403
    # A checker of another provider does not see the job.
    other = make_party("provider")
    outsider = make_person(other, "output_checker")
    assert review.decide(outsider, job_id, "output-1").status_code == 404
    assert outsider.get("/reviews").json["reviews"] == []
    # A deactivated checker is out at once.
    review_admin = review.provider
    assert review_admin.post(f"/people/{second.id}/deactivate").status_code == 200
    assert review.decide(second, job_id, "output-1").status_code == 401
    third = make_person(review.provider, "output_checker")
    assert review.decide(third, job_id, "output-1").status_code == 200
    assert review.analyst.get(f"/jobs/{job_id}").json["state"] == "released"


def test_revocation_during_review_discards_what_was_held(review: Review) -> None:
    job_id = review.held_job(("t.csv", TABLE))
    r = review.approver.post(f"/permits/{review.permit_id}/revoke",
                             {"reason": "purpose no longer valid"})
    assert r.status_code == 200, r.json
    job = review.analyst.get(f"/jobs/{job_id}").json
    assert job["state"] == "cancelled"
    assert job["outputs"][0]["decision"] == "blocked"
    r = review.decide(review.checkers[0], job_id, "output-1")
    assert r.status_code == 409
    assert review.checkers[0].get(f"/reviews/{job_id}").json["outputs"][0]["content"] is None
    assert review.analyst.get(f"/jobs/{job_id}/outputs/output-1").status_code == 404


def test_the_requester_may_withdraw_a_job_under_review(review: Review) -> None:
    job_id = review.held_job(("t.csv", TABLE))
    r = review.analyst.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json["state"] == "cancelled"
    assert review.checkers[0].get("/reviews").json["reviews"] == []


def test_review_input_is_checked(review: Review) -> None:
    job_id = review.held_job(("t.csv", TABLE))
    r = review.checkers[0].post(f"/reviews/{job_id}/outputs/output-1",
                                {"decision": "maybe", "comment": "hmm hmm"})
    assert r.status_code == 400 and r.json["field"] == "decision"
    r = review.checkers[0].post(f"/reviews/{job_id}/outputs/output-1", {"decision": "approve"})
    assert r.status_code == 400 and r.json["field"] == "comment"
    assert review.decide(review.checkers[0], job_id, "nope.csv").status_code == 404


def test_rederivation_findings_reach_the_checkers_not_the_requester(review: Review) -> None:
    r = review.analyst.post("/jobs", {"permit_id": review.permit_id,
                                      "dataset_ids": [review.ds["id"]],
                                      "script": "print('y')\n"})
    job_id = r.json["id"]
    review.agent.post("/agent/tasks/next")
    finding = "count_mismatch: column n of row 2 is not the true count"
    r = review.agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "awaiting_review", "rows_read": 500, "bytes_read": 9000,
        "input_sha256": "a" * 64, "runner_image": "img", "outputs": [{
            "name": "t.csv", "sha256": hashlib.sha256(TABLE).hexdigest(),
            "bytes": len(TABLE), "decision": "pending_review", "reasons": ["held"],
            "findings": [finding], "content_b64": base64.b64encode(TABLE).decode()}]})
    assert r.status_code == 200, r.json
    seen = review.checkers[0].get(f"/reviews/{job_id}").json
    assert seen["outputs"][0]["findings"] == ["held", finding]
    assert finding not in str(review.analyst.get(f"/jobs/{job_id}").json)
