"""Request admission (body size, path and query text), bearer tokens and role checks."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from functools import wraps
from typing import ParamSpec, Protocol, TypeVar

from flask import Flask, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from authz import validate
from authz.checked import CheckedPerson
from authz.context import PartyRef, SignedIn
from authz.models import Agent, Party, Person
from authz.parties import authenticate, check_for_read
from authz.people import PersonRole
from compute.errors import Forbidden, InvalidInput, Unauthenticated
from sandbox import db, edge

P = ParamSpec("P")
R = TypeVar("R")
# Tokens are issued as "<prefix>_<hex>.<urlsafe base64>" (authz/parties.py); anything else
# is refused before its id part is looked up (a NUL there is an error on PostgreSQL).
TOKEN_RX = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def register(app: Flask) -> None:
    app.before_request(_admit)


def _admit() -> None:
    """Checks every request passes before any view runs, whether or not it reads a body."""
    _limit_body()
    # Path and query values reach lookups as they are; none of them is multi-line text.
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and validate.CONTROL_RX.search(value):
            raise InvalidInput(name, validate.CONTROL_RULE)
    for name, value in request.args.items(multi=True):
        if validate.CONTROL_RX.search(name):
            raise InvalidInput("query", f"parameter names {validate.CONTROL_RULE}")
        if validate.CONTROL_RX.search(value):
            raise InvalidInput(name, validate.CONTROL_RULE)


def _limit_body() -> None:
    """Enforce MAX_CONTENT_LENGTH on every request (413), not only on views that read it.

    Werkzeug applies the limit only when the body is read; a view that ignores its body
    would otherwise accept any size. A declared length is checked without reading. A body
    without one (chunked) is read here and kept for the view: one byte past the limit,
    because at the limit itself werkzeug stops without an error, and the view would get
    a cut body.
    """
    limit = request.max_content_length
    if limit is None:
        return
    if request.content_length is not None:
        if request.content_length > limit:
            raise RequestEntityTooLarge()
    elif request.environ.get("wsgi.input_terminated"):
        request.max_content_length = limit + 1
        if len(request.get_data(cache=True)) > limit:
            raise RequestEntityTooLarge()


#: What a person must hold to change anything for their party, when a view does not say:
#: a provider's writes each name theirs (approver, steward, output checker), so a provider
#: view that forgot to is refused to people (fail closed).
DEFAULT_WRITER: dict[str, PersonRole] = {
    "requester": PersonRole.ANALYST, "regulator": PersonRole.AUDITOR,
    "admin": PersonRole.ADMIN,
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _authenticated() -> None:
    """Authenticate the request once: a web session checked it already, or its bearer
    token is checked now."""
    if "caller" not in g and "checked_caller" not in g:
        _bearer()


def _caller() -> Party | Agent:
    """The party (or agent) whose authority the request uses; for a person, their party."""
    if "caller" not in g:
        _authenticated()
    if "caller" not in g:  # checked without its rows (a web session, or a plain read)
        g.caller = _still_active(db.session().get(Party, g.checked_caller[0]))
    caller: Party | Agent = g.caller
    return caller


def read_checked(with_accreditations: bool = False) -> CheckedPerson | None:
    """For a read that needs no ORM row: the person whose token was checked with plain
    columns (:mod:`authz.checked`, the same checks, on every request), their party in
    ``.party``. None for a party's or an agent's token, a web session, or a request that
    is not a read: then use :func:`party` and :func:`person`. ``with_accreditations``:
    read the person's accreditations in the same statement (``GET /me``)."""
    g.setdefault("plain_read", "with_accreditations" if with_accreditations else True)
    _authenticated()
    found: CheckedPerson | None = g.get("checked")
    return found


def viewer() -> PartyRef:
    """The party a read is made for, as a job's visibility needs it (its id and role):
    the checked copy when :func:`read_checked` has one, else the row (:func:`party`)."""
    checked = read_checked()
    return checked.party if checked is not None else party()


def _bearer() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("missing bearer token")
    token = token.strip()
    if not TOKEN_RX.fullmatch(token):
        raise Unauthenticated("malformed token")
    if g.get("plain_read") and request.method in SAFE_METHODS:
        checked = check_for_read(db.ctx(), token,
                                 g.plain_read == "with_accreditations")
        if checked is not None:
            g.checked = checked
            act_as_checked(checked.party_id, checked.id)
            edge.admit_caller(checked.id)
            return
    authority, who = authenticate(db.ctx(), token)
    if isinstance(authority, Party):
        act_as(authority, who)
    else:
        g.caller, g.person = authority, None
    edge.admit_caller(who.id if who is not None else authority.id)


def act_as(p: Party, who: Person | None) -> None:
    """Bind this request to its authenticated party and person: :func:`party`,
    :func:`person` and the ledger's naming."""
    g.caller, g.person = p, who
    if who is not None:
        db.ctx().signed_in = SignedIn(who.id, who.party_id)


def act_as_checked(party_id: str, person_id: str) -> None:
    """Bind this request to a person whose web session was just checked (live, person
    and party active): the ledger names them at once; their party and person rows are
    loaded only when a view asks (:func:`party`, :func:`person`), so a page that needs
    neither reads neither."""
    g.checked_caller = (party_id, person_id)
    db.ctx().signed_in = SignedIn(person_id, party_id)


PartyOrPerson = TypeVar("PartyOrPerson", Party, Person)


def _still_active(row: PartyOrPerson | None) -> PartyOrPerson:
    # Found live a moment ago in this request; checked again as loaded (fail closed).
    if row is None or not row.active:
        raise Unauthenticated("the session has ended")
    return row


def caller_id() -> str | None:
    """The id of the request's authenticated party or agent, without loading it."""
    caller = g.get("caller")
    if caller is not None:
        found: str = caller.id
        return found
    checked = g.get("checked_caller")
    return None if checked is None else str(checked[0])


def person() -> Person | None:
    """The person acting, or None for a party's service account (or an agent)."""
    _caller()
    if "person" not in g:  # a checked web session's person, read on first use
        g.person = _still_active(db.session().get(Person, g.checked_caller[1]))
    found: Person | None = g.person
    return found


def actor() -> str:
    """Who the ledger names for this request: the person, else the party."""
    return db.ctx().who(party().id)


def party() -> Party:
    c = _caller()
    if not isinstance(c, Party):
        raise Forbidden("agents may only use the agent API")
    return c


def agent() -> Agent:
    c = _caller()
    if not isinstance(c, Agent):
        raise Forbidden("only agents may use the agent API")
    return c


class HasRole(Protocol):
    """A party as the matrix sees it (the ORM row, or a web session's checked copy)."""

    @property
    def role(self) -> str: ...


class HasRoles(Protocol):
    """A person as the matrix sees it."""

    @property
    def roles(self) -> Collection[str]: ...


def check_roles(p: HasRole, who: HasRoles | None, allowed: tuple[str, ...],
                needed: tuple[PersonRole, ...], method: str) -> None:
    """The one authorization matrix of the API and the web pages (sandbox.web).

    ``p`` must have one of the party roles ``allowed``. A person (``who``) also needs a
    person role: one of ``needed``, or, for a request that changes something (``method``
    not safe) and names none, :data:`DEFAULT_WRITER` of their party's role. Reading is
    open to every person of the party.
    """
    if p.role not in allowed:
        raise Forbidden(f"requires role {' or '.join(allowed)}")
    if who is None:
        return
    wanted = needed
    if not wanted and method not in SAFE_METHODS:
        default = DEFAULT_WRITER.get(p.role)
        wanted = (default,) if default else ()
        if not wanted:
            raise Forbidden("this action is not open to people of a "
                            f"{p.role}'s account")
    if wanted and not set(wanted) & set(who.roles):
        raise Forbidden(f"requires the person role {' or '.join(wanted)}")


def roles(*allowed: str, need: PersonRole | tuple[PersonRole, ...] = (), plain: bool = False
          ) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Require a party (or one of its people) whose role is one of ``allowed``; a person
    also needs one of the person roles ``need`` (:func:`check_roles`).

    ``plain``: the view reads through :func:`read_checked` / :func:`viewer`, so a person's
    token on a read is checked without loading the person's and the party's rows."""
    needed = (need,) if isinstance(need, PersonRole) else need

    def deco(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            checked = read_checked() if plain else None
            if checked is not None:
                check_roles(checked.party, checked, allowed, needed, request.method)
            else:
                check_roles(party(), person(), allowed, needed, request.method)
            return view(*args, **kwargs)

        return wrapped

    return deco


def agent_again() -> Agent:
    """The authenticated agent, checked again through the request's current session (after
    :func:`sandbox.db.use_writer`): still active, its token unchanged since it was checked
    through the read-only session. Bound to the request from now on."""
    checked = agent()
    row = db.session().get(Agent, checked.id)
    if row is None or not row.active or row.token_hash != checked.token_hash:
        raise Unauthenticated("invalid token")
    g.caller = row
    return row


def agent_only(view: Callable[P, R]) -> Callable[P, R]:
    @wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        agent()
        return view(*args, **kwargs)

    return wrapped


def body() -> object:
    """The JSON body; malformed or non-JSON bodies, or unstorable text, are a 400."""
    if not request.is_json:
        raise InvalidInput("body", "Content-Type must be application/json")
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        raise InvalidInput("body", "JSON nested too deeply") from None
    if data is None:
        raise InvalidInput("body", "must be well-formed JSON")
    return validate.storable(data)
