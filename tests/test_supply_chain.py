"""The image audit's own logic: dpkg status parsing, Debian version order, findings."""

from __future__ import annotations

from containers.supply_chain import DebPackage, installed, pending, suite_of

STATUS = """\
Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 3.0.20-1~deb12u2
Description: Secure Sockets Layer toolkit
 continued description line

Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u13

Package: removed-thing
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2026b-0+deb12u1
"""


def test_installed_packages_only_with_their_source() -> None:
    pkgs = installed(STATUS)
    assert [p.name for p in pkgs] == ["base-files", "libssl3", "tzdata"]
    assert DebPackage("libssl3", "3.0.20-1~deb12u2", "amd64", "openssl") in pkgs
    assert suite_of(STATUS) == "bookworm"


def test_pending_uses_debian_version_order() -> None:
    index = [
        # tilde sorts before anything: 3.0.22-1~deb12u2 > 3.0.20-1~deb12u2
        {"Package": "libssl3", "Architecture": "amd64", "Version": "3.0.22-1~deb12u2"},
        {"Package": "libssl3", "Architecture": "amd64", "Version": "3.0.11-1~deb12u1"},
        # the same version is not pending; another architecture is not ours
        {"Package": "tzdata", "Architecture": "all", "Version": "2026b-0+deb12u1"},
        {"Package": "base-files", "Architecture": "arm64", "Version": "12.4+deb12u99"},
    ]
    assert pending(installed(STATUS), index) == [
        {"package": "libssl3", "installed": "3.0.20-1~deb12u2", "fixed": "3.0.22-1~deb12u2"}]
