"""Red team, tenth pass: what the script route's release trusts after the checks.

Same convention as ``test_redteam_9.py``: each test is an attack that computes what it
learns (``recovered``) and ends by asserting the defence. A test without a ``leak``
marker asserts a defence that holds (fixed here, or found sound). These run at the unit
level: the checks attacked are pure functions of the script's table and the input.

Findings:

* R10-1 (high, script route, automatic release; fixed): a verified table leaves as the
  platform renders it (``containers.rederive.render``), but the renderer read the
  table's header again by its own rule: every input column whose name is in the header
  was a key. The re-derivation skips the count column and resolves one input column per
  lower-cased name. So where the dataset has a field named ``count`` or ``n`` (any case:
  field names are ``[A-Za-z_][A-Za-z0-9_]*``), a table ``sex,count`` verified (the count
  column holds true counts) and was released as ``sex,count,n`` with, per row, the
  *first record's raw value* of the input's ``count`` field; no threshold, rare-value or
  dominance rule saw it. The same with two fields whose names differ only in case
  (``Age`` and ``age``: the re-derivation groups by one, the renderer printed the other's
  first value per group), and with a field named like a statistic (``sum_cost`` beside
  ``cost``: a key for the re-derivation, and also ``sum`` of ``cost`` for the renderer,
  released without the nk, p% or partition rules). Fixed: the renderer takes its keys
  and statistics from the re-derivation's own reading of the header
  (:func:`containers.rederive.layout`), so nothing leaves that was not verified.
* R10-2 (low, covert channel; fixed): a rendered table kept the file-level checks' note
  that rows below k were suppressed. The script chooses whether its file holds such a
  row (a count of 0 adds nothing to the sum the checks bound), so the note was one bit
  a table, after reading the data. A rendered table now carries no such note.
* R10-3 (medium, script route; fixed): keys are grouped by their canonical spelling (a
  float's repr), and the renderer wrote the first record's spelling. 19-digit numbers
  (card or account numbers not declared identifiers) one float apart are one group of
  k or more, and the row carried one person's exact number. A key spelled several ways
  in its group is now written canonically.
* R10-4 (medium, script route; fixed): class disclosure was checked on key columns only.
  ``ward,n,mean_hiv`` with a mean of 1 (or a std of 0, or a sum equal to the count)
  says every patient of the ward is positive; the same as a frequency table by ward and
  flag is class disclosure, and the statistics route flags a magnitude cell whose
  contributors all hold one value. Now a finding (``class_disclosure``), held for a
  person.
* R10-5 (medium, script route; fixed): the same through a margin. The records a table
  leaves out (groups below k) of a line were checked for their count, dominance and
  the partition rule, not for all holding one value: a line's total (another verified
  table) less its rows said every rare-diagnosis patient of a ward was positive. Now a
  ``complement`` finding (``containers.rederive_margins``).
* R10-6 (low, fail-open path; fixed): a script job prepared without its records'
  identities (``rowids.npy``: an agent upgraded between preparing and completing it)
  skipped the differencing audit and was released and recorded nowhere; the statistics
  route fails such a job. Its tables are now a ``differencing`` finding, for a person.

Tried and found sound (no test kept beyond the ones below): a count column that lies,
counts summing past the rows read, a zero or small row carrying text, a BOM or padded
header, embedded newlines and quoting in keys (the table is rendered again), numbers
written with 15 digits or as text (the value leaves recomputed to 7 significant digits),
keys not in the input, statistics of a group of fewer than k holders, rows left out
whose total less the rows gives them (``complement``), more than ten outputs, file
names (released tables are ``table-<i>``, others by position), the exit status (the
provider's only), numbers the input spells so that the re-derivation and the renderer
parse them differently (the agent's schema check parses numbers as the renderer does).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd

from authz.states import JobState
from authz.wire import RunReport, RunTask
from compute import statistics
from containers import jobdir, runjob
from containers.audit_store import AuditStore
from containers.datasets import canonical
from containers.executor import Limits
from containers.rederive import rederive_outputs
from containers.runspec import RunResult
from sandbox.demo_data import FIELDS, hospital_table

POLICY = statistics.policy_for(10, None)


def _episodes(n: int = 200, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "sex": rng.choice(["F", "M"], n),
        "cost": np.round(rng.gamma(4.0, 900.0, n), 2),
        # A per-person figure the provider named "count" (prescriptions, visits): every
        # value distinct, each one person's.
        "count": rng.permutation(np.arange(1000, 1000 + n)),
    }).astype(str)


def _released(header: list[str], rows: list[list[str]], frame: pd.DataFrame,
              types: dict[str, str]) -> pd.DataFrame | None:
    content = "\n".join(",".join(r) for r in [header, *rows]).encode()
    done = rederive_outputs([("t.csv", content)], frame, types, POLICY)[0]
    if done.findings or done.rendered is None:
        return None
    return pd.read_csv(io.BytesIO(done.rendered), dtype=str)


def test_an_input_field_named_count_is_not_rendered_as_a_key() -> None:
    """R10-1: ``sex,count`` with true counts re-derives; the rendered table must not carry
    the input's ``count`` field (a person's own figure)."""
    frame = _episodes()
    types = {"sex": "string", "cost": "number", "count": "integer"}
    sizes = frame.groupby("sex").size()
    released = _released(["sex", "count"], [[s, str(c)] for s, c in sizes.items()], frame,
                          types)
    assert released is not None  # an honest table of counts: it verifies
    secrets = set(frame["count"])
    recovered = {v for col in released.columns for v in released[col]} & secrets
    assert recovered == set()
    assert list(released.columns) == ["sex", "n"]


def test_fields_differing_only_in_case_render_only_the_verified_key() -> None:
    """R10-1: with fields ``Age`` and ``age``, a table keyed ``age`` must not carry the
    first record's ``Age`` per group."""
    frame = _episodes()
    rng = np.random.default_rng(3)
    # ``Age`` first: the re-derivation resolves a lower-cased name to the last field.
    frame["Age"] = [str(v) for v in rng.permutation(np.arange(5000, 5000 + len(frame)))]
    frame["age"] = rng.choice(["30", "40"], len(frame))
    frame = frame.drop(columns=["count"])
    types = {"sex": "string", "cost": "number", "age": "integer", "Age": "integer"}
    sizes = frame.groupby("age").size()
    released = _released(["age", "n"], [[a, str(c)] for a, c in sizes.items()], frame, types)
    assert released is not None
    recovered = {v for col in released.columns for v in released[col]} & set(frame["Age"])
    assert recovered == set()


def test_a_field_named_like_a_statistic_releases_no_unchecked_sum() -> None:
    """R10-1: a field ``sum_cost`` beside ``cost`` is a key to the re-derivation; the
    rendered table must not add a sum of ``cost`` that no rule checked."""
    frame = _episodes().drop(columns=["count"])
    rng = np.random.default_rng(4)
    frame["sum_cost"] = rng.choice(["1", "2"], len(frame))
    # One record dominates group 1's costs: a released sum would fail nk.
    frame.loc[frame.index[frame.sum_cost == "1"][0], "cost"] = "90000000"
    types = {"sex": "string", "cost": "number", "sum_cost": "integer"}
    sizes = frame.groupby("sum_cost").size()
    released = _released(["sum_cost", "n"], [[s, str(c)] for s, c in sizes.items()], frame,
                         types)
    assert released is not None
    assert list(released.columns) == ["sum_cost", "n"]


def _script_run(root: Path, table: pd.DataFrame, audit: AuditStore | None = None,
                drop_ids: bool = False) -> RunReport:
    """A script job under a permit of automatic release whose script wrote ``table``
    (``audit``: the provider's audit store; ``drop_ids``: prepared as by an agent that
    wrote no record identities)."""
    (root / "data").mkdir()
    hospital_table(3, 600, "P").to_csv(root / "data" / "episodes.csv", index=False)
    task = RunTask.model_validate({
        "job_id": "job_1", "kind": "script", "permit_id": "pmt_1", "requester_id": "req_1",
        "script_b64": base64.b64encode(b"pass\n").decode(), "script_sha256": "0" * 64,
        "min_cell_count": 10, "timeout_s": 60, "script_release": "automatic",
        "datasets": [{"id": "ds_1", "code": "episodes", "provider_id": "prov_1",
                      "format": "csv", "location": "episodes.csv",
                      "fields": [f for f in FIELDS if f["name"] in ("sex", "cost")]}]})
    job_dir = root / "work" / "job_1"
    jobdir.prepare(task, job_dir, lambda _: [root / "data"], "img", Limits(), audit)
    if drop_ids:
        (job_dir / jobdir.ROW_IDS).unlink()
    out = job_dir / "out"
    out.mkdir()
    table.to_csv(out / "t.csv", index=False)
    result = RunResult("job_1", 0, False, False, b"", b"", False, False, out, None, None,
                       None)
    return runjob.report(task, job_dir, result, "img", None, audit=audit)


def test_a_released_tables_notes_are_not_the_scripts_choice(tmp_path: Path) -> None:
    """R10-2: whether the script's file held a row with a count below k is the script's
    choice (it can make it depend on the data); it must not show on a released table."""
    frame = hospital_table(3, 600, "P")
    honest = frame.groupby("sex").size().rename("n").reset_index()
    marked = pd.concat([honest, pd.DataFrame({"sex": ["X"], "n": [0]})])  # a count 0
    seen = []
    for i, table in enumerate((honest, marked)):
        (tmp_path / str(i)).mkdir()
        report = _script_run(tmp_path / str(i), table)
        assert report.state == JobState.RELEASED
        seen.append([(o.name, o.reasons) for o in report.outputs])
    recovered = seen[0] != seen[1]  # one bit a table, chosen by the script
    assert not recovered


def test_a_key_of_long_numbers_does_not_render_one_records_spelling() -> None:
    """R10-3: keys are matched and grouped by their canonical spelling (a float's repr,
    so ``12.50`` in a table is ``12.5`` in the input); 19-digit numbers (a card number
    not declared an identifier) that differ past the 17th digit are one group of k or
    more, and the row was rendered with its first record's raw spelling: one person's
    exact number."""
    rng = np.random.default_rng(1)
    n = 200
    cards = [str(6222000000000000000 + int(v)) for v in rng.integers(10**9, 10**12, n)]
    for i in range(12):  # twelve cards one float apart at most
        cards[i] = str(6222000012345678100 + int(rng.integers(0, 64)))
    frame = pd.DataFrame({"sex": rng.choice(["F", "M"], n), "card": cards}).astype(str)
    types = {"sex": "string", "card": "string"}
    sizes = frame.groupby(frame.card.map(canonical)).size()
    big = sizes[sizes >= 10]
    assert len(big) == 1  # the twelve are one group to the re-derivation
    released = _released(["card", "n"], [[c, str(s)] for c, s in big.items()], frame, types)
    assert released is not None
    recovered = set(released["card"]) & set(cards)
    assert recovered == set()


def test_a_statistic_every_contributor_shares_is_class_disclosure() -> None:
    """R10-4: by ward and a 0/1 column as two keys, a ward all of whose patients are
    positive is class disclosure; the same fact as a mean of 1 (or a std of 0, or a sum
    equal to the count) was released automatically. The statistics route flags a
    magnitude cell whose contributors all hold one value."""
    rng = np.random.default_rng(1)
    n = 300
    ward = rng.choice(["A", "B", "C"], n)
    positive = np.where(ward == "A", 1, rng.integers(0, 2, n))
    frame = pd.DataFrame({"ward": ward, "hiv": positive}).astype(str)
    types = {"ward": "string", "hiv": "integer"}
    typed = frame.assign(hiv=frame.hiv.astype(int))
    for stat in ("mean", "sum", "std"):
        t = typed.groupby("ward").hiv.agg(n="size", value=stat).reset_index()
        rows = [[w, str(c), f"{v:.6f}"] for w, c, v in t.itertuples(index=False)]
        released = _released(["ward", "n", f"{stat}_hiv"], rows, frame, types)
        recovered = released is not None  # every patient of ward A is positive
        assert not recovered, stat


def test_left_out_records_all_holding_one_value_is_class_disclosure() -> None:
    """R10-5: ward A's patients with rare diagnoses (groups below k, left out of a table
    by ward and diagnosis; twelve in all, so no ``complement`` count finding) are all
    positive. The table's ward-A rows and ward A's total (a table by ward) differ by
    twelve records and twelve positives: everyone of them has the flag, as a cell of
    the statistics route's ``Other (rare)`` bucket would have said (class disclosure)."""
    rng = np.random.default_rng(5)
    n = 400
    common = pd.DataFrame({"ward": rng.choice(["A", "B"], n),
                           "diagnosis": rng.choice(["D1", "D2", "D3"], n),
                           "hiv": rng.integers(0, 2, n)})
    rare = pd.DataFrame({"ward": ["A"] * 12 + ["B"] * 12,
                         "diagnosis": [f"R{i // 2}" for i in range(12)] * 2,
                         "hiv": [1] * 12 + [0] * 12})
    frame = pd.concat([common, rare]).astype(str).reset_index(drop=True)
    types = {"ward": "string", "diagnosis": "string", "hiv": "integer"}
    typed = frame.assign(hiv=frame.hiv.astype(int))
    by_both = typed.groupby(["ward", "diagnosis"]).hiv.agg(n="size", sum_hiv="sum")
    by_both = by_both[by_both.n >= 10].reset_index()
    by_ward = typed.groupby("ward").hiv.agg(n="size", sum_hiv="sum").reset_index()
    tables = [_released(list(t.columns), [[str(v) for v in r] for r in t.itertuples(
        index=False)], frame, types) for t in (by_both, by_ward)]
    recovered = None
    if tables[0] is not None and tables[1] is not None:
        rows = tables[0][tables[0].ward == "A"]
        total = tables[1][tables[1].ward == "A"].iloc[0]
        left = int(total.n) - rows.n.astype(int).sum()
        positive = float(total.sum_hiv) - rows.sum_hiv.astype(float).sum()
        recovered = (left, positive)
    assert recovered != (12, 12.0), "disclosed: every rare-diagnosis patient of A is positive"


def test_a_script_job_without_record_identities_is_not_released_unaudited(
        tmp_path: Path) -> None:
    """R10-6: the statistics route refuses a job prepared without the records' identities
    (an agent upgraded between preparing and completing it): never unaudited. The script
    route skipped the differencing audit and released its tables automatically, recorded
    nowhere, so a later total could be differenced against them unseen."""
    frame = hospital_table(3, 600, "P")
    table = frame.groupby("sex").size().rename("n").reset_index()
    report = _script_run(tmp_path, table, AuditStore(tmp_path / "a.sqlite"), drop_ids=True)
    recovered = report.state == JobState.RELEASED  # released, audited by no one
    assert not recovered
    assert any("differencing" in f for f in report.outputs[0].findings)
