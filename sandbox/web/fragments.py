"""Parts of a page rendered once and kept: a macro's output for the same arguments.

A page's rows are most of its render time, and the same rows are shown again and again
(the newest ledger entries, the latest jobs, the charts over the rollup). A macro's
output depends only on its arguments when they carry everything it shows, translated
words included, and it reads no request state: such output is kept, keyed by the
arguments, so it never goes stale (a changed row is another key).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from functools import lru_cache

from flask import current_app
from markupsafe import Markup

#: Fragments kept per process (a ledger row is under 1 KB of markup).
KEPT = 4096


def render(template: str, macro: str, *args: Hashable) -> Markup:
    """``macro`` of ``template`` called with ``args``, rendered once per distinct
    ``args`` (which must hold everything it shows, translated words included)."""
    if current_app.jinja_env.auto_reload:
        # Templates being edited (development): what is kept could be out of date.
        return _call(template, macro, args)
    return _kept(template, macro, args)


def render_each(template: str, macro: str, items: Sequence[Hashable]) -> list[Markup]:
    """:func:`render` of ``macro`` for each of ``items`` (its one argument)."""
    one = _call if current_app.jinja_env.auto_reload else _kept
    return [one(template, macro, (item,)) for item in items]


def join(rows: list[Markup]) -> Markup:
    """Rows as one piece of markup, one a line: a page template writes it at once (a
    template loop over kept rows would look at each again)."""
    return Markup("\n").join(rows)


def _call(template: str, macro: str, args: tuple[Hashable, ...]) -> Markup:
    module = current_app.jinja_env.get_template(template).module
    out = getattr(module, macro)(*args)
    if not isinstance(out, Markup):
        # Only an autoescaping template's macro returns markup: never write raw text.
        raise TypeError(f"{template} is not autoescaped")
    return out


# Every app of a process renders the same package templates: one store for all.
_kept = lru_cache(maxsize=KEPT)(_call)
