"""Every string of the web UI has its 简体中文 translation, and the shipped .mo is current."""

from __future__ import annotations

from sandbox.web import catalogs


def test_every_page_string_is_translated_and_the_compiled_catalog_is_current() -> None:
    assert catalogs.problems("zh") == []


def test_the_check_notices_a_missing_translation(tmp_path: object, monkeypatch: object
                                                 ) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    wanted = catalogs.extracted() | {"A string no catalog has"}
    monkeypatch.setattr(catalogs, "extracted", lambda: wanted)
    assert "untranslated: 'A string no catalog has'" in catalogs.problems("zh")
