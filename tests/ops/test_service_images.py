"""The service images' recipes: what decides their tags, and what they share."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from containers import service_images as si
from containers.engine import docker_client
from containers.image import Recipe


def test_controller_and_agent_share_one_tree_but_not_one_tag(tmp_path: Path) -> None:
    c, a = si.controller_recipe(), si.agent_recipe()
    assert c.tarball(tmp_path) == a.tarball(tmp_path)
    assert c.tag() != a.tag()
    assert c.repository == "data-sandbox-controller" and a.repository == "data-sandbox-agent"
    assert "USER 10002:10002" in c.changes and "USER 0:0" in a.changes
    assert si.postgres_recipe().tarball(tmp_path) != c.tarball(tmp_path)


def test_every_service_image_applies_security_updates() -> None:
    for recipe in (si.controller_recipe(), si.agent_recipe(), si.postgres_recipe()):
        assert recipe.security_updates


def test_a_change_to_the_project_is_a_new_tag_on_the_same_base(tmp_path: Path) -> None:
    root = tmp_path / "project"
    for name in si.PROJECT_PACKAGES:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text("")
    for name in si.PROJECT_FILES:
        (root / name).write_text("")
    before = si.project_digest(root)
    (root / "sandbox" / "__pycache__").mkdir()
    (root / "sandbox" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert si.project_digest(root) == before  # build debris is not the project
    (root / "sandbox" / "server.py").write_text("# new\n")
    after = si.project_digest(root)
    assert after != before
    c = si.controller_recipe()
    changed = Recipe(c.name, c.repository, c.packages, c.changes, c.strip_script,
                     c.payload, after)
    assert changed.tag() != c.tag()
    assert changed.base_digest() == c.base_digest()  # no new debootstrap for a commit


def test_prune_trees_keeps_the_current_trees_and_their_bases(tmp_path: Path) -> None:
    recipes = (si.controller_recipe("a" * 64), si.agent_recipe("a" * 64), si.postgres_recipe())
    current = {r.tarball(tmp_path) for r in recipes} | {r.base_tarball(tmp_path)
                                                       for r in recipes}
    older = {tmp_path / "service-000000000000.tar", tmp_path / "postgres-111111111111.tar",
             tmp_path / "service-base-222222222222.tar"}
    runner = tmp_path / "runner-333333333333.tar"  # not a service tree: never pruned here
    for p in (*current, *older, runner):
        p.write_bytes(b"")
    assert set(si.prune_trees(tmp_path, recipes)) == older
    assert all(p.exists() for p in (*current, runner))
    assert not any(p.exists() for p in older)


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    client = docker_client()
    yield client
    for c in client.containers.list(all=True, filters={"label": PRUNE_LABEL}):
        c.remove(force=True)
    for img in client.images.list(name=PRUNE_REPO):
        for tag in img.tags:
            client.images.remove(tag, force=True)
    client.close()


PRUNE_REPO = "data-sandbox-prune-test"
# Its own label: the engine is shared with other suites' containers, which this file's
# clean-up must never touch (it once removed a running end-to-end job's container).
PRUNE_LABEL = "data-sandbox.test-prune=1"


def _tiny_image(client: docker.DockerClient, tmp_path: Path, tag: str) -> str:
    """A distinct one-file image under ``PRUNE_REPO`` (its file names its tag, so two
    tags are two images)."""
    tree = tmp_path / tag
    tree.mkdir()
    (tree / "tag").write_text(tag)
    tar = tmp_path / f"{tag}.tar"
    with tarfile.open(tar, "w") as t:
        t.add(tree / "tag", arcname="tag")
    client.api.import_image_from_file(str(tar), repository=PRUNE_REPO, tag=tag,
                                      changes=[f"LABEL {PRUNE_LABEL}", 'CMD ["/tag"]'])
    return str(client.images.get(f"{PRUNE_REPO}:{tag}").id)


@pytest.mark.docker
def test_prune_images_removes_older_tags_but_not_one_in_use(
        engine: docker.DockerClient, tmp_path: Path) -> None:
    for tag in ("current", "older", "in-use"):
        _tiny_image(engine, tmp_path, tag)
    # A stopped container still holds its image: a crashed service is re-created from it.
    engine.containers.create(f"{PRUNE_REPO}:in-use", labels={"data-sandbox.test-prune": "1"})
    removed = si.prune_images(engine, {f"{PRUNE_REPO}:current"}, (PRUNE_REPO,))
    assert removed == [f"{PRUNE_REPO}:older"]
    left = {t for img in engine.images.list(name=PRUNE_REPO) for t in img.tags}
    assert left == {f"{PRUNE_REPO}:current", f"{PRUNE_REPO}:in-use"}
