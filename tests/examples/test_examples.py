"""The examples run offline, end to end, and do what they say (each script checks itself and exits 0)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("key,department", [("1", "sales"), ("2", "support")])
def test_ivr_with_recorded_prompts_routes_on_a_key_that_cuts_the_welcome(key: str, department: str, tmp_path: Path) -> None:
    ivr = load("ivr_recorded_prompts")
    report = ivr.run("mock", key, prompt_dir=tmp_path / "prompts")
    assert sorted(p.name for p in (tmp_path / "prompts").iterdir()) == ["invalid.wav", "sales.wav", "support.wav", "welcome.wav"]
    assert report["welcome_cut_by_key"] is True and report["welcome_heard_s"] < 2.0
    assert report["department"] == department and report["caller_heard_department_prompt"] is True
    assert report["caller_decoded_tones"] == ivr.REFERENCE


def test_ivr_main_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert load("ivr_recorded_prompts").main(["--key", "1"]) == 0
    assert '"department": "sales"' in capsys.readouterr().out


def test_hold_music_example() -> None:
    # One cycle is 1 s of music + the 1.36 s prompt (2.36 s): 8 s of hold leaves a full cycle of margin for a
    # loaded CI machine (5.5 s left 0.8 s, and one CI run heard the prompt only once).
    report = load("hold_music").run(hold_seconds=8.0, period=1.0)
    assert report["back"] is True and report["line_closed"] is True, report
    assert report["hold_ticks"] > 250 and report["silent_ticks_during_hold"] == 0, report
    assert report["still_holding_prompts_heard"] >= 2, report
