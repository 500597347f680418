"""OIDC settings: all together or none, each checked, failing closed by variable name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.settings import MASK, SettingsError, flask_config, load_settings, masked

SECRET = "s3cret-value-never-shown"
COMPLETE = {
    "SANDBOX_OIDC_ISSUER": "https://idp.example.org/realms/lab",
    "SANDBOX_OIDC_CLIENT_ID": "data-sandbox",
    "SANDBOX_OIDC_CLIENT_SECRET": SECRET,
    "SANDBOX_OIDC_REDIRECT_URL": "https://sandbox.example.org/api/v1/oidc/callback",
    "SANDBOX_OIDC_EMAIL_DOMAINS": "example.org, Lab.Example.org",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SANDBOX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SANDBOX_INSTANCE", str(tmp_path / "instance"))


def test_off_by_default_and_complete_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert flask_config(load_settings())["OIDC_ISSUER"] is None
    for name, value in COMPLETE.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    cfg = flask_config(s)
    assert cfg["OIDC_ISSUER"] == COMPLETE["SANDBOX_OIDC_ISSUER"]
    assert cfg["OIDC_CLIENT_SECRET"] == SECRET
    assert cfg["OIDC_EMAIL_DOMAINS"] == ["example.org", "lab.example.org"]
    assert masked(s)["SANDBOX_OIDC_CLIENT_SECRET"] == MASK


@pytest.mark.parametrize("missing", [n for n in COMPLETE if n != "SANDBOX_OIDC_ISSUER"])
def test_the_issuer_without_another_oidc_setting_names_the_missing_one(
        monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    for name, value in COMPLETE.items():
        if name != missing:
            monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert e.value.variable == missing and SECRET not in str(e.value)


def test_an_oidc_setting_without_the_issuer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_OIDC_CLIENT_ID", "data-sandbox")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert e.value.variable == "SANDBOX_OIDC_CLIENT_ID" and "SANDBOX_OIDC_ISSUER" in e.value.rule


@pytest.mark.parametrize(("name", "value"), [
    ("SANDBOX_OIDC_ISSUER", "http://idp.example.org"),  # clear text off the host
    ("SANDBOX_OIDC_ISSUER", "ftp://idp.example.org"),
    ("SANDBOX_OIDC_ISSUER", "https://idp.example.org/#x"),
    ("SANDBOX_OIDC_ISSUER", "idp.example.org"),
    ("SANDBOX_OIDC_REDIRECT_URL", "http://10.0.0.5/api/v1/oidc/callback"),
    ("SANDBOX_OIDC_REDIRECT_URL", "https://sandbox.example.org/cb#frag"),
    ("SANDBOX_OIDC_EMAIL_DOMAINS", "example.org,not a domain"),
    ("SANDBOX_OIDC_EMAIL_DOMAINS", "@example.org"),
    ("SANDBOX_OIDC_CLIENT_ID", "has space"),
    ("SANDBOX_OIDC_CLIENT_SECRET", "has space " + SECRET),
])
def test_a_bad_oidc_value_stops_the_start_naming_the_variable_not_the_value(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    for n, v in {**COMPLETE, name: value}.items():
        monkeypatch.setenv(n, v)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert e.value.variable == name
    assert value not in str(e.value) and SECRET not in str(e.value)


def test_http_to_a_loopback_provider_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**COMPLETE, "SANDBOX_OIDC_ISSUER": "http://127.0.0.1:8081",
                        "SANDBOX_OIDC_REDIRECT_URL": "http://localhost:8080/api/v1/oidc/callback"
                        }.items():
        monkeypatch.setenv(name, value)
    assert load_settings().oidc_issuer == "http://127.0.0.1:8081"
