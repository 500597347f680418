"""简体中文 and English: the browser's preference, unless the person chose with the switch."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, request
from flask_babel import Babel

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


def init_app(app: Flask) -> None:
    Babel(app, locale_selector=select_locale,
          default_translation_directories=str(TRANSLATIONS))
    app.jinja_env.globals.update(LANGUAGES=LANGUAGES, HTML_LANG=HTML_LANG,
                                 current_language=select_locale)
