"""The README's run command works without network: the second ``bash scripts/demo.sh`` runs inside a network
namespace that has only loopback, with pip's index and find-links disabled (so any install attempt fails).

The first run is the one that installed this venv (``scripts/test.sh`` → ``bootstrap.sh``); the test runs the
command once normally (a no-op install check and a short mock call), then again offline with real speech.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull, "PIP_EXTRA_INDEX_URL": "", "PIP_INDEX_URL": "http://127.0.0.1:9/"}


def _loopback_namespace_available() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2)"
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"unshare -n is not permitted here ({probe.stderr.strip() or probe.returncode}); run as root or with CAP_SYS_ADMIN"
    return None


def _venv_ready() -> str | None:
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        return "runs only from this checkout's .venv (made by scripts/bootstrap.sh)"
    return None


def _run_demo(args: list[str], *, offline: bool, tmp: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(OFFLINE_PIP if offline else {})
    env["HF_HUB_OFFLINE"] = "1" if offline else env.get("HF_HUB_OFFLINE", "")
    command = ["bash", "scripts/demo.sh", "--out-dir", str(tmp), *args]
    if offline:
        inner = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in command)
        command = ["unshare", "-n", "sh", "-c", inner]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_demo_runs_twice_the_second_time_with_only_loopback(tmp_path: Path) -> None:
    reason = _venv_ready() or _loopback_namespace_available()
    if reason:
        pytest.skip(reason)
    first = _run_demo(["--providers", "mock"], offline=False, tmp=tmp_path, timeout=180)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "result: OK" in first.stdout
    assert first.stderr.strip() == "", first.stderr  # nothing reinstalled: no pip or build-backend output

    second = _run_demo([], offline=True, tmp=tmp_path, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "result: OK" in second.stdout, second.stdout
    assert "Could not find a version" not in second.stderr and "pip" not in second.stderr, second.stderr
    if "with local speech providers" not in second.stdout:
        pytest.fail("the offline run fell back to mock providers: [local] should be installed by scripts/test.sh\n" + second.stdout)

    # Each run has its own folder: <YYYYmmdd-HHMMSS>-<call id>/call.wav; the second did not overwrite the first.
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) == 2, folders
    for folder in folders:
        assert re.fullmatch(r"\d{8}-\d{6}-[A-Za-z0-9_.-]+", folder.name), folder.name
        with wave.open(str(folder / "call.wav")) as wav:
            assert wav.getnchannels() == 2 and wav.getnframes() > 8000 * 5
        assert str(folder / "call.wav") in first.stdout + second.stdout
