"""简体中文 and English: the browser's preference, unless the person chose with the switch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from babel.support import NullTranslations
from flask import Flask, g, request
from flask_babel import Babel, get_locale, get_translations
from markupsafe import Markup

LANGUAGES = {"en": "English", "zh": "简体中文"}
#: BCP 47 tags for the ``lang`` attribute (screen readers pick their voice by it).
HTML_LANG = {"en": "en", "zh": "zh-Hans"}
LANG_COOKIE = "sandbox_lang"
ONE_YEAR_S = 365 * 24 * 3600
TRANSLATIONS = Path(__file__).parent / "translations"


def select_locale() -> str:
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(list(LANGUAGES)) or "en"


def translations() -> NullTranslations:
    """This request's catalogue, found once: Flask-Babel finds it again on every string
    (its context, the locale, the locale's name, a cache lookup), and a page has dozens."""
    found: NullTranslations | None = g.get("translations")
    if found is None:
        found = g.translations = get_translations()
    return found


def page_gettext(string: str, **variables: Any) -> Markup:
    """The templates' ``_()``: what Jinja's newstyle gettext does in an autoescaping
    template (every page template is one): the catalogue's words as markup, the values
    escaped into them; without its two indirect calls per string."""
    words = translations().ugettext(string)
    if not variables and "%" not in words:
        return Markup(words)  # noqa: S704 (our catalogue's words; nothing to format)
    return Markup(words) % variables  # noqa: S704 (our catalogue's words)


def current_language() -> str:
    """The request's language (Flask-Babel chose it once, with :func:`select_locale`)."""
    locale = get_locale()
    return locale.language if locale is not None and locale.language in LANGUAGES else "en"


def init_app(app: Flask) -> None:
    Babel(app, locale_selector=select_locale,
          default_translation_directories=str(TRANSLATIONS))
    # The templates' _(), as Flask-Babel installs it (newstyle: %-formatting, escaped),
    # through the request's catalogue.
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=lambda s: translations().ugettext(s),
        ngettext=lambda s, p, n: translations().ungettext(s, p, n),
        pgettext=lambda c, s: translations().upgettext(c, s),
        npgettext=lambda c, s, p, n: translations().unpgettext(c, s, p, n),
        newstyle=True)
    app.jinja_env.globals["_"] = page_gettext
    app.jinja_env.globals.update(LANGUAGES=LANGUAGES, HTML_LANG=HTML_LANG,
                                 current_language=current_language)
