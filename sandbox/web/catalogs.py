"""The translation catalogs: extract, check and compile (``python -m sandbox.web.catalogs``).

The compiled ``.mo`` files are checked in, so a clean clone serves both languages with no
build step; ``tests/web/test_catalogs.py`` fails when a page's string has no translation or
a ``.mo`` is not the compilation of its ``.po``. After changing a page's text, run
``python -m sandbox.web.catalogs update``, translate the new ``msgstr`` entries, then
``python -m sandbox.web.catalogs compile``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

HERE = Path(__file__).parent
TRANSLATIONS = HERE / "translations"
LOCALES = ("zh",)
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]
#: Babel's gettext names, and ``_l``, flask_babel.lazy_gettext (sandbox/web/labels.py).
KEYWORDS = {**DEFAULT_KEYWORDS, "_l": None}


def extracted() -> set[str]:
    """Every message id the web package's code and templates use."""
    ids: set[str] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(HERE), METHODS, {"templates/**.html": {}}, keywords=KEYWORDS):
        ids.add(message if isinstance(message, str) else message[0])
    return ids


def po_path(locale: str) -> Path:
    return TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"


def read(locale: str) -> Catalog:
    with po_path(locale).open("rb") as fh:
        return read_po(fh, locale=locale)


def compiled(locale: str) -> bytes:
    out = io.BytesIO()
    write_mo(out, read(locale))
    return out.getvalue()


def problems(locale: str) -> list[str]:
    """What is wrong with one locale's catalogs (empty when all is well)."""
    cat = read(locale)
    have = {m.id: m.string for m in cat if m.id}
    wanted = extracted()
    out = [f"untranslated: {i!r}" for i in sorted(wanted) if not have.get(i)]
    out += [f"no longer used: {i!r}" for i in sorted(set(have) - wanted)]
    mo = po_path(locale).with_suffix(".mo")
    if not mo.exists() or mo.read_bytes() != compiled(locale):
        out.append(f"{mo} is not the compilation of its .po: run compile")
    return out


def update(locale: str) -> None:
    """Add new message ids (empty translations) and drop unused ones, keeping the rest."""
    old = read(locale)
    new = Catalog(locale=locale, project="data-sandbox", fuzzy=False)
    for mid in sorted(extracted()):
        found = old.get(mid)
        new.add(mid, found.string if found is not None else "")
    with po_path(locale).open("wb") as fh:
        write_po(fh, new, omit_header=False, sort_output=True, no_location=True, width=100)


def compile_all() -> None:
    for locale in LOCALES:
        po_path(locale).with_suffix(".mo").write_bytes(compiled(locale))


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "update":
        for locale in LOCALES:
            update(locale)
    elif command == "compile":
        compile_all()
    found = [p for locale in LOCALES for p in problems(locale)]
    for p in found:
        print(p)
    return 1 if found and command == "check" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
