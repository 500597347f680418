"""The service images' recipes: what decides their tags, and what they share."""

from __future__ import annotations

from pathlib import Path

from containers import service_images as si
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
