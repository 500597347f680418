"""An output not released is the requester's (and the ledger's) by position only: no name,
digest or size the script chose, until a reviewer releases it (authz/output_names.py)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from authz import output_names
from authz.models import JobOutput
from authz.states import OutputDecision
from ledger.entry import check_run_finished
from tests.api.test_people import ledger
from tests.api.test_release_review import TABLE, Review

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
EMPTY = hashlib.sha256(b"").hexdigest()
# Names a script could choose to carry a value, and the digests of what it wrote.
NAMES = ("cost_c91_1234567.csv", "n_hiv_3.png")
SECRETS = (*NAMES, "1234567", hashlib.sha256(TABLE).hexdigest(),
           hashlib.sha256(PNG).hexdigest())


@pytest.fixture
def review(make_party: Any, make_agent: Any, make_person: Any) -> Review:
    return Review(make_party, make_agent, make_person)


def _job_entries(review: Review, job_id: str) -> list[dict[str, Any]]:
    return [e for e in ledger(review.regulator) if e["body"].get("job_id") == job_id]


# Naming is the same on either database (it happens before the row is written).
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@SQLITE
def test_a_held_output_is_shown_by_position_to_the_requester_and_the_ledger(
        review: Review) -> None:
    job_id = review.held_job((NAMES[0], TABLE), (NAMES[1], PNG))
    seen = review.analyst.get(f"/jobs/{job_id}").json
    assert [(o["name"], o["sha256"], o["bytes"]) for o in seen["outputs"]] == [
        ("output-1", EMPTY, 0), ("output-2", EMPTY, 0)]
    listed = review.analyst.get("/jobs").json["jobs"]
    entries = _job_entries(review, job_id)
    assert {e["kind"] for e in entries} >= {"run.finished", "output.pending_review"}
    for shown in (seen, listed, entries):
        text = json.dumps(shown)
        assert not [s for s in SECRETS if s in text]
    # Still a valid data-flow audit record for the regulator's verifier.
    check_run_finished(next(e for e in entries if e["kind"] == "run.finished")["body"])
    # The checkers see the file as the script wrote it, under both names.
    material = review.checkers[0].get(f"/reviews/{job_id}").json["outputs"]
    assert [(o["name"], o["script_name"], o["sha256"]) for o in material] == [
        ("output-1", NAMES[0], hashlib.sha256(TABLE).hexdigest()),
        ("output-2", NAMES[1], hashlib.sha256(PNG).hexdigest())]
    # The requester's justification names the output by position; its own name is no
    # key (else a 404 or a 200 would say which name the script chose).
    why = {"justification": "Counts by diagnosis, ten or more each."}
    assert review.analyst.post(f"/jobs/{job_id}/outputs/{NAMES[0]}/justification",
                               why).status_code == 404
    assert review.analyst.post(f"/jobs/{job_id}/outputs/output-1/justification",
                               why).status_code == 200


@SQLITE
def test_released_by_review_it_keeps_its_position_and_shows_its_digest(
        review: Review) -> None:
    job_id = review.held_job((NAMES[0], TABLE), (NAMES[1], PNG))
    assert review.decide(review.checkers[0], job_id, "output-1").status_code == 200
    assert review.decide(review.checkers[0], job_id, "output-2",
                         "reject").status_code == 200
    seen = review.analyst.get(f"/jobs/{job_id}").json
    assert seen["state"] == "released"
    assert [(o["name"], o["sha256"], o["bytes"], o["decision"]) for o in seen["outputs"]] == [
        ("output-1", hashlib.sha256(TABLE).hexdigest(), len(TABLE), "released"),
        ("output-2", EMPTY, 0, "rejected")]
    assert review.analyst.get(f"/jobs/{job_id}/outputs/output-1").data == TABLE
    entries = _job_entries(review, job_id)
    completed = next(e for e in entries if e["kind"] == "review.completed")["body"]
    assert completed["outputs"][0]["sha256"] == hashlib.sha256(TABLE).hexdigest()
    # The rejected output's name and digest never reached the requester or the ledger.
    text = json.dumps([seen, entries])
    assert not [s for s in (*NAMES, hashlib.sha256(PNG).hexdigest()) if s in text]


def _output(name: str, decision: OutputDecision) -> JobOutput:
    return JobOutput(name=name, sha256="b" * 64, size=99, decision=decision, reasons=[])


def test_positional_names_by_decision() -> None:
    outs = [_output("table-1.csv", OutputDecision.RELEASED),
            _output("v_42.json", OutputDecision.PENDING_REVIEW),
            _output("odd-name", OutputDecision.PENDING_REVIEW),
            _output("chart.png", OutputDecision.WITHHELD),
            _output("x_7.csv", OutputDecision.BLOCKED),
            # A script naming its file after another position changes nothing.
            _output("output-9", OutputDecision.PENDING_REVIEW)]
    output_names.name_by_position(outs)
    assert [(o.name, o.script_name) for o in outs] == [
        ("table-1.csv", None), ("output-2", "v_42.json"), ("output-3", "odd-name"),
        ("output-4", "chart.png"), ("output-5", "x_7.csv"), ("output-6", "output-9")]
    # Held content stays (the checkers' digest); what never reached the controller goes.
    assert [(o.sha256, o.size) for o in outs] == [
        ("b" * 64, 99), ("b" * 64, 99), ("b" * 64, 99), (EMPTY, 0), (EMPTY, 0),
        ("b" * 64, 99)]
    assert [output_names.shown(o)["sha256"] for o in outs] == ["b" * 64] + [EMPTY] * 5
    assert [output_names.agents_name(o) for o in outs][:2] == ["table-1.csv", "v_42.json"]


def test_unreleased_names_carry_no_kind() -> None:
    """A script chooses each file's kind and their order: a held table, a held document
    and an always-withheld image must look the same in the names, or the sequence of
    kinds spells a value before anyone has reviewed the run."""
    kinds = {".csv": OutputDecision.PENDING_REVIEW, ".json": OutputDecision.PENDING_REVIEW,
             ".png": OutputDecision.PENDING_REVIEW, ".svg": OutputDecision.WITHHELD}
    for a, b in [(".csv", ".json"), (".csv", ".svg"), (".png", ".json")]:
        one = [_output(f"f{a}", kinds[a]), _output(f"g{b}", kinds[b])]
        two = [_output(f"f{b}", kinds[b]), _output(f"g{a}", kinds[a])]
        output_names.name_by_position(one)
        output_names.name_by_position(two)
        assert [o.name for o in one] == [o.name for o in two] == ["output-1", "output-2"]


@SQLITE
def test_released_by_review_it_is_served_as_the_kind_the_checks_verified(
        review: Review) -> None:
    """``output-<i>`` has no extension: the download's type and file name are its checked
    kind's (the agent's name of the file), not a guess from the positional name."""
    job_id = review.held_job((NAMES[0], TABLE), (NAMES[1], PNG), ("v_1.json", b"{}"))
    for name in ("output-1", "output-2", "output-3"):
        assert review.decide(review.checkers[0], job_id, name).status_code == 200
    served = {name: review.analyst.get(f"/jobs/{job_id}/outputs/{name}")
              for name in ("output-1", "output-2", "output-3")}
    assert [(r.mimetype, r.headers["Content-Disposition"], r.headers["X-Content-Type-Options"])
            for r in served.values()] == [
        ("text/csv", 'attachment; filename="output-1.csv"', "nosniff"),
        ("image/png", 'attachment; filename="output-2.png"', "nosniff"),
        ("application/json", 'attachment; filename="output-3.json"', "nosniff")]
    assert served["output-2"].data == PNG


def test_a_download_has_its_checked_kind_or_none() -> None:
    from sandbox import downloads

    def kind(name: str, script_name: str | None = None) -> str | None:
        out = _output(name, OutputDecision.RELEASED)
        out.script_name = script_name
        return output_names.checked_kind(out)

    assert [kind("table-1.csv"), kind("output-2", "chart.png"), kind("output-3", "v.json"),
            kind("output-4", "report.pdf"), kind("output-5", "chart.PNG"),
            kind("notes")] == ["csv", "png", "json", None, None, None]
    assert downloads.media_type(None) == "application/octet-stream"
    assert [downloads.file_name(n, k) for n, k in [
        ("output-2", output_names.OutputKind.PNG), ("table-1.csv", output_names.OutputKind.CSV),
        ("output-4", None), ('..a"b;c/d.csv', output_names.OutputKind.CSV), ("...", None)]] \
        == ["output-2.png", "table-1.csv", "output-4", "a_b_c_d.csv", "output"]
