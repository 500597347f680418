"""The web UI: server-rendered pages for each role, on the same services as the JSON API.

One parent blueprint (``web``) holds what every page shares (sign-in, the web session,
CSRF, the content security policy, the language, error pages); one child blueprint per
area. Pages authorize through :func:`sandbox.auth.check_roles`, the API's own matrix,
and call the same ``authz`` services the JSON views call. Security choices:
docs/web-ui.md.
"""

from __future__ import annotations

from flask import Blueprint, Flask

from sandbox.web import i18n, operator, provider, regulator, requester, review, session

#: The web settings' defaults, for an app made without sandbox.settings (the controller
#: reads SANDBOX_WEB_* into these keys; ``create_app(test_config)`` overrides them).
DEFAULTS = {
    "WEB_IDLE_S": 30 * 60,  # a session ends after this long without a request
    "WEB_LIFETIME_S": 12 * 3600,  # and at the latest this long after sign-in
    # "auto": the Secure flag on every cookie unless the request is plain HTTP to a
    # loopback address (a local test or demo server); "always": on every cookie.
    "WEB_COOKIE_SECURE": "auto",
}


def init_app(app: Flask) -> None:
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    if app.config["WEB_COOKIE_SECURE"] not in ("auto", "always"):
        raise ValueError("WEB_COOKIE_SECURE must be auto or always")
    i18n.init_app(app)
    web = Blueprint("web", __name__, static_folder="static", static_url_path="/static/web",
                    template_folder="templates")
    session.register(web)
    for child in (requester.bp, provider.bp, review.bp, regulator.bp, operator.bp):
        web.register_blueprint(child)
    app.register_blueprint(web)
