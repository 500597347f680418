"""Secondary (complementary) cell suppression on a table with all its margins.

A *line* is every cell along one dimension with the others fixed, plus its total (the
margin slot along that dimension); margins of margins are lines too. Each line is one
additive equation ``sum(interior) = total``. A suppressed cell alone in its line is the
total minus the released cells. If every hidden cell of a line is zero (no contributors)
while its total is released, non-negativity pins them all to zero. And where the policy
publishes zeros (``zeros`` allow or flag) an attacker knows which cells are empty, so a
hidden zero is no cover: one hidden non-zero cell plus hidden zeros gives that cell
away. Where the policy hides zeros, an empty cell is as uncertain as any hidden cell.
So a line is unsafe when it has exactly one hidden cell, or (zeros published) exactly
one hidden non-zero cell, or hidden cells that are all zero beside a released total.

The fix, by the classical iterative heuristic (Cox 1980, JASA 75:377-385; Hundepool et
al. 2012, ch. 4 on cell suppression), hides one more cell in every unsafe line (a non-zero
one where zeros are the problem) and repeats until no line is unsafe. Candidates,
cheapest first: non-zero cells before zero cells, then cells that are totals along fewer
dimensions, then the smallest cost (the cell's record count). In 2-D tables a second
pass also closes combinations of lines (see :func:`bridges`).

What it guarantees: no hidden cell can be computed from a single line equation, with
non-negativity, and in 2-D tables from any linear combination of lines. What it does
not: in 3-D and 4-D tables several lines combined can still determine a hidden cell, and
linear programming over all equations and bounds can narrow a hidden cell to an interval
(even a point); optimal or audited suppression (Fischetti & Salazar-González 2001;
τ-ARGUS's modular and optimal methods) is out of scope.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Mask = np.ndarray[Any, np.dtype[np.bool_]]


def _margin_depth(shape: tuple[int, ...]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """For each cell, along how many dimensions it is a total."""
    depth = np.zeros(shape, dtype=np.int64)
    for axis, n in enumerate(shape):
        along = np.zeros(n, dtype=np.int64)
        along[-1] = 1
        depth += along.reshape([n if a == axis else 1 for a in range(len(shape))])
    return depth


def _is_total_along(shape: tuple[int, ...], axis: int) -> Mask:
    flag = np.zeros(shape[axis], dtype=bool)
    flag[-1] = True
    return flag.reshape([shape[axis] if a == axis else 1 for a in range(len(shape))])


def unsafe_lines(hidden: Mask, zero: Mask, public_zero: Mask, axis: int
                 ) -> tuple[Mask, Mask]:
    """Per line (``axis`` removed): (unsafe, needs a non-zero complement).

    ``zero``: cells with nothing in them; ``public_zero``: those an attacker knows empty.
    """
    n_hidden = hidden.sum(axis=axis)
    n_cover = (hidden & ~public_zero).sum(axis=axis)
    n_nonzero = (hidden & ~zero).sum(axis=axis)
    total_hidden = np.take(hidden, -1, axis=axis)
    zero_sum = (n_nonzero == 0) & (n_hidden >= 1) & ~total_hidden
    needs_nonzero = zero_sum | ((n_cover == 1) & (n_hidden > 1))
    return (n_hidden == 1) | (n_cover == 1) | zero_sum, needs_nonzero


def _line_fixpoint(hidden: Mask, rank: np.ndarray[Any, np.dtype[np.int64]],
                   zero: Mask, public_zero: Mask) -> None:
    """Hide one more cell in every unsafe line, in place, until no line is unsafe."""
    shape = hidden.shape
    never = np.int64(hidden.size)
    changed = True
    while changed:
        changed = False
        for axis in range(hidden.ndim):
            if shape[axis] < 2:  # no categories along this axis: nothing to recompute
                continue
            unsafe, needs_nonzero = unsafe_lines(hidden, zero, public_zero, axis)
            if not unsafe.any():
                continue
            key = np.where(hidden, never, rank)
            # Another zero cell would add no doubt where zeros are the problem: take a
            # non-zero one, or the total (which removes the equation); failing both (a
            # line of zeros), any cell.
            nonzero = np.where(zero & ~_is_total_along(shape, axis), never, key)
            nz_pick = np.expand_dims(nonzero.argmin(axis=axis), axis)
            has_nz = np.take_along_axis(nonzero, nz_pick, axis).squeeze(axis) < never
            key = np.where(np.expand_dims(needs_nonzero & has_nz, axis), nonzero, key)
            pick = np.expand_dims(key.argmin(axis=axis), axis)
            ok = unsafe & (np.take_along_axis(key, pick, axis).squeeze(axis) < never)
            if not ok.any():
                continue
            current = np.take_along_axis(hidden, pick, axis)
            np.put_along_axis(hidden, pick, current | np.expand_dims(ok, axis), axis)
            changed = True


def bridges(hidden: Mask) -> list[tuple[int, int]]:
    """Hidden cells of a 2-D margined table that some combination of lines determines.

    Rows (margin row included) and columns are the vertices of a bipartite graph, hidden
    cells its edges, each line an equation at a vertex. After flipping the signs of the
    margin cells and of the margin lines' equations every edge has coefficient +1 at both
    ends, so the solutions differ by signed cycles: a hidden cell is determined by the
    released cells exactly when it lies on no cycle, i.e. it is a bridge. Iterative
    Tarjan (one pass over the hidden cells).
    """
    n_rows, n_cols = hidden.shape
    edges = [(int(i), int(j)) for i, j in zip(*np.nonzero(hidden), strict=True)]
    adj: list[list[tuple[int, int]]] = [[] for _ in range(n_rows + n_cols)]
    for e, (i, j) in enumerate(edges):
        adj[i].append((n_rows + j, e))
        adj[n_rows + j].append((i, e))
    disc = [-1] * (n_rows + n_cols)
    low = [0] * (n_rows + n_cols)
    timer = 0
    found: list[tuple[int, int]] = []
    for root in range(n_rows + n_cols):
        if disc[root] != -1 or not adj[root]:
            continue
        disc[root] = low[root] = timer
        timer += 1
        stack = [(root, -1, iter(adj[root]))]
        while stack:
            v, via, it = stack[-1]
            for w, e in it:
                if e == via:
                    continue
                if disc[w] == -1:
                    disc[w] = low[w] = timer
                    timer += 1
                    stack.append((w, e, iter(adj[w])))
                    break
                low[v] = min(low[v], disc[w])
            else:
                stack.pop()
                if stack:
                    parent = stack[-1][0]
                    low[parent] = min(low[parent], low[v])
                    if low[v] > disc[parent]:
                        found.append(edges[via])
    return found


def _side(hidden: Mask, bridge: tuple[int, int]) -> tuple[set[int], set[int]]:
    """Rows and columns reachable from the bridge's row without crossing the bridge."""
    n_rows = hidden.shape[0]
    rows: set[int] = {bridge[0]}
    cols: set[int] = set()
    todo = [bridge[0]]
    while todo:
        v = todo.pop()
        if v < n_rows:
            nxt = [(n_rows + int(j)) for j in np.flatnonzero(hidden[v])
                   if (v, int(j)) != bridge]
        else:
            nxt = [int(i) for i in np.flatnonzero(hidden[:, v - n_rows])
                   if (int(i), v - n_rows) != bridge]
        for w in nxt:
            seen = rows if w < n_rows else cols
            key = w if w < n_rows else w - n_rows
            if key not in seen:
                seen.add(key)
                todo.append(w)
    return rows, cols


def _close_bridge(hidden: Mask, rank: np.ndarray[Any, np.dtype[np.int64]],
                  bridge: tuple[int, int]) -> tuple[int, int] | None:
    """The cheapest released cell joining the two sides of a bridge: hiding it puts the
    bridge on a cycle. After the line fixpoint each side holds a row and a column (no
    line has a single hidden cell), so one exists, except in a degenerate table with a
    dimension without categories (lines of one cell, holding zero): then None."""
    a_rows, a_cols = _side(hidden, bridge)
    side_a_row = np.zeros(hidden.shape[0], dtype=bool)
    side_a_row[list(a_rows)] = True
    side_a_col = np.zeros(hidden.shape[1], dtype=bool)
    side_a_col[list(a_cols)] = True
    # Side B is what the bridge's column reaches (walked on the transpose, so the sets
    # come back as columns, rows). Other components would not close a cycle.
    b_cols, b_rows = _side(hidden.T, (bridge[1], bridge[0]))
    side_b_row = np.zeros(hidden.shape[0], dtype=bool)
    side_b_row[list(b_rows)] = True
    side_b_col = np.zeros(hidden.shape[1], dtype=bool)
    side_b_col[list(b_cols)] = True
    joins = (np.outer(side_a_row, side_b_col) | np.outer(side_b_row, side_a_col)) & ~hidden
    key = np.where(joins, rank, np.int64(hidden.size))
    flat = int(key.argmin())
    if key.flat[flat] == hidden.size:
        return None
    return flat // hidden.shape[1], flat % hidden.shape[1]


def protect(primary: Mask, cost: np.ndarray[Any, Any], zero: Mask,
            zeros_public: bool) -> Mask:
    """Hidden cells after secondary suppression, on the full (margined) arrays.

    ``cost`` ranks candidates (lower is hidden first); ``zero`` marks cells with nothing
    in them; ``zeros_public``: the policy releases zeros, so an attacker knows them.
    For 2-D tables, hidden cells that a combination of lines determines (bridges) get a
    complement too, until none is left.
    """
    hidden = primary.copy()
    shape = hidden.shape
    size = hidden.size
    if size == 0 or hidden.ndim == 0:
        return hidden
    public_zero = zero if zeros_public else np.zeros(shape, dtype=bool)
    order = np.lexsort((np.asarray(cost, dtype=np.float64).ravel(),
                        _margin_depth(shape).ravel(), zero.ravel()))
    rank = np.empty(size, dtype=np.int64)
    rank[order] = np.arange(size, dtype=np.int64)
    rank = rank.reshape(shape)
    while True:
        _line_fixpoint(hidden, rank, zero, public_zero)
        if hidden.ndim != 2:
            return hidden
        closing = next((c for c in (_close_bridge(hidden, rank, b) for b in bridges(hidden))
                        if c is not None), None)
        if closing is None:
            return hidden
        hidden[closing] = True


def protect_held(primary: Mask, held: Mask, cost: np.ndarray[Any, Any], zero: Mask,
                 zeros_public: bool) -> Mask:
    """Like :func:`protect`, with ``held`` cells (flagged: not released until a person
    has looked) protected too, so none comes back as its margin less its siblings.

    Returns the hidden cells: a held cell is among them only where the suppressed cells
    alone need it as a complement (as :func:`protect` would choose it); otherwise it
    keeps its own status, and its value is withheld by whoever releases the table.
    Secondary suppression runs twice only when some held cell is not already hidden.
    """
    hidden = protect(primary, cost, zero, zeros_public)
    extra = held & ~hidden
    if not extra.any():
        return hidden
    return protect(hidden | extra, cost, zero, zeros_public) & ~extra
