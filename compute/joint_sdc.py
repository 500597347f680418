"""Provider-side magnitude rules of a joint part, applied before encryption.

The requester decrypts only the pooled sums, so every protection is the provider's, on its
own records: a provider cannot see the others'. Three rules add to the small-cell withdrawal
of ``compute.local_aggregate.withdraw_small_cells`` (which calls the first two):

* ``level_cells``: a column with few distinct values inside a set the job sums it over is
  a partition of that set. Its level counts are released implicitly: a block's ``n``, the
  column's sum and its sum of squares solve for the counts of up to three levels (two
  where only the sum is released); for a column's own sums and a grouped value, of any
  number of levels where the column is discrete (its values repeat: beside a histogram
  of it the sums solve for the counts the histogram lacks, R6-1). A level of 1..k-1
  records is a short cell (a flag one
  patient holds: the OLS intercept is that patient's outcome).
* ``dominant_records``: the nk-dominance and p% rules of the statistics route
  (``compute.sdc.policy``: (n, k) = (2, 0.9), p = 10 %) on each magnitude the provider
  contributes: ``|x|`` for a sum, squared deviations from the provider's mean for a sum of
  squares (a variance, a std, a moment/OLS/GLM block's diagonal), ``|dx dy|`` for a
  cross-product, per group cell for grouped statistics. The largest contributor of a
  dominated statistic is withdrawn from the whole job like a small cell's records. Every
  column the job sums gets both the ``|x|`` and the squared-deviation rule on its present
  values (``column_dominants``), whatever the job releases of it: withdrawal must not
  depend on the statistics asked, or a job without the std, keeping the record a job
  with it withdrew, would difference to that record.
* ``check_glm_round``: a model round is evaluated at coefficients the requester chose; at
  steep ones the IRLS weights concentrate on one record and ``X'WX``, ``X'Wz`` are that
  record's regressors and outcome. The round fails (rule ``glm_weight_dominance``) when one
  record holds more than 1/k of the weights or of ``|W z|``, or when an entry of ``X'WX``
  or ``X'Wz``, or the outcome's own part of ``X'Wz``, is dominated (nk, p%).
* ``check_block_levels``: a block's (moments, OLS, GLM) discrete column (its values
  repeat, ``partition_bound`` None) with a value that 1..k-1 of the records kept hold
  fails the provider's part (rule ``discrete_rare_value``, naming the column): the
  block's ``n``, sums and squares beside a histogram of the column give the rare value
  (R6-1e, the joint twin of the statistics route's R6-1c). Withdrawing those records
  instead would bias the fit without a word; the requester bands or top-codes the column.

Dominance is checked per provider, on that provider's contributions: a record dominating
its own provider's sum is withdrawn even when the pooled sum would dilute it, which is
conservative; but two providers' moderate contributions are never compared, and a record
that dominates only the pooled sum (a provider whose every record is small beside another
provider's outlier) is not detected, since no party sees the pooled contributions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from compute import joint_units
from compute.errors import InvalidInput
from compute.sdc.magnitude_cells import partition_bound
from compute.sdc.policy import DEFAULT_POLICY

Array = Any  # numpy arrays (the aggregation's own alias)
NK_RULES = tuple((r.n, r.k) for r in DEFAULT_POLICY.nk_rules)
P_PERCENT = DEFAULT_POLICY.p_percent
GLM_RULE = "glm_weight_dominance"
RARE_VALUE_RULE = "discrete_rare_value"
SUMMED = {"sum", "mean", "variance", "std"}
SQUARED = {"variance", "std"}
MOMENTS = {"covariance", "correlation"}


def _summed_sets(spec: dict[str, Any], col: Callable[[str], Array]
                 ) -> Iterator[tuple[str, list[str], int]]:
    """Each record set the job sums columns over: (name, columns, levels its sums solve)."""
    stats = set(spec["statistics"])
    if stats & SUMMED:
        for c in spec["columns"]:
            yield f"col.{c}", [c], 3 if stats & SQUARED else 2
    yield from _blocks(spec)


def _blocks(spec: dict[str, Any]) -> Iterator[tuple[str, list[str], int]]:
    """Each block (complete cases of several columns, squares and cross-products summed)."""
    stats = set(spec["statistics"])
    if stats & {"covariance", "correlation"}:
        yield "mom", list(spec["columns"]), 3
    if "ols" in stats:
        yield "ols", [spec["ols"]["y"], *spec["ols"]["x"]], 3
    if glm := spec.get("glm"):
        # A round at zero coefficients (Poisson: W = 1) releases n, sums and squares.
        yield "glm", [glm["y"], *glm["x"]], 3


def summed_columns(spec: dict[str, Any]) -> list[str]:
    """Every numeric column whose values some statistic of the job sums (a univariate sum,
    mean or moment, a block's column, a grouped value): the columns the job-independent
    dominance rule covers."""
    stats = set(spec["statistics"])
    out: list[str] = list(spec["columns"]) if stats & (SUMMED | MOMENTS) else []
    for _, cols, _ in _blocks(spec):
        out += cols
    if groups := spec.get("groups"):
        out += list(groups["values"])
    return list(dict.fromkeys(out))


def _present(col: Callable[[str], Array], cols: list[str]) -> Array:
    return ~np.isnan(np.column_stack([col(c) for c in cols])).any(axis=1)


def _group_values(spec: dict[str, Any], df: Any, col: Callable[[str], Array]
                  ) -> Iterator[tuple[str, Array, Array, int]]:
    """Each grouped value: (name, its values, group cell or -1 outside, cell count)."""
    from compute.local_aggregate import _group_cells  # one definition of a record's cell

    if groups := spec.get("groups"):
        cell, g = _group_cells(groups, df, col)
        for v in groups["values"]:
            x = col(v)
            yield f"grp.{v}", x, np.where(np.isnan(x), -1, cell), g + 1


def _levels(x: Array, inside: Array, most: int | None) -> Array | None:
    """Each record's level of ``x`` inside the set (-1 outside), or None with more levels
    than ``most`` (None: any number) or fewer than two."""
    values, code = np.unique(x[inside], return_inverse=True)
    if len(values) < 2 or (most is not None and len(values) > most):
        return None
    out = np.full(len(x), -1, dtype=np.int64)
    out[inside] = code.ravel()
    return out


def level_cells(spec: dict[str, Any], df: Any, col: Callable[[str], Array], k: int
                ) -> list[tuple[Array, Array, dict[str, Array]]]:
    """Partitions by the levels of few-valued columns, as ``_record_cells`` takes them:
    (cell index, records outside, key column codes for the common refinement). A column's
    own sums (``col.X``) and a grouped value are those of the statistics route's magnitude
    table, and take its rule: a discrete column (``partition_bound`` with threshold ``k``)
    is a partition whatever its number of values. A block's columns (moments, OLS, GLM)
    keep the bound of three: withdrawing the records of a regressor's or outcome's rare
    values from a model would bias the fit without a word (docs/joint-statistics.md); a
    discrete block column with more values is refused instead (``check_block_levels``)."""
    out: list[tuple[Array, Array, dict[str, Array]]] = []
    for name, cols, most in _summed_sets(spec, col):
        inside = _present(col, cols)
        for c in cols:
            x = col(c)
            bound: int | None = most
            if name.startswith("col.") and partition_bound(x) is None:
                bound = None
            code = _levels(x, inside, bound)
            if code is not None:
                out.append((code, code < 0, {c: code}))
    for _, x, cell, _cells in _group_values(spec, df, col):
        inside = cell >= 0
        code = _levels(x, inside, None if partition_bound(x) is None else 3)
        if code is not None:  # a partition of each group cell
            width = int(code.max()) + 1
            out.append((np.where(inside, cell * width + code, -1), ~inside, {}))
    return out


_BLOCK_NAMES = {"mom": "covariance/correlation", "ols": "ols", "glm": "glm"}


def check_block_levels(spec: dict[str, Any], col: Callable[[str], Array], kept: Array,
                       k: int, units: Array | None = None) -> None:
    """Fail the provider's part where a block (moments, OLS, GLM) reads a discrete column
    (``partition_bound`` of the provider's column None: its values repeat) in which some
    value is held by 1..k-1 of the block's complete cases among the records ``kept``.

    The block releases its ``n``, each column's sum and sum of squares (and X'X); beside a
    histogram or table of the column (another job's, whose cells are exact over the
    records each provider keeps there) they solve for the values the table lacks: a
    histogram withdraws one 99-year-old's bin, the OLS block keeps the record, and the
    block's count and sum of ages less the histogram's are that record and its age
    (R6-1e). Withdrawing the rare values' records from the block would bias the fit
    without a word, so the part fails, naming the column (a schema name, no figure of the
    data) and advising to band or top-code it. A column of two or three values (a flag)
    keeps ``level_cells``' withdrawal, which runs before and leaves no short value here.

    Provider-local, like every rule here: a value rare at one provider fails that
    provider's part even where the pooled count would reach k (conservative; no party
    sees the pooled counts). Holders are persons where ``units`` numbers them
    (:mod:`compute.joint_units`), records otherwise."""
    for name, cols, _most in _blocks(spec):
        inside = kept & _present(col, cols)
        for c in cols:
            x = col(c)
            if partition_bound(x) is not None:
                continue
            holders = joint_units.value_holders(x, inside, units)
            if ((holders > 0) & (holders < k)).any():
                raise InvalidInput(
                    f"{name}.{c}", RARE_VALUE_RULE,
                    f"the {_BLOCK_NAMES[name]} block reads column {c!r}, whose values "
                    "repeat (a discrete column), and some value of it is held by fewer "
                    "of this provider's records than the permit's minimum cell count: "
                    "beside a histogram or table of the column the block's sums would "
                    "give those records' values, so the provider withholds its part "
                    f"(rule {RARE_VALUE_RULE}). Band or top-code the column (age groups, "
                    "a top category) before modelling it")


def _dominated(contrib: Array, cells: Array, ncell: int) -> tuple[Array, Array]:
    """nk and p% per cell on non-negative contributions (records with cell -1 are out):
    the dominated cells, and the index of each one's largest contributor."""
    inside = np.flatnonzero(cells >= 0)
    c, v = cells[inside], contrib[inside]
    if ncell == 1:  # one cell (most statistics): the top few by partition, O(n), no sort
        return _dominated_one(v, inside)
    order = np.lexsort((-v, c))
    c, v, rec = c[order], v[order], inside[order]
    start = np.searchsorted(c, np.arange(ncell))
    rank = np.arange(len(c)) - start[c]

    def top(n: int) -> Array:
        return np.bincount(c[rank < n], v[rank < n], minlength=ncell)

    total = np.bincount(c, v, minlength=ncell)
    top1, top2 = top(1), top(2)
    hit = (top1 > 0) & (total - top2 < P_PERCENT * top1)
    for n, k in NK_RULES:
        hit |= (total > 0) & (top(n) >= k * total)
    cells_hit = np.flatnonzero(hit)
    return cells_hit, rec[(rank == 0) & hit[c]]


def _dominated_records(contrib: Array, cells: Array, ncell: int, units: Array | None
                       ) -> tuple[Array, Array]:
    """``_dominated`` on each person's summed contributions where ``units`` numbers the
    records' persons: the dominated cells, and every record of each one's largest
    contributor in it."""
    if units is None:
        return _dominated(contrib, cells, ncell)
    summed, person_cells, index = joint_units.per_person(contrib, cells, units)
    hit, leaders = _dominated(summed, person_cells, ncell)
    return hit, np.flatnonzero(np.isin(index, leaders))


def _hit(total: float, tops: Array) -> bool:
    """nk or p% on a cell's total and its largest contributions, largest first."""
    top1, top2 = float(tops[:1].sum()), float(tops[:2].sum())
    if top1 > 0 and total - top2 < P_PERCENT * top1:
        return True
    return total > 0 and any(float(tops[:n].sum()) >= k * total for n, k in NK_RULES)


def _dominated_one(v: Array, records: Array) -> tuple[Array, Array]:
    if not len(v):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    most = min(len(v), max(2, *(n for n, _ in NK_RULES)))
    tops = -np.sort(np.partition(-v, most - 1)[:most])
    if not _hit(float(v.sum()), tops):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.zeros(1, dtype=np.int64), records[[int(np.argmax(v))]]


def _cell_means(x: Array, cells: Array, ncell: int) -> Array:
    inside = cells >= 0
    n = np.bincount(cells[inside], minlength=ncell)
    s = np.bincount(cells[inside], x[inside], minlength=ncell)
    return np.divide(s, n, out=np.zeros(ncell), where=n > 0)[np.maximum(cells, 0)]


def column_dominants(spec: dict[str, Any], col: Callable[[str], Array], kept: Array,
                     units: Array | None = None) -> tuple[Array, set[tuple[int, ...]]]:
    """The column rule: for every column the job sums, on its present values among the
    records kept, both ``|x|`` and the squared deviations from its mean, whatever the job
    releases of it. A job asking only a sum therefore withdraws the record a job asking the
    std withdraws; a job's withdrawal does not tell which statistics it asked for."""
    out = np.zeros(len(kept), dtype=bool)
    seen: set[tuple[int, ...]] = set()
    for key, c in enumerate(summed_columns(spec)):
        x = col(c)
        cells = np.where(kept & ~np.isnan(x), 0, -1)
        dev = x - _cell_means(x, cells, 1)
        for rule, contrib in enumerate((np.abs(x), dev * dev)):
            hit, leaders = _dominated_records(np.nan_to_num(contrib), cells, 1, units)
            seen.update((-3, key, rule, int(i)) for i in hit)
            out[leaders] = True
    return out, seen


def dominant_records(spec: dict[str, Any], df: Any, col: Callable[[str], Array],
                     kept: Array, units: Array | None = None
                     ) -> tuple[Array, set[tuple[int, ...]]]:
    """The records to withdraw (each dominated statistic's largest contributor among the
    records kept) and an identity for each dominated statistic cell: the column rule
    (``column_dominants``), then each block's complete cases (its sums, squares and
    cross-products) and each grouped value's cells (``|x|`` and squared deviations). With
    ``units``, a person's records are summed and withdrawn together."""
    out, seen = column_dominants(spec, col, kept, units)

    def check(key: int, contrib: Array, cells: Array, ncell: int) -> None:
        hit, leaders = _dominated_records(np.nan_to_num(contrib), cells, ncell, units)
        seen.update((-2, key, int(i)) for i in hit)
        out[leaders] = True

    key = 0
    for _, cols, _most in _blocks(spec):
        inside = kept & _present(col, cols)
        cells = np.where(inside, 0, -1)
        dev = [col(c) - _cell_means(col(c), cells, 1) for c in cols]
        for i, c in enumerate(cols):
            check(key := key + 1, np.abs(col(c)), cells, 1)
            for j in range(i, len(cols)):
                check(key := key + 1, np.abs(dev[i] * dev[j]), cells, 1)
    for _, x, cell, ncell in _group_values(spec, df, col):
        cells = np.where(kept, cell, -1)
        check(key := key + 1, np.abs(x), cells, ncell)
        check(key := key + 1, (x - _cell_means(x, cells, ncell)) ** 2, cells, ncell)
    return out, seen


def check_glm_round(x: Array, y: Array, w: Array, z: Array, outcome_weight: Array,
                    min_cell_count: int, units: Array | None = None) -> None:
    """Fail a model round whose weights concentrate on few records (see the module
    docstring); the message names the rule, never a figure of the data.

    ``outcome_weight`` is d(W z)/dy per record: how much of each record's outcome its
    ``W z`` carries. At coefficients far from a record every other record's ``W z`` is a
    function of its regressors alone (``X'WX`` gives it), so the check is on the outcome's
    own share, ``|x_j| d |y|``, besides ``|W z|``. With ``units`` (one per record) the
    shares and contributions are each person's records summed."""
    n = len(w)
    if n == 0:
        return

    def persons(a: Array) -> Array:
        return joint_units.person_totals(a, units)

    cells = np.zeros(n if units is None else int(units.max()) + 1, dtype=np.int64)
    wz = np.abs(w * z)
    shares = [float(np.max(a) / s) for a in (persons(w), persons(wz))
              if (s := float(np.sum(a))) > 0]
    dominated = any(s > 1 / min_cell_count for s in shares)
    outcome = np.abs(outcome_weight * y)
    p = x.shape[1]
    for j in range(p):
        if dominated:
            break
        xw = np.abs(x[:, j] * w)
        entries = [xw * np.abs(x[:, m]) for m in range(j, p)]
        entries += [np.abs(x[:, j]) * wz, np.abs(x[:, j]) * outcome]
        dominated = any(_dominated(persons(e), cells, 1)[0].size for e in entries)
    if dominated:
        raise InvalidInput(
            "glm.beta", GLM_RULE,
            "this round's coefficients put most of the model weight (X'WX or X'Wz) on "
            "too few of a provider's records, which would release those records: the "
            "provider withholds its part of this round (rule glm_weight_dominance)")
