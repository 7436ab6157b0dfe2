"""The command itself: version, ``python -m``, help with examples everywhere, one-line errors with exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from voice_runtime.cli import SUBCOMMANDS, build_parser, main

from .conftest import REPO, run_cli

CONFIG_ENV = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN", "VOICE_STT", "VOICE_TTS", "VOICE_ADMIN_TOKEN", "VOICE_PUBLIC_URL", "VOICE_STREAM_URL")
SUBCOMMAND_NAMES = ["serve", "call", "console", "sms", "calls", "report", "demo"]


def test_version_and_python_dash_m() -> None:
    result = run_cli(["--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "voice-runtime 0.2.0"
    module = subprocess.run([sys.executable, "-m", "voice_runtime", "--version"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert module.returncode == 0 and module.stdout == result.stdout
    bare = subprocess.run([sys.executable, "-m", "voice_runtime"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "serve" in bare.stdout and "console" in bare.stdout  # help, not silence


def test_every_subcommand_is_registered() -> None:
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert sorted(choices) == sorted([*SUBCOMMAND_NAMES, "campaign"])  # campaign: voice_runtime/campaign/cli.py
    assert len(SUBCOMMANDS) == len(SUBCOMMAND_NAMES)


@pytest.mark.parametrize("name", SUBCOMMAND_NAMES)
def test_help_with_examples(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([name, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: voice-runtime {name}" in out
    examples = out.split("examples:", 1)
    assert len(examples) == 2 and f"voice-runtime {name}" in examples[1], out


def test_help_as_a_user_runs_it() -> None:
    result = run_cli(["serve", "--help"])
    assert result.returncode == 0 and "--drain-deadline" in result.stdout and "examples:" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "examples/missing.py:flow"], "no such file: examples/missing.py"),
        (["serve", "examples/ivr_menu.py"], "target must look like MODULE:OBJ"),
        (["serve", "examples/ivr_menu.py:nothing", "--stt", "mock", "--tts", "mock"], "has no attribute 'nothing'"),
        (["serve", "examples/ivr_menu.py:MENU", "--stt", "mock", "--tts", "mock"], "neither a VoiceServer nor a flow function"),
        (["serve", "no_such_module_xyz:flow"], "cannot import no_such_module_xyz"),
        (["serve", "examples/ivr_menu.py:flow"], "no speech provider configured"),
        (["serve", "examples/ivr_menu.py:flow", "--stt", "nope", "--tts", "mock"], "Unknown STT provider: 'nope'"),
        (["serve", "examples/ivr_menu.py:flow", "--stt", "mock", "--tts", "mock", "--carrier", "twilio"], "needs the server's public URL"),
        (["serve", "examples/ivr_menu.py:flow", "--stt", "mock", "--tts", "mock", "--carrier", "twilio", "--public-url", "https://x.example"], "TWILIO_ACCOUNT_SID is not set"),
        (["serve", "examples/ivr_menu.py:flow", "--stt", "mock", "--tts", "mock", "--carrier", "plivo", "--public-url", "https://x.example"], "PLIVO_AUTH_ID"),
        (["call", "+15550001111", "examples/reminder.py:flow", "--stt", "mock", "--tts", "mock", "--public-url", "https://x.example"], "TWILIO_ACCOUNT_SID is not set"),
        (["sms", "+15550001111", "hello", "--carrier", "twilio"], "TWILIO_ACCOUNT_SID is not set"),
        (["calls"], "no admin token"),
        (["report", "missing.jsonl"], "no such file: missing.jsonl"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in CONFIG_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(REPO)
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert lines[0].startswith(f"voice-runtime {args[0]}: error: ")


def test_errors_as_a_user_sees_them() -> None:
    """The same path through a real process: exit status 2, one line, no traceback."""
    result = run_cli(["serve", "examples/ivr_menu.py:flow", "--stt", "nope", "--tts", "mock"], env={name: "" for name in CONFIG_ENV})
    assert result.returncode == 2
    assert result.stderr.strip() == "voice-runtime serve: error: STT provider: Unknown STT provider: 'nope'; valid: azure, elevenlabs, local, mock"


def test_a_flow_module_that_raises_on_import_is_one_line(tmp_path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('config file missing')\n")
    result = run_cli(["serve", f"{broken}:flow", "--stt", "mock", "--tts", "mock"])
    assert result.returncode == 2
    assert result.stderr.strip() == f"voice-runtime serve: error: importing {broken} failed: RuntimeError: config file missing"
