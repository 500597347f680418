"""The service images: the controller, the agent and PostgreSQL, built like the runner.

Same machinery as :mod:`containers.image` (debootstrap of Debian, the security suite's
updates, a strip script, ``docker import``), nothing pulled from a registry:

- ``data-sandbox-controller``: Debian's Python 3 with the project installed in a virtual
  environment at ``/opt/data-sandbox`` (from wheels built on the build host, so the tree
  itself downloads nothing), PostgreSQL's client tools for backups; runs ``sandbox serve``
  as uid 10002. Also runs a witness (``python -m ledger.witness serve``).
- ``data-sandbox-agent``: the same tree (one tarball, imported twice with a different
  config); runs ``sandbox agent`` as root, because it drives the provider's engine through
  its socket and mounts each job's ``/out`` tmpfs (docs/operations.md, "Containers").
- ``data-sandbox-postgres``: Debian's PostgreSQL 15; creates its cluster on first start
  (``containers/service/postgres-entrypoint.sh``).

``python -m containers.service_images ensure|refresh|tags|prune`` (``make images``).
Each source change is a new tag (about 1 GB each in the engine, and its tree in the build
cache); ``prune`` removes the service images and trees the current sources do not name.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import docker

from containers.engine import docker_client
from containers.image import CACHE_DIR, Recipe, RunnerImage, ensure_image, run_step

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent
SERVICE_DIR = HERE / "service"
STRIP = SERVICE_DIR / "strip.sh"
PG_ENTRYPOINT = SERVICE_DIR / "postgres-entrypoint.sh"
VENV = "/opt/data-sandbox"
# What the project's build reads: every file of its packages, and its build files.
PROJECT_PACKAGES = ("sandbox", "authz", "containers", "compute", "ledger")
PROJECT_FILES = ("pyproject.toml", "setup.py")
CONTROLLER_UID = 10002


def project_digest(root: Path = PROJECT_ROOT) -> str:
    """sha256 over the project's sources (names and contents), the wheels' only input
    besides the pinned dependencies named in pyproject.toml."""
    h = hashlib.sha256()
    files = [root / f for f in PROJECT_FILES]
    for pkg in PROJECT_PACKAGES:
        files += [p for p in (root / pkg).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".so", ".pyc")]
    for path in sorted(files):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def install_project(root: Path) -> None:
    """Build the project's wheel and its dependencies' on this host (PyPI, or the pip
    cache), then install them in the tree's virtual environment with no index at all."""
    if not (PROJECT_ROOT / "pyproject.toml").is_file():
        raise RuntimeError("service images are built from a source checkout of the project")
    wheels = root / "opt" / "wheels"  # inside the tree, removed after the install
    wheels.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="wheel-src-") as src:
        # A clean copy: no build/ or egg-info debris from a developer's tree gets in.
        for name in (*PROJECT_PACKAGES, *PROJECT_FILES, "README.md", "LICENSE"):
            p = PROJECT_ROOT / name
            if p.is_dir():
                shutil.copytree(p, Path(src) / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
            elif p.is_file():
                shutil.copy2(p, Path(src) / name)
        run_step([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                  "--wheel-dir", str(wheels), src], "pip wheel")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
           "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run_step(["chroot", str(root), "python3", "-m", "venv", VENV], "venv", env)
    run_step(["chroot", str(root), f"{VENV}/bin/pip", "install", "-q", "--no-index",
              "--no-cache-dir", "--find-links", "/opt/wheels", "data-sandbox"],
             "pip install (in the tree)", env)
    shutil.rmtree(wheels)
    # The entry points by their plain names, for `docker run IMAGE sandbox …`.
    for name in ("sandbox", "ledger-verify"):
        link = root / "usr" / "local" / "bin" / name
        link.unlink(missing_ok=True)
        link.symlink_to(f"{VENV}/bin/{name}")


def install_pg_entrypoint(root: Path) -> None:
    target = root / "usr" / "local" / "bin" / "data-sandbox-postgres"
    shutil.copyfile(PG_ENTRYPOINT, target)
    target.chmod(0o755)


_COMMON_ENV = ("ENV LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 "
               f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
# One package list for both services, so that they share one built tree (one debootstrap)
# and differ only in their image changes. The font is the controller's: the regulator's
# PDF report renders Chinese with it (sandbox/web/report_pdf.py); the agent carries it
# unused rather than cost a second tree.
SERVICE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "postgresql-client-15",
                    "fonts-wqy-microhei")


def controller_recipe(project: str | None = None) -> Recipe:
    """``project``: the project's digest, computed once per build so that the controller
    and the agent, imported from one tree, name the same sources."""
    return Recipe(
        "service", "data-sandbox-controller", SERVICE_PACKAGES,
        (f"USER {CONTROLLER_UID}:{CONTROLLER_UID}", "WORKDIR /var/lib/data-sandbox",
         _COMMON_ENV, "ENV SANDBOX_INSTANCE=/var/lib/data-sandbox SANDBOX_HOST=0.0.0.0",
         'CMD ["sandbox", "serve"]'),
        STRIP, install_project, project or project_digest())


def agent_recipe(project: str | None = None) -> Recipe:
    return Recipe(
        "service", "data-sandbox-agent", SERVICE_PACKAGES,
        ("USER 0:0", "WORKDIR /", _COMMON_ENV,
         'ENTRYPOINT ["sandbox", "agent"]', 'CMD ["--help"]'),
        STRIP, install_project, project or project_digest())


def postgres_recipe() -> Recipe:
    return Recipe(
        "postgres", "data-sandbox-postgres", ("postgresql-15",),
        ("USER postgres", "WORKDIR /var/lib/postgresql",
         "ENV LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data",
         'CMD ["/usr/local/bin/data-sandbox-postgres"]'),
        STRIP, install_pg_entrypoint,
        hashlib.sha256(PG_ENTRYPOINT.read_bytes()).hexdigest())


def ensure_service_images(client: docker.DockerClient, *, refresh: bool = False,
                          cache_dir: Path = CACHE_DIR) -> dict[str, RunnerImage]:
    """Every service image, built when missing (or anew with ``refresh``)."""
    project = project_digest()
    out = {"controller": ensure_image(client, controller_recipe(project), refresh=refresh,
                                      cache_dir=cache_dir)}
    # Same tree: a refresh above already rebuilt it, so only the import is redone.
    out["agent"] = ensure_image(client, agent_recipe(project), refresh=refresh,
                                reuse_tarball=True, cache_dir=cache_dir)
    out["postgres"] = ensure_image(client, postgres_recipe(), refresh=refresh,
                                   cache_dir=cache_dir)
    return out


def prune_images(client: docker.DockerClient, keep: set[str], repositories: tuple[str, ...]
                 ) -> list[str]:
    """Remove every image of ``repositories`` whose tags are none of ``keep`` and that no
    container (running or stopped) was created from; returns the tags removed. An image
    still in use stays: removing it under a running controller or agent would not stop
    it, but its container could no longer be re-created after a crash."""
    used = {c.image.id for c in client.containers.list(all=True) if c.image is not None}
    removed: list[str] = []
    for repo in repositories:
        for img in client.images.list(name=repo):
            tags = [t for t in img.tags if t.split(":", 1)[0] == repo]
            if not tags or set(img.tags) & keep or img.id in used:
                continue
            for tag in tags:
                try:
                    client.images.remove(tag, noprune=False)
                except docker.errors.ImageNotFound:
                    continue  # another prune removed it meanwhile
                removed.append(tag)
    return removed


def prune_trees(cache_dir: Path, recipes: tuple[Recipe, ...]) -> list[Path]:
    """Remove the cached trees (tarballs) of ``recipes``' names that none of them is built
    from: neither its tree nor its base (the debootstrap every source change reuses)."""
    keep = {r.tarball(cache_dir) for r in recipes}
    keep |= {r.base_tarball(cache_dir) for r in recipes}
    gone = sorted({t for r in recipes for t in cache_dir.glob(f"{r.name}-*.tar")} - keep)
    for t in gone:
        t.unlink(missing_ok=True)
    return gone


def prune(client: docker.DockerClient, cache_dir: Path = CACHE_DIR) -> list[str]:
    """What the current sources do not name: older service images and trees."""
    project = project_digest()
    recipes = (controller_recipe(project), agent_recipe(project), postgres_recipe())
    removed = prune_images(client, {r.tag() for r in recipes},
                           tuple(r.repository for r in recipes))
    return removed + [str(t) for t in prune_trees(cache_dir, recipes)]


def main(argv: list[str]) -> int:
    args = argv[1:]
    if args == ["prune"]:
        for what in prune(docker_client(timeout_s=900)):
            print(f"removed {what}")
        return 0
    if args == ["tags"]:
        for name, recipe in (("controller", controller_recipe()), ("agent", agent_recipe()),
                             ("postgres", postgres_recipe())):
            print(f"{name} {recipe.tag()}")
        return 0
    if args not in (["ensure"], ["refresh"]):
        print("usage: python -m containers.service_images ensure|refresh|tags|prune",
              file=sys.stderr)
        return 2
    images = ensure_service_images(docker_client(timeout_s=900), refresh=args == ["refresh"])
    for name, img in images.items():
        print(f"{name} {img.tag} {img.id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
