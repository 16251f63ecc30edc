"""`make run` installs what the gateway needs and nothing of the test tooling; `make test` adds
the test extra; either after the other installs only what is missing, undoes nothing, and the
next run of either installs nothing.

Each test runs the Makefile's own install targets (its stamps) into a fresh environment under
tmp_path (`make VENV=...`), from uv's cache: the suite's own `make test` filled it."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _test_extra() -> set[str]:
    """The names pyproject.toml's `test` extra asks for."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = pyproject["project"]["optional-dependencies"]["test"]
    return {_normalized(re.split(r"[\[<>=!~; ]", requirement)[0]) for requirement in requirements}


class Environment:
    """A virtual environment the Makefile installs into, as `make VENV=<path>` does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.python = path / "bin" / "python"

    def stamp(self, kind: str) -> Path:
        return self.path / f".installed-{kind}"

    def make(self, *targets: Path, question: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "--no-print-directory", *(["-q"] if question else []), f"VENV={self.path}"]
            + [str(target) for target in targets],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            # Every package is in uv's cache already: nothing is fetched.
            env={**os.environ, "UV_OFFLINE": "1"},
        )

    def install(self, kind: str) -> str:
        result = self.make(self.stamp(kind))
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    def installed(self) -> set[str]:
        listing = subprocess.run(
            [
                str(self.python),
                "-c",
                "import importlib.metadata as m\n"
                "for d in m.distributions(): print(d.metadata['Name'])",
            ],
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return {_normalized(name) for name in listing.stdout.split()}

    def up_to_date(self) -> bool:
        """Whether `make` has nothing to do for either stamp (`make -q`)."""
        return self.make(self.stamp("run"), self.stamp("test"), question=True).returncode == 0


@pytest.fixture
def environment(tmp_path: Path) -> Environment:
    return Environment(tmp_path / "venv")


def test_make_run_installs_no_test_tooling(environment: Environment) -> None:
    environment.install("run")
    installed = environment.installed()
    assert "finrelay" in installed
    assert not installed & _test_extra(), "make run installed test tooling"
    assert not {"pytest", "playwright", "mypy", "ruff", "schemathesis"} & installed
    # The gateway itself works from that environment: every module of the app imports, and
    # the default config checks.
    gateway = environment.path / "bin" / "gateway"
    check = subprocess.run(
        [str(gateway), "check-config", "--config", str(ROOT / "config" / "gateway.toml")],
        cwd=environment.path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    imports = subprocess.run(
        [str(environment.python), "-c", "import gateway.app, gateway.cli, gateway.store.postgres"],
        cwd=environment.path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert imports.returncode == 0, imports.stderr


def test_make_test_after_make_run_adds_the_test_extra(environment: Environment) -> None:
    environment.install("run")
    environment.install("test")
    assert _test_extra() <= environment.installed()
    assert environment.up_to_date()


def test_make_run_after_make_test_keeps_the_test_extra(environment: Environment) -> None:
    environment.install("test")
    installed = environment.installed()
    assert _test_extra() <= installed
    environment.install("run")
    # Nothing removed: the next `make test` has nothing to install again.
    assert environment.installed() == installed
    assert environment.up_to_date()
