"""The runner image, built offline from Debian packages.

No registry is reachable from the provider's domain, so the image is not pulled: it is made
with ``debootstrap --variant=minbase`` from the Debian mirror apt already uses on the host,
stripped by ``containers/runner/strip.sh`` (no apt, docs, locales, setuid bits, su/mount),
given a non-root ``runner`` user (uid/gid 10001), tarred and imported into the engine.

The tag is ``data-sandbox-runner:<recipe-hash12>``; the hash covers the suite, the package
list, the image config and the text of ``strip.sh``, so changing any of them builds a new
image and an unchanged recipe never rebuilds. Two caches: the rootfs tarball in
``/var/cache/data-sandbox/`` (survives ``docker system prune``) and the image in the engine.
Builds take an exclusive lock file, so a concurrent second ``ensure`` waits, then finds the
image and returns it; tarballs are written under a temporary name and renamed into place.

``python -m containers.image ensure`` prints ``<tag> <id>`` and builds when missing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from containers.engine import docker_client
from containers.hardening import RUNNER_GID, RUNNER_UID
from containers.runspec import ExecutorError

REPOSITORY = "data-sandbox-runner"
CACHE_DIR = Path(os.environ.get("DATA_SANDBOX_CACHE", "/var/cache/data-sandbox"))
STRIP_SCRIPT = Path(__file__).with_name("runner") / "strip.sh"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Everything that decides the image's content, except the mirror (a source, not a recipe).
SUITE = "bookworm"
VARIANT = "minbase"
#: What analysis scripts may import: the standard library, numpy, pandas. Extend here.
PACKAGES: tuple[str, ...] = ("python3", "python3-numpy", "python3-pandas")
#: Image config applied at import (``docker import --change``).
CHANGES: tuple[str, ...] = (
    f"USER {RUNNER_UID}:{RUNNER_GID}",
    "WORKDIR /tmp",
    "ENV HOME=/tmp PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8",
    'CMD ["/usr/bin/python3", "-I", "-B", "/job/script.py"]',
)


@dataclass(frozen=True)
class RunnerImage:
    tag: str
    id: str


def recipe_hash() -> str:
    """12 hex digits of sha256 over the recipe and the strip script."""
    h = hashlib.sha256()
    recipe = {"suite": SUITE, "variant": VARIANT, "packages": PACKAGES, "changes": CHANGES}
    h.update(json.dumps(recipe, sort_keys=True).encode())
    h.update(b"\0")
    h.update(STRIP_SCRIPT.read_bytes())
    return h.hexdigest()[:12]


def runner_tag() -> str:
    return f"{REPOSITORY}:{recipe_hash()}"


def host_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt already uses here (deb822 ``debian.sources`` or ``sources.list``)."""
    deb822 = sources_dir / "sources.list.d" / "debian.sources"
    if deb822.is_file():
        for stanza in deb822.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
    legacy = sources_dir / "sources.list"
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if m and m.group(2) == SUITE:
                return m.group(1)
    return DEFAULT_MIRROR


def find_image(client: docker.DockerClient, tag: str) -> RunnerImage | None:
    try:
        img = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    return RunnerImage(tag=tag, id=str(img.id))


@contextmanager
def _build_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # blocks while another process builds
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise ExecutorError(f"runner image: {what} failed (exit {proc.returncode}): {tail}")


def build_rootfs_tarball(cache_dir: Path, digest: str, mirror: str) -> Path:
    """debootstrap + strip + tar into ``<cache_dir>/runner-<digest>.tar``; returns its path."""
    final = cache_dir / f"runner-{digest}.tar"
    if final.is_file():
        return final
    if shutil.which("debootstrap") is None:
        raise ExecutorError("runner image: debootstrap is not installed (run `make engine`)")
    debs = cache_dir / "debs"  # downloaded .debs, reused by the next recipe
    debs.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"build-{digest}-", dir=cache_dir))
    root = work / "rootfs"
    try:
        pkgs = ",".join(PACKAGES)
        _run(
            ["debootstrap", f"--variant={VARIANT}", f"--include={pkgs}",
             f"--cache-dir={debs}", SUITE, str(root), mirror],
            "debootstrap",
        )
        # Record exact package versions before stripping (provenance for the ledger/docs).
        manifest = subprocess.run(
            ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
             "-f=${Package} ${Version}\n"],
            capture_output=True, text=True, check=False,
        ).stdout
        (root / "etc" / "data-sandbox-runner.manifest").write_text(manifest)
        (cache_dir / f"runner-{digest}.manifest").write_text(manifest)
        _run(["sh", str(STRIP_SCRIPT), str(root)], "strip.sh")
        tmp = work / "rootfs.tar"
        # --numeric-owner: ownership by id, not by the host's names; no --xattrs so no file
        # capabilities reach the image.
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tmp), "."], "tar")
        os.replace(tmp, final)  # atomic: a reader sees no tarball or a whole one
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def import_tarball(client: docker.DockerClient, tarball: Path, digest: str) -> RunnerImage:
    changes = [*CHANGES, f"LABEL data-sandbox.recipe={digest}"]
    try:
        client.api.import_image_from_file(
            str(tarball), repository=REPOSITORY, tag=digest, changes=changes
        )
    except docker.errors.APIError as e:
        raise ExecutorError(f"runner image: docker import failed: {e}") from e
    img = find_image(client, f"{REPOSITORY}:{digest}")
    if img is None:
        raise ExecutorError("runner image: import reported success but the tag is missing")
    return img


def ensure_runner_image(
    client: docker.DockerClient, *, cache_dir: Path = CACHE_DIR, mirror: str | None = None
) -> RunnerImage:
    """The runner image for the current recipe, building it when missing. Idempotent."""
    digest = recipe_hash()
    tag = f"{REPOSITORY}:{digest}"
    found = find_image(client, tag)
    if found is not None:
        return found
    with _build_lock(cache_dir):
        found = find_image(client, tag)  # another process may have built it meanwhile
        if found is not None:
            return found
        # We hold the lock: any build-* dir is debris of a build that was killed midway.
        for stale in cache_dir.glob("build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        t0 = time.monotonic()
        tarball = build_rootfs_tarball(cache_dir, digest, mirror or host_mirror())
        t1 = time.monotonic()
        img = import_tarball(client, tarball, digest)
        t2 = time.monotonic()
        record = {"tag": tag, "id": img.id, "rootfs_s": round(t1 - t0, 1),
                  "import_s": round(t2 - t1, 1), "tar_bytes": tarball.stat().st_size,
                  "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (cache_dir / f"runner-{digest}.build.json").write_text(json.dumps(record, indent=1))
        return img


def main(argv: list[str]) -> int:
    if argv[1:] == ["tag"]:
        print(runner_tag())
        return 0
    if argv[1:] != ["ensure"]:
        print("usage: python -m containers.image ensure|tag", file=sys.stderr)
        return 2
    img = ensure_runner_image(docker_client(timeout_s=600))
    print(f"{img.tag} {img.id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
