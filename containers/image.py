"""Container images built offline from Debian packages: the runner, and the services'.

No registry is reachable from the provider's domain, so no image is pulled: each is made
with ``debootstrap --variant=minbase`` from the Debian mirror apt already uses on the host,
brought up to date with Debian's security suite (``apt-get upgrade`` in the tree, then
apt's lists dropped), given its recipe's payload and strip script, tarred and imported into
the engine. The runner's recipe is here; the controller's, the agent's and PostgreSQL's are
in :mod:`containers.service_images`, built by the same functions.

The runner's strip script (``containers/runner/strip.sh``) removes apt, docs, locales,
setuid bits, su/mount and adds the non-root ``runner`` user (uid/gid 10001).

A tag is ``<repository>:<recipe-hash12>``; the hash covers the suite, the package list,
the image config, the strip script and the payload, so changing any of them builds a new
image and an unchanged recipe never rebuilds on ``ensure``. Security updates arrive
without a recipe change, so ``refresh`` rebuilds under the same tag, and each image carries
its build time (label ``data-sandbox.built``): the agent reports a runner image older than
its allowed age (:func:`image_age_s`). Two caches: the rootfs tarball in
``/var/cache/data-sandbox/`` (survives ``docker system prune``) and the image in the
engine. Builds take an exclusive lock file, so a concurrent second ``ensure`` waits, then
finds the image and returns it; tarballs are written under a temporary name and renamed.

``python -m containers.image ensure`` prints ``<tag> <id>`` and builds when missing;
``refresh`` rebuilds with today's security updates; ``age`` prints the image's age in s.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
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
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
BUILT_LABEL = "data-sandbox.built"
RECIPE_LABEL = "data-sandbox.recipe"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

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
#: Apply the suite's security updates at build (the apt sources written into the tree for
#: that are removed again by strip scripts that remove apt).
SECURITY_UPDATES = True


@dataclass(frozen=True)
class Recipe:
    """What one image is made of. ``payload`` runs on the tree after the updates and before
    the strip script (e.g. installing the project); ``payload_digest`` names its inputs."""

    name: str
    repository: str
    packages: tuple[str, ...]
    changes: tuple[str, ...]
    strip_script: Path
    payload: Callable[[Path], None] | None = None
    payload_digest: str = ""
    security_updates: bool = SECURITY_UPDATES

    def base_digest(self) -> str:
        """sha256 over the tree before its payload: suite, packages, updates."""
        recipe: dict[str, object] = {"suite": SUITE, "variant": VARIANT,
                                     "packages": self.packages}
        if self.security_updates:
            recipe["security_updates"] = True
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()

    def rootfs_digest(self) -> str:
        """sha256 over what the tree holds: the base, the payload, the strip script.
        Recipes that differ only in their image config share one tarball."""
        if not self.payload_digest and not self.security_updates:
            # The form the runner's recipe hash had before updates were applied at build.
            h = hashlib.sha256(json.dumps({"suite": SUITE, "variant": VARIANT,
                                           "packages": self.packages}, sort_keys=True).encode())
        else:
            h = hashlib.sha256(self.base_digest().encode())
        h.update(b"\0")
        h.update(self.strip_script.read_bytes())
        if self.payload_digest:
            h.update(b"\0" + self.payload_digest.encode())
        return h.hexdigest()

    def digest(self) -> str:
        """12 hex digits of sha256 over the tree's recipe and the image config."""
        h = hashlib.sha256(self.rootfs_digest().encode())
        h.update(json.dumps(self.changes).encode())
        return h.hexdigest()[:12]

    def tag(self) -> str:
        return f"{self.repository}:{self.digest()}"

    def tarball(self, cache_dir: Path) -> Path:
        return cache_dir / f"{self.name}-{self.rootfs_digest()[:12]}.tar"

    def base_tarball(self, cache_dir: Path) -> Path:
        """The tree before its payload (kept only for recipes with one)."""
        return cache_dir / f"{self.name}-base-{self.base_digest()[:12]}.tar"


RUNNER = Recipe("runner", REPOSITORY, PACKAGES, CHANGES, STRIP_SCRIPT)


@dataclass(frozen=True)
class RunnerImage:
    tag: str
    id: str


def recipe_hash() -> str:
    """The runner recipe's hash (12 hex digits)."""
    return RUNNER.digest()


def runner_tag() -> str:
    return RUNNER.tag()


def _host_sources(sources_dir: Path, suite: str) -> str | None:
    """The URI apt uses here for ``suite`` (deb822 ``debian.sources`` or ``sources.list``)."""
    deb822 = sources_dir / "sources.list.d" / "debian.sources"
    if deb822.is_file():
        for stanza in deb822.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and suite in suites.group(1).split():
                return uris.group(1)
    legacy = sources_dir / "sources.list"
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if m and m.group(2) == suite:
                return m.group(1)
    return None


def host_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt already uses here."""
    return _host_sources(sources_dir, SUITE) or DEFAULT_MIRROR


def host_security_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The mirror of Debian's security suite apt already uses here."""
    return _host_sources(sources_dir, f"{SUITE}-security") or DEFAULT_SECURITY_MIRROR


def find_image(client: docker.DockerClient, tag: str) -> RunnerImage | None:
    try:
        img = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    return RunnerImage(tag=tag, id=str(img.id))


def image_age_s(client: docker.DockerClient, tag: str, now: datetime | None = None
                ) -> float | None:
    """Seconds since the image was built (its label, else the engine's creation time);
    None when the engine has no such image."""
    try:
        attrs = client.images.get(tag).attrs
    except docker.errors.ImageNotFound:
        return None
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    built = labels.get(BUILT_LABEL)
    if built:
        at = datetime.strptime(built, TIME_FORMAT).replace(tzinfo=UTC)
    else:  # built before the label existed: import time is its build time
        at = datetime.fromisoformat(str(attrs["Created"])[:26].rstrip("Z")).replace(tzinfo=UTC)
    return max(0.0, ((now or datetime.now(UTC)) - at).total_seconds())


@contextmanager
def _build_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # blocks while another process builds
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_step(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise ExecutorError(f"image build: {what} failed (exit {proc.returncode}): {tail}")


def apply_security_updates(root: Path, mirror: str, security_mirror: str) -> None:
    """``apt-get upgrade`` inside the tree from the suite, its updates and its security
    suite; apt's downloaded lists and archives are then removed (size, and no stale lists)."""
    (root / "etc" / "apt" / "sources.list").write_text(
        f"deb {mirror} {SUITE} main\n"
        f"deb {mirror} {SUITE}-updates main\n"
        f"deb {security_mirror} {SUITE}-security main\n")
    host_resolv = Path("/etc/resolv.conf")
    resolv = root / "etc" / "resolv.conf"
    if host_resolv.is_file():  # the mirror's name is resolved inside the tree
        resolv.unlink(missing_ok=True)
        shutil.copyfile(host_resolv, resolv)
    # No daemon may start inside the tree while packages are configured.
    policy = root / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8"}
    try:
        run_step(["chroot", str(root), "apt-get", "-q", "update"], "apt-get update", env)
        run_step(["chroot", str(root), "apt-get", "-q", "-y", "-o",
                  "Dpkg::Options::=--force-confold", "upgrade"], "apt-get upgrade", env)
        run_step(["chroot", str(root), "apt-get", "clean"], "apt-get clean", env)
    finally:
        policy.unlink(missing_ok=True)
        resolv.write_text("")
    shutil.rmtree(root / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    (root / "var" / "lib" / "apt" / "lists" / "partial").mkdir(parents=True, exist_ok=True)


def _base_tree(cache_dir: Path, recipe: Recipe, root: Path, mirror: str,
               security_mirror: str | None, refresh: bool, work: Path) -> None:
    """debootstrap and the security updates into ``root``. A recipe with a payload (the
    project, which changes with every commit) keeps this tree as a tarball of its own, so
    a new commit costs the payload, not a new debootstrap."""
    base = recipe.base_tarball(cache_dir)
    if recipe.payload is not None and base.is_file() and not refresh:
        root.mkdir()
        run_step(["tar", "--numeric-owner", "-C", str(root), "-xf", str(base)], "untar base")
        return
    pkgs = ",".join(recipe.packages)
    run_step(["debootstrap", f"--variant={VARIANT}", f"--include={pkgs}",
              f"--cache-dir={cache_dir / 'debs'}", SUITE, str(root), mirror], "debootstrap")
    if recipe.security_updates:
        apply_security_updates(root, mirror, security_mirror or host_security_mirror())
    if recipe.payload is not None:
        tmp = work / "base.tar"
        run_step(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tmp), "."], "tar base")
        os.replace(tmp, base)


def build_rootfs_tarball(cache_dir: Path, digest: str, mirror: str,
                         recipe: Recipe = RUNNER, security_mirror: str | None = None,
                         refresh: bool = False) -> Path:
    """debootstrap + updates + payload + strip + tar into :meth:`Recipe.tarball`."""
    final = recipe.tarball(cache_dir)
    if final.is_file() and not refresh:
        return final
    if shutil.which("debootstrap") is None:
        raise ExecutorError("image build: debootstrap is not installed (run `make engine`)")
    debs = cache_dir / "debs"  # downloaded .debs, reused by the next recipe
    debs.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"build-{digest}-", dir=cache_dir))
    root = work / "rootfs"
    try:
        _base_tree(cache_dir, recipe, root, mirror, security_mirror, refresh, work)
        if recipe.payload is not None:
            recipe.payload(root)
        # Record exact package versions before stripping (provenance for the ledger/docs).
        manifest = subprocess.run(
            ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
             "-f=${Package} ${Version}\n"],
            capture_output=True, text=True, check=False,
        ).stdout
        (root / "etc" / f"data-sandbox-{recipe.name}.manifest").write_text(manifest)
        final.with_suffix(".manifest").write_text(manifest)
        run_step(["sh", str(recipe.strip_script), str(root)], recipe.strip_script.name)
        tmp = work / "rootfs.tar"
        # --numeric-owner: ownership by id, not by the host's names; no --xattrs so no file
        # capabilities reach the image.
        run_step(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tmp), "."], "tar")
        os.replace(tmp, final)  # atomic: a reader sees no tarball or a whole one
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def import_tarball(client: docker.DockerClient, tarball: Path, digest: str,
                   recipe: Recipe = RUNNER, built_at: str | None = None) -> RunnerImage:
    built = built_at or time.strftime(TIME_FORMAT, time.gmtime(tarball.stat().st_mtime))
    changes = [*recipe.changes, f"LABEL {RECIPE_LABEL}={digest}", f"LABEL {BUILT_LABEL}={built}"]
    try:
        client.api.import_image_from_file(
            str(tarball), repository=recipe.repository, tag=digest, changes=changes
        )
    except docker.errors.APIError as e:
        raise ExecutorError(f"image build: docker import failed: {e}") from e
    img = find_image(client, f"{recipe.repository}:{digest}")
    if img is None:
        raise ExecutorError("image build: import reported success but the tag is missing")
    return img


def ensure_image(client: docker.DockerClient, recipe: Recipe, *, cache_dir: Path = CACHE_DIR,
                 mirror: str | None = None, refresh: bool = False,
                 reuse_tarball: bool = False) -> RunnerImage:
    """The image for ``recipe``, built when missing (or anew with ``refresh``; with
    ``reuse_tarball`` too, only imported anew from a tree a sibling recipe just refreshed).
    Idempotent."""
    digest = recipe.digest()
    tag = f"{recipe.repository}:{digest}"
    if not refresh and (found := find_image(client, tag)) is not None:
        return found
    with _build_lock(cache_dir):
        if not refresh and (found := find_image(client, tag)) is not None:
            return found  # another process built it meanwhile
        # We hold the lock: any build-* dir is debris of a build that was killed midway.
        for stale in cache_dir.glob("build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        t0 = time.monotonic()
        tarball = build_rootfs_tarball(cache_dir, digest, mirror or host_mirror(), recipe,
                                       refresh=refresh and not reuse_tarball)
        t1 = time.monotonic()
        img = import_tarball(client, tarball, digest, recipe)
        t2 = time.monotonic()
        record = {"tag": tag, "id": img.id, "rootfs_s": round(t1 - t0, 1),
                  "import_s": round(t2 - t1, 1), "tar_bytes": tarball.stat().st_size,
                  "built_at": time.strftime(TIME_FORMAT, time.gmtime())}
        (cache_dir / f"{recipe.repository}-{digest}.build.json").write_text(
            json.dumps(record, indent=1))
        return img


def ensure_runner_image(
    client: docker.DockerClient, *, cache_dir: Path = CACHE_DIR, mirror: str | None = None
) -> RunnerImage:
    """The runner image for the current recipe, building it when missing. Idempotent."""
    return ensure_image(client, RUNNER, cache_dir=cache_dir, mirror=mirror)


def main(argv: list[str]) -> int:
    args = argv[1:]
    if args == ["tag"]:
        print(runner_tag())
        return 0
    if args not in (["ensure"], ["refresh"], ["age"]):
        print("usage: python -m containers.image ensure|refresh|tag|age", file=sys.stderr)
        return 2
    client = docker_client(timeout_s=600)
    if args == ["age"]:
        age = image_age_s(client, runner_tag())
        print("absent" if age is None else f"{age:.0f}")
        return 0 if age is not None else 1
    img = ensure_image(client, RUNNER, refresh=args == ["refresh"])
    print(f"{img.tag} {img.id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
