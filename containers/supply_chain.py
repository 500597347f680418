"""Supply-chain checks of the images: their Debian packages, pending security updates, SBOMs.

``python -m containers.supply_chain check`` (run by ``make audit``, which needs the network)
reads ``/var/lib/dpkg/status`` out of each image without starting it, then compares every
installed package with Debian's security suite:

- the suite's ``InRelease`` is verified with ``gpgv`` against the host's Debian archive
  keyring, and ``Packages.xz`` against the SHA-256 that ``InRelease`` lists, so a mirror
  or a network in between cannot hide an update;
- a binary package whose version in the security suite is newer (``dpkg
  --compare-versions``) is a finding.

Exit status: 0 when every image was checked and none has a pending security update; 1
with findings; 0 with a ``NOT CHECKED`` line per image when the index could not be fetched
or verified (offline), or 2 with ``--strict``. ``sbom`` writes a CycloneDX document per
image from the same status file, with cyclonedx-python-lib (run from the audit
environment, see the Makefile).

Module level imports only the standard library: the ``sbom`` step runs in the audit tools'
environment, which has neither docker nor the project's dependencies.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
STATUS_PATH = "/var/lib/dpkg/status"
IMAGE_PREFIX = "data-sandbox-"


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    arch: str
    source: str


class NotChecked(Exception):
    """The security index could not be fetched or verified: nothing was concluded."""


def parse_deb822(text: str) -> list[dict[str, str]]:
    """Paragraphs of a Debian control file (dpkg status, Packages); continuation lines
    are joined, as only single-line fields are read here."""
    out: list[dict[str, str]] = []
    for para in re.split(r"\n\s*\n", text.strip()):
        fields: dict[str, str] = {}
        last = None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and last:
                fields[last] += "\n" + line.strip()
            elif ":" in line:
                last, _, value = line.partition(":")
                fields[last] = value.strip()
        if fields:
            out.append(fields)
    return out


def installed(status_text: str) -> list[DebPackage]:
    pkgs = []
    for p in parse_deb822(status_text):
        if p.get("Status", "").endswith(" installed") and "Package" in p:
            source = p.get("Source", p["Package"]).split(" ")[0]
            pkgs.append(DebPackage(p["Package"], p["Version"], p.get("Architecture", "all"),
                                   source))
    return sorted(pkgs, key=lambda d: d.name)


def newer(candidate: str, than: str) -> bool:
    """Debian version order, by dpkg itself (epochs, tildes and revisions included)."""
    return subprocess.run(["dpkg", "--compare-versions", candidate, "gt", than],
                          check=False).returncode == 0


def pending(pkgs: Iterable[DebPackage], index: list[dict[str, str]]) -> list[dict[str, str]]:
    """Installed packages whose security-suite version is newer than the installed one."""
    mine = {(d.name, d.arch): d for d in pkgs}
    latest: dict[tuple[str, str], str] = {}
    for p in index:
        key = (p.get("Package", ""), p.get("Architecture", ""))
        if key in mine and (key not in latest or newer(p["Version"], latest[key])):
            latest[key] = p["Version"]
    found = []
    for key, fixed in sorted(latest.items()):
        d = mine[key]
        if newer(fixed, d.version):
            found.append({"package": d.name, "installed": d.version, "fixed": fixed})
    return found


def _get(url: str) -> bytes:
    if not url.startswith(("http://", "https://")):
        raise NotChecked(f"not an http(s) mirror: {url}")
    try:
        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 (scheme checked)
            data: bytes = r.read()
            return data
    except OSError as e:
        raise NotChecked(f"cannot fetch {url}: {type(e).__name__}") from None


def security_index(suite: str, arch: str, mirror: str = SECURITY_MIRROR,
                   keyring: Path = KEYRING) -> list[dict[str, str]]:
    """The security suite's Packages for ``arch``, verified from the signed InRelease."""
    base = f"{mirror.rstrip('/')}/dists/{suite}-security"
    inrelease = _get(f"{base}/InRelease")
    if not keyring.exists():
        raise NotChecked(f"no Debian archive keyring at {keyring}")
    with tempfile.TemporaryDirectory() as tmp:
        signed = Path(tmp) / "InRelease"
        signed.write_bytes(inrelease)
        out = Path(tmp) / "Release"
        verify = subprocess.run(["gpgv", "--keyring", str(keyring), "--output", str(out),
                                 str(signed)], capture_output=True, check=False)
        if verify.returncode != 0:
            raise NotChecked(f"{base}/InRelease does not verify with {keyring}")
        release = out.read_text()
    rel = f"main/binary-{arch}/Packages.xz"
    m = re.search(rf"^ ([0-9a-f]{{64}})\s+\d+\s+{re.escape(rel)}$", release.split("SHA256:")[-1],
                  re.M)
    if m is None:
        raise NotChecked(f"{base}/InRelease lists no {rel}")
    xz = _get(f"{base}/{rel}")
    if hashlib.sha256(xz).hexdigest() != m.group(1):
        raise NotChecked(f"{base}/{rel} does not match the hash in InRelease")
    return parse_deb822(lzma.decompress(xz).decode())


def image_status(tag: str) -> str:
    """The image's dpkg status file, copied out of a created (never started) container."""
    # imported here: the sbom step runs where docker is not installed
    from containers.engine import docker_client

    client = docker_client()
    container = client.containers.create(tag, command=["/bin/true"], network_disabled=True)
    try:
        stream, _ = container.get_archive(STATUS_PATH)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile("status")
            assert member is not None
            return member.read().decode()
    finally:
        container.remove(force=True)


def images(explicit: list[str]) -> list[str]:
    """The images to audit: those named, or every local ``data-sandbox-*`` image."""
    if explicit:
        return explicit
    # imported here: the sbom step runs where docker is not installed
    from containers.engine import docker_client

    tags = {t for img in docker_client().images.list() for t in img.tags
            if t.startswith(IMAGE_PREFIX)}
    return sorted(tags)


def suite_of(status_text: str) -> str:
    """The Debian release the image was made from (base-files' version: 12.x = bookworm)."""
    base = next((p for p in installed(status_text) if p.name == "base-files"), None)
    major = base.version.split(".")[0] if base else ""
    suites = {"11": "bullseye", "12": "bookworm", "13": "trixie"}
    if major not in suites:
        raise NotChecked("cannot tell the image's Debian release (no base-files)")
    return suites[major]


def sbom(tag: str, status_text: str) -> str:
    """A CycloneDX 1.5 JSON document of the image's installed Debian packages."""
    # imported here: cyclonedx-python-lib lives in the audit tools' environment
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot5
    from packageurl import PackageURL

    bom = Bom()
    root = Component(name=tag, type=ComponentType.CONTAINER, bom_ref=f"image:{tag}")
    bom.metadata.component = root
    for d in installed(status_text):
        purl = PackageURL("deb", "debian", d.name, d.version,
                          {"arch": d.arch, **({"upstream": d.source}
                                              if d.source != d.name else {})})
        bom.components.add(Component(name=d.name, version=d.version,
                                     type=ComponentType.LIBRARY, purl=purl,
                                     bom_ref=purl.to_string()))
    bom.register_dependency(root, bom.components)
    return str(JsonV1Dot5(bom).output_as_string(indent=2))


def _safe(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tag)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m containers.supply_chain")
    sub = ap.add_subparsers(dest="cmd", required=True)
    chk = sub.add_parser("check", help="pending Debian security updates of the images")
    chk.add_argument("--image", action="append", default=[])
    chk.add_argument("--out", type=Path, required=True,
                     help="directory for <image>.dpkg-status and the report")
    chk.add_argument("--mirror", default=SECURITY_MIRROR)
    chk.add_argument("--strict", action="store_true",
                     help="exit 2 when an image could not be checked")
    sb = sub.add_parser("sbom", help="CycloneDX SBOMs from the saved status files")
    sb.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cmd == "sbom":
        for status in sorted(args.out.glob("*.dpkg-status")):
            tag = json.loads(status.with_suffix(".image.json").read_text())["tag"]
            target = args.out / f"{status.stem}.cdx.json"
            target.write_text(sbom(tag, status.read_text()))
            print(f"sbom {tag}: {target}")
        return 0
    findings, unchecked = 0, 0
    report: dict[str, object] = {}
    for tag in images(args.image):
        status = image_status(tag)
        (args.out / f"{_safe(tag)}.dpkg-status").write_text(status)
        (args.out / f"{_safe(tag)}.image.json").write_text(json.dumps({"tag": tag}))
        pkgs = installed(status)
        try:
            arch = next(d.arch for d in pkgs if d.arch != "all")
            found = pending(pkgs, security_index(suite_of(status), arch, args.mirror))
        except NotChecked as e:
            unchecked += 1
            print(f"NOT CHECKED {tag}: {e}")
            report[tag] = {"checked": False, "why": str(e)}
            continue
        findings += len(found)
        report[tag] = {"checked": True, "packages": len(pkgs), "pending_security": found}
        print(f"{tag}: {len(pkgs)} packages, {len(found)} with a pending security update")
        for f in found:
            print(f"  {f['package']} {f['installed']} -> {f['fixed']}")
    (args.out / "debian-security.json").write_text(json.dumps(report, indent=2))
    if findings:
        return 1
    return 2 if unchecked and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
