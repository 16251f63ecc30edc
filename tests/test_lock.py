"""Installs are reproducible: everything comes from uv.lock, and the lock cannot drift from
pyproject.toml unnoticed (the Makefile runs `uv lock --check` before the tests)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UV = ROOT / ".uv" / "bin" / "uv"


def _lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UV), "lock", "--check", "--python", sys.executable],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_SYSTEM_CERTS": "1"},
    )


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_every_locked_package_has_hashes() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    for package in lock["package"]:
        if package.get("source", {}).get("editable") or package.get("source", {}).get("virtual"):
            continue  # finrelay itself
        files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        assert files, package["name"]
        assert all(f["hash"].startswith("sha256:") for f in files), package["name"]


def test_installs_never_resolve_from_ranges() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "sync --frozen" in makefile
    assert "pip install" not in makefile.replace("--require-hashes", "").split("uv-requirements")[1]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_uv_itself_is_pinned_by_version_and_hash() -> None:
    text = (ROOT / ".ci" / "uv-requirements.txt").read_text()
    assert re.search(r"^uv==\d+\.\d+\.\d+ ", text, re.MULTILINE)
    assert len(re.findall(r"--hash=sha256:[0-9a-f]{64}", text)) >= 2


@pytest.mark.skipif(not UV.exists(), reason="uv is installed by `make`; run the suite through it")
def test_lock_check_passes_on_the_committed_files(project_copy: Path) -> None:
    result = _lock_check(project_copy)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not UV.exists(), reason="uv is installed by `make`; run the suite through it")
def test_lock_check_fails_when_pyproject_and_lock_disagree(project_copy: Path) -> None:
    pyproject = project_copy / "pyproject.toml"
    text = pyproject.read_text()
    assert '"msgspec>=0.19"' in text
    # A range the locked msgspec no longer satisfies: the lock is out of date.
    pyproject.write_text(text.replace('"msgspec>=0.19"', '"msgspec>=0.19,<0.20"'))
    result = _lock_check(project_copy)
    assert result.returncode != 0
    assert "lock" in (result.stderr + result.stdout).lower()
