"""Sign-in, the web session, CSRF, the page policy and error pages shared by every page."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from ipaddress import ip_address
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers.response import Response as BaseResponse

from authz import people
from authz import validate as v
from authz import web_sessions as ws
from authz.parties import get_party
from authz.people import PersonRole
from compute.errors import InvalidInput, SandboxError, Unauthenticated
from ledger.errors import LedgerError
from sandbox import auth, db, edge
from sandbox.web import charts
from sandbox.web.i18n import LANG_COOKIE, LANGUAGES, ONE_YEAR_S
from sandbox.web.labels import state_label

P = ParamSpec("P")
R = TypeVar("R")
SESSION_COOKIE = "sandbox_web"
ANON_CSRF_COOKIE = "sandbox_csrf"
#: Pages may load scripts, styles and images from this origin only; no inline script or
#: style, no plugin, no framing, forms post only here. The JSON API keeps edge's policy.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
LANDING = {"requester": "web.requester.catalog", "provider": "web.provider.inbox",
           "regulator": "web.regulator.ledger", "admin": "web.operator.overview"}


@dataclass(frozen=True)
class SignedIn:
    session_id: str
    csrf_token: str
    person: ws.LivePerson
    party: ws.LiveParty


def current() -> SignedIn | None:
    found: SignedIn | None = g.get("web_signed_in")
    return found


def page(*allowed: str, need: PersonRole | tuple[PersonRole, ...] = ()
         ) -> Callable[[Callable[P, R]], Callable[P, R | BaseResponse]]:
    """A page for people of a party whose role is in ``allowed``: the API's matrix
    (:func:`sandbox.auth.check_roles`), with the same person roles ``need``."""
    needed = (need,) if isinstance(need, PersonRole) else need

    def deco(view: Callable[P, R]) -> Callable[P, R | BaseResponse]:
        @wraps(view)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | BaseResponse:
            signed = current()
            if signed is None:
                return redirect(url_for("web.sign_in", next=_here()))
            auth.check_roles(signed.party, signed.person, allowed, needed, request.method)
            return view(*args, **kwargs)

        return wrapped

    return deco


def _here() -> str:
    return request.full_path.rstrip("?") if request.method == "GET" else request.path


#: A path on this site: one leading slash, then URL characters only (no backslash, space
#: or control character, which browsers may drop or turn into a second slash).
LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,500}")


def _safe_next(target: str | None) -> str | None:
    """Only a path on this site: never another origin (an open redirect)."""
    return target if target and LOCAL_PATH.fullmatch(target) else None


def cookie_secure() -> bool:
    if current_app.config["WEB_COOKIE_SECURE"] == "always" or request.is_secure:
        return True
    host = (request.host or "").rsplit(":", 1)[0].strip("[]")
    try:
        return not ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


def csrf_token() -> str:
    signed = current()
    if signed is not None:
        return signed.csrf_token
    if "anon_csrf" not in g:
        g.anon_csrf = request.cookies.get(ANON_CSRF_COOKIE) or secrets.token_urlsafe(32)
    token: str = g.anon_csrf
    return token


class CsrfRefused(SandboxError):
    http_status = 403
    code = "csrf"


def _check_csrf() -> None:
    """Every state-changing request carries the token of its session (or, before sign-in,
    of its anonymous cookie) and, when the browser says, comes from this origin."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        here = urlsplit(request.host_url)
        there = urlsplit(origin)
        if (there.scheme, there.netloc) != (here.scheme, here.netloc):
            raise CsrfRefused("cross-origin form post refused")
    sent = request.form.get("csrf_token", "")
    signed = current()
    if signed is None and g.get("clear_session_cookie"):
        # The form came from a session that has since ended: sign in again.
        raise Unauthenticated("the session has ended")
    expected = signed.csrf_token if signed else request.cookies.get(ANON_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused("the form's security token is missing or stale; reload the page")


def _load() -> None:
    if request.endpoint == "web.static":
        return
    g.csp = PAGE_CSP
    secret = request.cookies.get(SESSION_COOKIE)
    if secret and len(secret) <= 100:
        now = db.ctx().now()
        idle = timedelta(seconds=int(current_app.config["WEB_IDLE_S"]))
        live = ws.resolve(db.session(), secret, now, idle)
        if live is not None:
            g.web_signed_in = SignedIn(live.id, live.csrf_token, live.person, live.party)
            auth.act_as_checked(live.party.id, live.person.id)
            edge.admit_caller(live.person.id)
            if ws.needs_touch(live, now):
                with db.services().sessions() as s:
                    ws.touch(s, live.id, now)
                    s.commit()
        else:
            g.clear_session_cookie = True
    if request.method not in auth.SAFE_METHODS:
        _check_csrf()


def _finish(response: Response) -> Response:
    secure = cookie_secure()
    if g.get("clear_session_cookie"):
        response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True,
                               samesite="Lax")
    started: str | None = g.get("started_session")
    if started is not None:
        # No Max-Age: a browser session cookie; the server ends it on idle or lifetime.
        response.set_cookie(SESSION_COOKIE, started, path="/", secure=secure, httponly=True,
                            samesite="Lax")
    if "anon_csrf" in g and not request.cookies.get(ANON_CSRF_COOKIE):
        response.set_cookie(ANON_CSRF_COOKIE, g.anon_csrf, path="/", secure=secure,
                            httponly=True, samesite="Strict")
    response.headers["Vary"] = "Cookie, Accept-Language"
    return response


def _error_page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("web/error.html", title=title, message=message), status


def _on_error(e: SandboxError) -> tuple[str, int] | BaseResponse:
    if isinstance(e, Unauthenticated) and request.endpoint != "web.sign_in":
        return redirect(url_for("web.sign_in"))
    titles = {400: _("The form has a problem"), 403: _("Not allowed"),
              404: _("Not found"), 409: _("Conflict"), 422: _("Refused by policy"),
              429: _("Too many attempts"), 503: _("Not available yet")}
    if isinstance(e, CsrfRefused):
        return _error_page(403, _("Security check failed"),
                           _("The form's security token is missing or stale. Reload the "
                             "page and try again."))
    return _error_page(e.http_status, titles.get(e.http_status, _("Error")), _message(e))


def _message(e: SandboxError) -> str:
    """The service's own words (English), after a translated lead, with field and rule."""
    body = e.to_json()
    parts = [str(body.get("message", ""))]
    if body.get("field"):
        parts.append(_("Field: %(field)s", field=body["field"]))
    return " — ".join(p for p in parts if p)


def _on_ledger_error(e: LedgerError) -> tuple[str, int]:
    return _error_page(404, _("Not found"), str(e))


def _on_http(e: HTTPException) -> tuple[str, int]:
    return _error_page(e.code or 500, _("Error"), e.description or "")


def register(bp: Blueprint) -> None:
    bp.before_request(_load)
    bp.after_request(_finish)
    bp.register_error_handler(SandboxError, _on_error)
    bp.register_error_handler(LedgerError, _on_ledger_error)
    bp.register_error_handler(HTTPException, _on_http)
    bp.add_url_rule("/", "home", home)
    bp.add_url_rule("/sign-in", "sign_in", sign_in, methods=["GET", "POST"])
    bp.add_url_rule("/sign-out", "sign_out", sign_out, methods=["POST"])
    bp.add_url_rule("/language", "language", language, methods=["POST"])
    # Globals, not context: imported macros (web/_macros.html) see them too.
    bp.record_once(lambda state: state.app.jinja_env.globals.update(
        csrf_token=csrf_token, LANDING=LANDING, state_label=state_label,
        chart_tick=charts.tick))
    bp.app_context_processor(lambda: {"signed_in": current()})


def home() -> BaseResponse:
    signed = current()
    if signed is None:
        return redirect(url_for("web.sign_in"))
    return redirect(url_for(LANDING[signed.party.role]))


SIGN_IN_SPEC = [
    v.Field("email", v.text(254, single_line=True)),
    v.Field("password", v.text(people.MAX_PASSWORD)),
    v.Field("totp", v.text(6, min_len=6, pattern=r"[0-9]{6}"), required=False),
]


def sign_in() -> str | tuple[str, int] | BaseResponse:
    nxt = _safe_next(request.values.get("next"))
    earlier = current()
    if request.method == "GET" and earlier is not None:
        return redirect(nxt or url_for(LANDING[earlier.party.role]))
    if request.method == "GET":
        return render_template("web/sign_in.html", next=nxt or "", error=None)
    form = {k: request.form.get(k, "") for k in ("email", "password", "totp")}
    body = {k: val for k, val in form.items() if val != "" or k != "totp"}
    try:
        data = v.parse(body, SIGN_IN_SPEC)
        person = people.check_credentials(db.ctx(), data["email"], data["password"],
                                          data["totp"])
    except (Unauthenticated, InvalidInput):
        db.session().rollback()
        # 401: the edge counts it against the address like a failed token.
        return render_template("web/sign_in.html", next=nxt or "", email=form["email"],
                               error=_("Sign-in failed: wrong email, password or code.")), 401
    if earlier is not None:
        ws.end(db.session(), earlier.session_id)  # one session per sign-in
    lifetime = timedelta(seconds=int(current_app.config["WEB_LIFETIME_S"]))
    started = ws.start(db.ctx(), person, lifetime)
    db.ctx().record("person.signed_in", person.id, {"person_id": person.id,
                                                    "party_id": person.party_id,
                                                    "channel": "web"})
    db.commit()
    g.started_session = started.secret
    party = get_party(db.ctx(), person.party_id)
    return redirect(nxt or url_for(LANDING[party.role]))


def sign_out() -> BaseResponse:
    signed = current()
    if signed is not None:
        ws.end(db.session(), signed.session_id)
        db.commit()
    g.clear_session_cookie = True
    return redirect(url_for("web.sign_in"))


def language() -> BaseResponse:
    """The switch: the choice is kept in a cookie and wins over Accept-Language."""
    lang = request.form.get("lang", "")
    resp = redirect(_safe_next(request.form.get("next")) or url_for("web.home"))
    if lang in LANGUAGES:
        resp.set_cookie(LANG_COOKIE, lang, max_age=ONE_YEAR_S, path="/",
                        secure=cookie_secure(), httponly=True, samesite="Lax")
    return resp
