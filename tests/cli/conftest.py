"""Run ``voice-runtime`` as a user does: a real subprocess, its output read line by line as it appears."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.output_lines import OutputLines

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def cli_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m voice_runtime``."""
    script = Path(sys.executable).with_name("voice-runtime")
    return [str(script)] if script.exists() else [sys.executable, "-m", "voice_runtime"]


class CliProcess:
    """A running ``voice-runtime`` command; stdout and stderr collected as they arrive."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, cwd: Path = REPO, stdin: int | None = subprocess.DEVNULL) -> None:
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.args = args
        self.proc = subprocess.Popen(
            cli_command() + args,
            cwd=cwd,
            env=full_env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: kill() also reaches worker processes it forked
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.output = OutputLines(self.proc, stdout=self.proc.stdout, stderr=self.proc.stderr)
        self.stdout, self.stderr = self.output.lines["stdout"], self.output.lines["stderr"]

    @property
    def out(self) -> str:
        return self.output.text("stdout")

    @property
    def err(self) -> str:
        return self.output.text("stderr")

    def wait_for_line(self, pattern: str, timeout: float = 30.0, *, stream: str = "stdout", count: int = 1) -> re.Match[str]:
        """Block until ``count`` lines of ``stream`` match ``pattern`` (returns the last); fails with the output."""
        try:
            return self.output.wait_for(pattern, timeout, stream=stream, count=count)
        except AssertionError as exc:
            raise AssertionError(f"{self.args}: {exc}") from None

    def wait(self, timeout: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.args} still running after {timeout}s\n--- stdout\n{self.out}\n--- stderr\n{self.err}") from None
        self.output.join(5)
        return code

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        """Kill the command and every process it started (uvicorn workers outlive a killed parent otherwise)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone: nothing left running
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def cli() -> Iterator[type[CliProcess]]:
    """Start CLI processes with ``cli_factory(args, env=...)``; every one still running is killed at the end."""
    started: list[CliProcess] = []

    def factory(args: list[str], **kwargs):  # type: ignore[no-untyped-def]
        process = CliProcess(args, **kwargs)
        started.append(process)
        return process

    try:
        yield factory  # type: ignore[misc]
    finally:
        for process in started:
            process.kill()


def run_cli(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(cli_command() + args, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
