"""The install stamp: bootstrap.sh reinstalls only when pyproject.toml changed or an extra is missing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("install_stamp", REPO / "scripts" / "install_stamp.py")
assert _spec is not None and _spec.loader is not None
stamp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stamp)


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A directory shaped like an installed venv (what the check looks at), and a pyproject next to it."""
    root = tmp_path / ".venv"
    (root / "bin").mkdir(parents=True)
    for name in ("python", "voice-runtime"):
        (root / "bin" / name).write_text("")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    return root


def test_parse_extras() -> None:
    assert stamp.parse_extras(" local, dev,,local ") == ["dev", "local"]
    assert stamp.parse_extras("") == []


def test_fresh_venv_needs_install(venv: Path) -> None:
    assert not stamp.is_up_to_date(venv, venv.parent / "pyproject.toml", ["local"])


def test_recorded_install_is_up_to_date_for_same_or_fewer_extras(venv: Path) -> None:
    pyproject = venv.parent / "pyproject.toml"
    stamp.record(venv, pyproject, ["dev", "local", "plivo"])
    assert stamp.is_up_to_date(venv, pyproject, ["local"])  # demo.sh after test.sh: nothing to install
    assert stamp.is_up_to_date(venv, pyproject, [])
    assert stamp.is_up_to_date(venv, pyproject, ["dev", "local", "plivo"])
    assert not stamp.is_up_to_date(venv, pyproject, ["local", "azure"])  # a new extra: install


def test_changed_pyproject_needs_install_and_keeps_previous_extras(venv: Path) -> None:
    pyproject = venv.parent / "pyproject.toml"
    stamp.record(venv, pyproject, ["dev", "local"])
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["numpy"]\n')
    assert not stamp.is_up_to_date(venv, pyproject, ["local"])
    assert stamp.extras_to_install(venv, ["local", "azure"]) == ["azure", "dev", "local"]


def test_missing_console_script_or_corrupt_stamp_needs_install(venv: Path) -> None:
    pyproject = venv.parent / "pyproject.toml"
    stamp.record(venv, pyproject, ["local"])
    (venv / stamp.STAMP_NAME).write_text("{not json")
    assert not stamp.is_up_to_date(venv, pyproject, ["local"])
    stamp.record(venv, pyproject, ["local"])
    (venv / "bin" / "voice-runtime").unlink()  # a half-removed install
    assert not stamp.is_up_to_date(venv, pyproject, ["local"])


def test_stamp_content_is_the_pyproject_hash(venv: Path) -> None:
    import hashlib

    pyproject = venv.parent / "pyproject.toml"
    stamp.record(venv, pyproject, ["local"])
    data = json.loads((venv / stamp.STAMP_NAME).read_text())
    assert data == {"pyproject_sha256": hashlib.sha256(pyproject.read_bytes()).hexdigest(), "extras": ["local"]}


def test_command_line_exit_codes(venv: Path) -> None:
    pyproject = venv.parent / "pyproject.toml"
    script = str(REPO / "scripts" / "install_stamp.py")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=30)

    assert run("check", str(venv), str(pyproject), "local").returncode == 1
    assert run("record", str(venv), str(pyproject), "local,dev").returncode == 0
    assert run("check", str(venv), str(pyproject), "local").returncode == 0
    assert run("extras", str(venv), "azure").stdout.strip() == "azure,dev,local"
    assert run("bogus", str(venv)).returncode == 2


def test_this_checkout_is_stamped_by_its_install() -> None:
    """The venv running these tests was made by bootstrap.sh, so its stamp matches this pyproject.toml."""
    venv = Path(sys.prefix)
    if not (venv / stamp.STAMP_NAME).exists():
        pytest.skip("tests not run from a venv made by scripts/bootstrap.sh")
    assert stamp.is_up_to_date(venv, REPO / "pyproject.toml", ["local"])


def test_pyproject_license_is_spdx_without_license_classifier() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")]
