"""Private set intersection between two providers keyed by an identifier column.

Scenario 3: a bank verifies how many of a company register's firms (the tax bureau's
unified credit codes) also file social insurance, and per district how many employees they
declare, without any party seeing the other's codes or learning which firms matched.

Protocol: ECDH-PSI with cardinality only (OpenMined ``openmined-psi`` 2.0.6; Huberman,
Franklin & Hogg 1999; the compressed-set variant of Angelou et al. 2020). One provider's
agent is the *client* (it holds the identifier set A), the other's the *server* (identifiers
B with a category and an integer value per identifier):

1. The server draws one fresh key ``b_g`` per group g of its identifiers that the spec
   needs and publishes a setup message per group: ``{H(id)^b_g}`` in a Golomb-compressed
   set (GCS).
2. The client draws ``a`` and sends ``{H(id)^a}`` for its set (the *request*).
3. The server answers the request once per group: ``{H(id)^(a b_g)}``, sorted by the
   library (the *responses*).
4. The client strips ``a`` from each response and counts how many of its points fall in
   that group's setup set: ``|A ∩ B_g|``. The sorting hides which of its identifiers
   matched.

One key per group, not one for all: a GCS hashes an element to ``SHA-256(point) mod R``
with ``R = max(|A|, |B_g|) / FPR``, and every group is padded to the same size, so under
one key the same identifier would be the same hash in every setup set; the client, which
decodes the sets to test membership, could then list each server record's groups, i.e.
its category and value bits. Under ``b_g`` the groups' points, hashes and responses are
unrelated. The cost: the server answers the request once per group (time and response
bytes grow with the number of groups).

The groups: ``all``, ``cat.i`` (server identifiers of category i) and, for sums,
``bit.j`` / ``cat.i.bit.j`` (identifiers whose value has bit j set): the sum of the values
over the intersection is ``sum_j 2^j |A ∩ B_bit j|``, of the values rounded to integers and
clipped to ``[0, 2^PSI_VALUE_BITS - 1]`` (never refused: see ``server_rows``; the width
is the platform's, never the requester's). A sum whose register group is dominated (nk,
p%) is withheld: compute/psi_dominance.py. The controller relays
the messages only (blinded points and compressed sets); the server learns ``|A|``; the
client learns, per group, ``|A ∩ B_g|`` and the padded group size (``|B|`` for all), and
nothing that links one group to another. It releases only the cardinality, the
per-category counts and the sums, each suppressed below the minimum count, and more where
a hidden count would be the cardinality less the shown ones (``shown_cells``). Each
cardinality is exact except with probability ``FPR`` (the GCS's false-positive rate over
the request).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from private_set_intersection.python import (
    DataStructure,
    Request,
    Response,
    ServerSetup,
    client,
    server,
)

from compute.errors import InvalidInput, PolicyViolation
from compute.psi_dominance import WITHHELD, dominated

FPR = 1e-9
# Every PSI sum takes its values as integers of this many bits, whatever the job: a width
# the requester chose would let two releases of one intersection at two widths differ by
# the excess of the values clipped at the narrower one (a large value, exactly). With one
# width a value at or above 2^16 is clipped alike in every release. 16 bits cover head
# counts and most per-firm counts; each bit costs one group per category (see groups()).
PSI_VALUE_BITS = 16
MAX_CATEGORIES = 64
Category = str | int | float


@dataclass(frozen=True)
class PSISpec:
    id_column: str
    category_column: str | None = None
    categories: tuple[Category, ...] = ()
    value_column: str | None = None
    value_bits: int = PSI_VALUE_BITS

    def groups(self) -> list[str]:
        """Every server-side group whose intersection size the client learns: with sums,
        each sum's value bits and its withheld marker (compute/psi_dominance.py)."""
        out = ["all"]
        cats = [f"cat.{i}" for i in range(len(self.categories))]
        out += cats
        if self.value_column is not None:
            for prefix in ["", *(f"{c}." for c in cats)]:
                out += [f"{prefix}bit.{j}" for j in range(self.value_bits)]
                out.append(f"{prefix}{WITHHELD}")
        return out


def parse_psi_spec(raw: object, schema: Mapping[str, str]) -> PSISpec:
    """``{"id": col, "categories": {"column": c, "values": [...]}, "value": {"column": v,
    "bits": 16}}``: columns of the server's dataset except ``id``, which both share."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("psi", "type", "psi: must be an object")
    for key in raw:
        if key not in ("id", "categories", "value"):
            raise InvalidInput(f"psi.{key}", "unknown_field", f"psi.{key}: not a psi field")

    def column(name: object, fld: str, numeric: bool = False) -> str:
        if not isinstance(name, str) or name not in schema:
            raise InvalidInput(fld, "unknown_column", f"{fld}: no such column")
        if numeric and schema[name] not in ("integer", "number"):
            raise InvalidInput(fld, "not_numeric", f"{fld}: column {name!r} is not numeric")
        return name

    spec = PSISpec(column(raw.get("id"), "psi.id"))
    if (cats := raw.get("categories")) is not None:
        if not isinstance(cats, Mapping):
            raise InvalidInput("psi.categories", "type", "psi.categories: must be an object")
        values = cats.get("values")
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_CATEGORIES or any(
                isinstance(v, bool) or not isinstance(v, str | int | float) for v in values):
            raise InvalidInput("psi.categories.values", "type",
                               f"psi.categories.values: 1-{MAX_CATEGORIES} strings or numbers")
        # Normalized as the column's values are: 1 and 1.0, or "a" and " a", are one category.
        if len({normalize(v) for v in values}) != len(values):
            raise InvalidInput("psi.categories.values", "duplicate", "categories repeat")
        spec = PSISpec(spec.id_column, column(cats.get("column"), "psi.categories.column"),
                       tuple(values))
    if (val := raw.get("value")) is not None:
        if not isinstance(val, Mapping):
            raise InvalidInput("psi.value", "type", "psi.value: must be an object")
        # Decided on the spec alone: the width is the platform's, never the requester's.
        bits = val.get("bits", PSI_VALUE_BITS)
        if isinstance(bits, bool) or bits != PSI_VALUE_BITS:
            raise InvalidInput("psi.value.bits", "fixed_width", "psi.value.bits: every PSI "
                               f"sum uses {PSI_VALUE_BITS} bits (omit it or give that)")
        spec = PSISpec(spec.id_column, spec.category_column, spec.categories,
                       column(val.get("column"), "psi.value.column", numeric=True), bits)
    if spec.id_column in (spec.category_column, spec.value_column):
        raise InvalidInput("psi.id", "duplicate", "psi.id: the identifier is not a category "
                           "or a value")
    return spec


def normalize(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def identifiers(frame: pd.DataFrame, column: str) -> list[str]:
    """Distinct, normalized identifiers (missing ones dropped): PSI is over sets."""
    ids = frame[column].dropna().map(normalize)
    return list(dict.fromkeys(i for i in ids if i))


# ---- server (the provider holding categories and values) -------------------------------

def server_rows(spec: PSISpec, frame: pd.DataFrame
                ) -> tuple[list[str], pd.Series | None, np.ndarray | None]:
    """The server's distinct identifiers (one row each), their normalized categories and
    their values as checked integers (None for a column the spec does not name)."""
    rows = frame.dropna(subset=[spec.id_column])
    rows = rows.assign(_id=rows[spec.id_column].map(normalize))
    rows = rows[rows["_id"] != ""].drop_duplicates("_id")  # one row per identifier
    keys = None if spec.category_column is None else \
        rows[spec.category_column].map(normalize).reset_index(drop=True)
    if spec.value_column is None:
        return rows["_id"].tolist(), keys, None
    vals = pd.to_numeric(rows[spec.value_column], errors="coerce").to_numpy(dtype=float)
    vals = np.nan_to_num(vals, nan=0.0)  # a missing value adds nothing to a sum
    # Every value is taken as an integer in [0, 2^bits - 1]: rounded, then clipped. Never a
    # refusal: which widths the server refused would tell the requester, job by job, the
    # magnitude of the register's largest value. The width is fixed (``PSI_VALUE_BITS``),
    # so every release clips alike. The release says that sums are of clipped values,
    # always, whatever the data holds.
    vals = np.clip(np.rint(vals), 0, value_ceiling(spec))
    return rows["_id"].tolist(), keys, vals.astype(np.int64)


def value_ceiling(spec: PSISpec) -> int:
    """The largest value a sum over the intersection counts: values are clipped to it."""
    return (1 << spec.value_bits) - 1


def server_groups(spec: PSISpec, frame: pd.DataFrame) -> dict[str, list[str]]:
    """The server's identifiers per group, padded."""
    ids, keys, ints = server_rows(spec, frame)
    id_arr = np.array(ids, dtype=object)
    groups = {"all": list(ids)}
    cat_masks: list[tuple[str, Any]] = [("", np.ones(len(ids), dtype=bool))]
    if keys is not None:
        for i, c in enumerate(spec.categories):
            mask = (keys == normalize(c)).to_numpy()
            groups[f"cat.{i}"] = id_arr[mask].tolist()
            cat_masks.append((f"cat.{i}.", mask))
    if ints is not None:
        for prefix, mask in cat_masks:
            for j in range(spec.value_bits):
                hit = mask & ((ints >> j) & 1).astype(bool)
                groups[f"{prefix}bit.{j}"] = id_arr[hit].tolist()
        for prefix, ids_marked in withheld_markers(cat_masks, ints).items():
            groups[f"{prefix}{WITHHELD}"] = id_arr[ids_marked].tolist()
    # Every group is padded with random identifiers (128 bits: they match nothing) to the
    # size of the whole set, so no message's size tells the controller or the client how
    # many of the server's identifiers fall in a category or have a value bit set.
    size = len(groups["all"])
    for members in groups.values():
        members.extend(f"pad:{secrets.token_hex(16)}" for _ in range(size - len(members)))
    return groups


def withheld_markers(cat_masks: list[tuple[str, Any]], ints: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """Per sum (prefix ``""`` for the whole intersection, ``cat.i.`` per category), the
    identifiers its withheld marker holds, none when the sum may be shown. A category's
    marker holds its register group when that group is dominated. The total's holds every
    identifier (so the outcome is the rule's alone, whichever identifiers matched) when the
    whole register is dominated, or the part the total less the shown categories would at
    least be (the dominated categories and the rest, i.e. no listed category) is. Hiding
    more (count-suppressed categories, each undominated) cannot make that part
    dominated: nk and p% are closed under union of undominated groups."""
    none = np.zeros(len(ints), dtype=bool)
    out: dict[str, np.ndarray] = {}
    listed = none.copy()
    exposed = none.copy()
    for prefix, mask in cat_masks[1:]:
        listed |= mask
        hit = dominated(ints[mask])
        exposed |= mask if hit else none
        out[prefix] = mask if hit else none
    exposed |= ~listed
    hit = dominated(ints) or dominated(ints[exposed])
    out[""] = np.ones(len(ints), dtype=bool) if hit else none
    return out


def server_setup(spec: PSISpec, frame: pd.DataFrame, client_size: int
                 ) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """A fresh key per group (kept by the server's agent) and one setup message per group,
    each under its own key, so that no element can be linked across groups."""
    keys: dict[str, bytes] = {}
    setups: dict[str, bytes] = {}
    for g, ids in server_groups(spec, frame).items():
        psi_server = server.CreateWithNewKey(False)
        keys[g] = bytes(psi_server.GetPrivateKeyBytes())
        setups[g] = psi_server.CreateSetupMessage(FPR, max(client_size, 1), ids,
                                                  DataStructure.GCS).SerializeToString()
    return keys, setups


def request_size(request: bytes) -> int:
    """How many identifiers a request holds (the server learns |A|, nothing else)."""
    req = Request()
    req.ParseFromString(request)
    return len(req.encrypted_elements)


def server_respond(keys: Mapping[str, bytes], request: bytes, *, min_request: int
                   ) -> dict[str, bytes]:
    """Answer one request once per group, each under that group's key (the library sorts
    each answer), only for a set of at least ``min_request`` identifiers."""
    req = Request()
    req.ParseFromString(request)
    if len(req.encrypted_elements) < min_request:
        raise PolicyViolation("the other provider's identifier set is smaller than the "
                              "minimum count: no intersection is computed")
    return {g: bytes(server.CreateFromKey(key, False).ProcessRequest(req)
                     .SerializeToString()) for g, key in keys.items()}


# ---- client (the provider holding the identifier set it intersects) ---------------------

def client_request(ids: list[str]) -> tuple[bytes, bytes]:
    psi_client = client.CreateWithNewKey(False)
    return bytes(psi_client.GetPrivateKeyBytes()), \
        bytes(psi_client.CreateRequest(ids).SerializeToString())


def client_cardinalities(key: bytes, setups: Mapping[str, bytes],
                         responses: Mapping[str, bytes]) -> dict[str, int]:
    """``|A ∩ B_g|`` from each group's setup and its own response to the request."""
    if set(setups) != set(responses):
        raise InvalidInput("psi", "psi_groups", "the setup and response messages name "
                           "different groups")
    psi_client = client.CreateFromKey(key, False)
    out = {}
    for g, raw in setups.items():
        setup, resp = ServerSetup(), Response()
        setup.ParseFromString(raw)
        resp.ParseFromString(responses[g])
        out[g] = int(psi_client.GetIntersectionSize(setup, resp))
    return out


def shown_cells(total: int, counts: list[int], min_count: int) -> tuple[bool, list[bool]]:
    """Which counts a release shows: the intersection, and each category's.

    Primary suppression hides a count below ``min_count``. The categories and the *rest*
    (the intersection less the listed categories: records of unlisted categories) form
    one line whose margin is the intersection, and the rest is never shown, so what is
    hidden in the line always sums to the intersection less the shown categories. When
    that remainder is 1 to k-1 records (a hidden category alone, the rest alone, or hidden
    cells together too few), it would be a small cell by subtraction: secondary
    suppression hides the smallest shown category, then the next, until the hidden part
    holds at least k records; if no category is left to hide, the intersection goes
    instead. A remainder of 0 (nothing hidden, or only empty categories) changes nothing.
    """
    if total < min_count:
        return False, [False] * len(counts)
    shown = [c >= min_count for c in counts]
    if not counts:
        return True, shown
    remainder = total - sum(c for c, ok in zip(counts, shown, strict=True) if ok)
    while 0 < remainder < min_count:
        candidates = [i for i, ok in enumerate(shown) if ok]
        if not candidates:
            return False, shown
        smallest = min(candidates, key=lambda i: (counts[i], i))
        shown[smallest] = False
        remainder += counts[smallest]
    return True, shown


def release(spec: PSISpec, cards: Mapping[str, int], min_count: int) -> dict[str, Any]:
    """What leaves the client's agent: counts and sums, suppressed as :func:`shown_cells`
    says (a hidden count takes its sum with it, so no hidden sum is the total sum less the
    shown ones either), and each sum its server withheld (dominance, with its secondary:
    ``withheld_markers``) ``null``. Per-bit counts never leave. Every hidden cell is alike
    (``null``), whichever rule hid it."""
    def total(prefix: str) -> int | None:
        if cards[f"{prefix}{WITHHELD}"] > 0:
            return None
        return sum(cards[f"{prefix}bit.{j}"] << j for j in range(spec.value_bits))

    n = cards["all"]
    counts = [cards[f"cat.{i}"] for i in range(len(spec.categories))]
    total_shown, cats_shown = shown_cells(n, counts, min_count)
    out: dict[str, Any] = {"intersection": n if total_shown else None,
                           "min_count": min_count}
    if spec.value_column is not None:
        out["sum"] = total("") if total_shown else None
        # Data-independent: the platform's width, whether or not any value was clipped.
        out["values_clipped_to"] = [0, value_ceiling(spec)]
    if spec.category_column is not None:
        cells = []
        for i, (c, ok) in enumerate(zip(spec.categories, cats_shown, strict=True)):
            cell: dict[str, Any] = {"category": c, "count": counts[i] if ok else None}
            if spec.value_column is not None:
                cell["sum"] = total(f"cat.{i}.") if ok else None
            cells.append(cell)
        out["categories"] = cells
    out["suppressed_cells"] = (not total_shown) + sum(not ok for ok in cats_shown)
    return out


def run_psi(spec: PSISpec, client_frame: pd.DataFrame, server_frame: pd.DataFrame,
            min_count: int = 10) -> tuple[dict[str, Any], dict[str, int]]:
    """Both roles in one process (tests, benchmarks): the release and the bytes exchanged."""
    ids = identifiers(client_frame, spec.id_column)
    skeys, setups = server_setup(spec, server_frame, len(ids))
    ckey, request = client_request(ids)
    responses = server_respond(skeys, request, min_request=min_count)
    cards = client_cardinalities(ckey, setups, responses)
    sizes = {"setup": sum(len(s) for s in setups.values()), "request": len(request),
             "response": sum(len(r) for r in responses.values())}
    return release(spec, cards, min_count), sizes
