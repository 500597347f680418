"""The runner image: cached by recipe hash, ensure is a no-op once built."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest

from containers import image
from containers.image import (
    RunnerImage,
    ensure_runner_image,
    host_mirror,
    host_security_mirror,
    image_age_s,
    recipe_hash,
)


@pytest.mark.docker
def test_ensure_is_a_no_op_the_second_time(
    client: docker.DockerClient, runner_image: RunnerImage
) -> None:
    tarball = image.RUNNER.tarball(image.CACHE_DIR)
    mtime = tarball.stat().st_mtime_ns if tarball.exists() else None
    again = ensure_runner_image(client)
    assert again == runner_image
    assert again.tag == f"data-sandbox-runner:{recipe_hash()}"
    if mtime is not None:
        assert tarball.stat().st_mtime_ns == mtime  # not rebuilt


@pytest.mark.docker
def test_concurrent_ensures_agree(client: docker.DockerClient, runner_image: RunnerImage) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda _: ensure_runner_image(client), range(3)))
    assert got == [runner_image] * 3


@pytest.mark.docker
def test_image_runs_as_runner_and_has_the_recipe_label(
    client: docker.DockerClient, runner_image: RunnerImage
) -> None:
    cfg = client.images.get(runner_image.id).attrs["Config"]
    assert cfg["User"] == "10001:10001"
    assert cfg["Labels"]["data-sandbox.recipe"] == recipe_hash()


def test_recipe_hash_is_stable_and_short() -> None:
    assert recipe_hash() == recipe_hash() and len(recipe_hash()) == 12


def test_host_mirror_reads_deb822_and_legacy(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
    )
    assert host_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://old.example/debian bookworm main\n"
    )
    assert host_mirror(tmp_path) == "http://old.example/debian"
    (tmp_path / "sources.list").unlink()
    assert host_mirror(tmp_path) == image.DEFAULT_MIRROR


def test_host_security_mirror_reads_the_security_suite(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
    )
    assert host_security_mirror(tmp_path) == "http://mirror.example/debian-security"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    assert host_security_mirror(tmp_path) == image.DEFAULT_SECURITY_MIRROR


def test_the_runner_recipe_applies_security_updates() -> None:
    assert image.RUNNER.security_updates
    without = image.Recipe("runner", image.REPOSITORY, image.PACKAGES, image.CHANGES,
                           image.STRIP_SCRIPT, security_updates=False)
    assert without.digest() != image.RUNNER.digest()


@pytest.mark.docker
def test_image_age_is_read_from_the_engine(client: docker.DockerClient,
                                           runner_image: RunnerImage) -> None:
    age = image_age_s(client, runner_image.tag)
    assert age is not None and 0 <= age < 365 * 86400
    assert image_age_s(client, "data-sandbox-runner:no-such-tag") is None
