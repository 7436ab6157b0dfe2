"""``voice-runtime report``: hands the event log to ``voice_runtime.report.render`` when that module exists.

The timeline picture itself belongs to the observability work (``voice_runtime/report/``). Until it is on
this branch, the subprocess test checks the clear "not available" message; the in-process test stands a
module with the agreed ``render(path, out)`` signature in for it, so the hand-over is checked now.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from voice_runtime.cli import main

from .conftest import run_cli

HAS_REPORT = importlib.util.find_spec("voice_runtime.report") is not None


@pytest.mark.skipif(HAS_REPORT, reason="voice_runtime.report is installed: the real renderer is tested below")
def test_without_the_report_module_says_what_is_missing(tmp_path: Path) -> None:
    log = tmp_path / "call.jsonl"
    log.write_text('{"kind": "stream_started", "at": 0.0}\n')
    result = run_cli(["report", str(log)])
    assert result.returncode == 2
    assert result.stderr.startswith("voice-runtime report: error: timeline reports are not available in this install")
    assert "Traceback" not in result.stderr


def test_hands_path_and_output_to_render(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[Path, Path]] = []

    def render(path: Path, out: Path) -> Path:
        calls.append((path, out))
        out.write_bytes(b"\x89PNG")
        return out

    if not HAS_REPORT:
        monkeypatch.setitem(sys.modules, "voice_runtime.report", types.SimpleNamespace(render=render))
    log = tmp_path / "call.jsonl"
    log.write_text('{"kind": "stream_started", "at": 0.0}\n')
    assert main(["report", str(log)]) == 0
    assert (tmp_path / "call.png").exists()
    assert f"timeline: {tmp_path / 'call.png'}" in capsys.readouterr().out
    if not HAS_REPORT:
        assert calls == [(log, tmp_path / "call.png")]
    assert main(["report", str(log), "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").exists()
