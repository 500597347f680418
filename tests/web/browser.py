"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) on a live controller.

Selenium drives the system browser through the system driver: nothing is downloaded. Every
page a test visits is kept as a screenshot under ``build/web-screenshots/`` (ignored by
git), and the browser's console is checked for content-security-policy violations, so a
page whose own scripts or styles broke the policy fails its test.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import PASSWORD

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(__file__).resolve().parents[2] / "build" / "web-screenshots"
WAIT_S = 30
# Selenium Manager never downloads a driver or browser: the Debian ones are given.
os.environ.setdefault("SE_OFFLINE", "true")


def available() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)


#: Accessibility basics every page must keep: a language, one h1, the landmarks, and a
#: name for every form control (a <label for>, a wrapping label or aria-label).
A11Y_JS = """
const out = [];
if (!document.documentElement.lang) out.push("no lang");
if (document.querySelectorAll("h1").length !== 1) out.push("not exactly one h1");
for (const sel of ["main", "header", "footer"]) {
  if (!document.querySelector(sel)) out.push("no " + sel);
}
for (const el of document.querySelectorAll("input, select, textarea")) {
  if (el.type === "hidden") continue;
  const named = el.getAttribute("aria-label") || el.closest("label")
    || (el.id && document.querySelector('label[for="' + CSS.escape(el.id) + '"]'));
  if (!named) out.push("unlabelled " + el.tagName + " " + (el.name || el.id));
}
const ids = Array.from(document.querySelectorAll("[id]"), (e) => e.id);
const twice = ids.filter((id, i) => ids.indexOf(id) !== i);
if (twice.length) out.push("duplicate ids " + twice.join(","));
return out;
"""


class Api:
    """The JSON API of the live server, with one bearer token (set-up only)."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        r = requests.post(f"{self.url}/api/v1{path}", json=body or {}, timeout=30,
                          headers={"Authorization": f"Bearer {self.token}"})
        assert r.status_code < 300, r.text
        return r.json()

    def get(self, path: str) -> Any:
        r = requests.get(f"{self.url}/api/v1{path}", timeout=30,
                         headers={"Authorization": f"Bearer {self.token}"})
        assert r.status_code == 200, r.text
        return r.json()


class Page:
    """One person's browser window."""

    def __init__(self, base: str, name: str, lang: str = "en") -> None:
        if not available():
            pytest.fail("Chromium not found: run scripts/ensure-system.sh (chromium, "
                        "chromium-driver)")
        opts = Options()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", "--disable-gpu"):
            opts.add_argument(arg)
        opts.add_experimental_option("prefs", {"intl.accept_languages": lang})
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
        self.base, self.name, self.shots = base, name, 0
        SHOTS.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        self.driver.quit()

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.settle(path)

    def settle(self, label: str) -> None:
        """After a page loads: keep its screenshot and refuse any policy violation."""
        WebDriverWait(self.driver, WAIT_S).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        self.shots += 1
        slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")[:60] or "page"
        self.driver.save_screenshot(str(SHOTS / f"{self.name}-{self.shots:02d}-{slug}.png"))
        errors = [e["message"] for e in self.console()
                  if "Content Security Policy" in e["message"]
                  or "Refused to" in e["message"]]
        assert errors == [], errors
        problems = self.driver.execute_script(A11Y_JS)
        assert problems == [], f"{label}: {problems}"

    def console(self) -> list[dict[str, Any]]:
        """The browser console's messages since the last call."""
        found: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return found

    def find(self, css: str) -> WebElement:
        return WebDriverWait(self.driver, WAIT_S).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def text_of(self, css: str) -> str:
        """An element's text; read again if the page refreshed itself meanwhile (the job
        page does, every few seconds, until the job ends)."""
        for _ in range(5):
            try:
                return str(self.find(css).text)
            except StaleElementReferenceException:
                continue
        raise AssertionError(f"{css} kept going stale")

    def text(self) -> str:
        return str(self.find("main").text)

    def fill(self, values: dict[str, str]) -> None:
        for css, value in values.items():
            el = self.find(css)
            el.clear()
            el.send_keys(value)

    def submit(self, button_css: str, label: str) -> None:
        self.find(button_css).click()
        self.settle(label)

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        self.open("/sign-in")
        self.fill({"#email": email, "#password": password})
        self.submit("main form button[type=submit]", "signed-in")
