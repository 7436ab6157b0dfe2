"""``voice-runtime console`` in a real terminal: tmux runs it, ``send-keys`` types, ``capture-pane`` reads.

tmux is installed by ``scripts/test.sh`` when it runs as root; elsewhere these tests skip with one line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from .conftest import REPO, cli_command

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux; scripts/test.sh installs it as root)")


class Terminal:
    """One detached tmux session running a shell in the repository."""

    def __init__(self) -> None:
        self.name = f"vr-console-{uuid.uuid4().hex[:8]}"
        self._tmux("new-session", "-d", "-s", self.name, "-x", "200", "-y", "60", "-c", str(REPO))
        self._tmux("set-option", "-t", self.name, "history-limit", "5000")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True, timeout=10).stdout

    def type(self, text: str, enter: bool = True) -> None:
        self._tmux("send-keys", "-t", self.name, "-l", text)
        if enter:
            self._tmux("send-keys", "-t", self.name, "Enter")

    def screen(self) -> str:
        return self._tmux("capture-pane", "-t", self.name, "-p", "-S", "-1000")

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Poll the screen until ``pattern`` shows up (the terminal offers no change notification)."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        tick = threading.Event()
        while True:
            screen = self.screen()
            match = regex.search(screen)
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never appeared on the terminal:\n{screen}")
            tick.wait(0.2)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True, timeout=10)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    term = Terminal()
    try:
        yield term
    finally:
        term.close()


def _console(terminal: Terminal, *args: str) -> None:
    command = " ".join(cli_command() + ["console", *args])
    terminal.type(f"{command}; echo CONSOLE-EXITED=$?")
    terminal.wait_for(r"^console: you are the caller", timeout=60)


def test_typed_lines_are_spoken_heard_and_answered(terminal: Terminal) -> None:
    _console(terminal, "examples/appointment.py:flow", "--stt", "mock", "--tts", "mock")
    terminal.wait_for(r'AGENT   says: "Hello, this is Sunny Dental\. Can you make your appointment tomorrow at three\?"')
    terminal.type("yes that works")  # at once: talks over the question
    terminal.wait_for(r'YOU     say: "yes that works"')
    terminal.wait_for(r"BARGE   caller talked over the agent")
    terminal.wait_for(r"mark '[^']+' cleared")
    terminal.wait_for(r'HEARD   "yes that works"')
    terminal.wait_for(r'AGENT   says: "Great, you are all set for tomorrow at three\. Goodbye!"')
    terminal.wait_for(r"mark '[^']+' played")
    terminal.wait_for(r"CALL    ended \(hangup\)")
    terminal.wait_for(r"^CONSOLE-EXITED=0$", timeout=30)


def test_digits_alone_send_dtmf_and_hangup_ends_the_call(terminal: Terminal) -> None:
    _console(terminal, "examples/ivr_menu.py:flow", "--stt", "mock", "--tts", "mock")
    terminal.wait_for(r'AGENT   says: "Welcome to Sunny Dental\.')
    terminal.type("1")
    terminal.wait_for(r"YOU     press 1")
    terminal.wait_for(r"DTMF    1")
    terminal.wait_for(r'AGENT   says: "We are open Monday to Friday', timeout=40)
    terminal.type("/hangup")
    terminal.wait_for(r"YOU     hang up")
    terminal.wait_for(r"CALL    ended")
    terminal.wait_for(r"^CONSOLE-EXITED=0$", timeout=30)


def test_audio_without_a_sound_device_falls_back_to_text(terminal: Terminal) -> None:
    _console(terminal, "examples/ivr_menu.py:flow", "--stt", "mock", "--tts", "mock", "--audio")
    screen = terminal.wait_for(r"AUDIO   (.+): using text mode").group(1)
    assert "sounddevice" in screen or "sound device" in screen or "audio library" in screen
    terminal.wait_for(r'AGENT   says: "Welcome to Sunny Dental\.')
    terminal.type("0")
    terminal.wait_for(r'AGENT   says: "Please hold while I connect you', timeout=40)
    terminal.wait_for(r"^CONSOLE-EXITED=0$", timeout=60)


@pytest.mark.slow
def test_local_speech_goes_through_whisper(terminal: Terminal) -> None:
    pytest.importorskip("faster_whisper", reason="needs the [local] extra (Piper + Whisper)")
    _console(terminal, "examples/ivr_menu.py:flow")  # default providers: local when installed
    terminal.wait_for(r"console: you are the caller \(speech \(Piper\)\)")
    terminal.wait_for(r'AGENT   says: "Welcome to Sunny Dental\.', timeout=60)
    terminal.wait_for(r"mark '[^']+' played", timeout=60)  # let the menu finish, then answer by voice
    terminal.type("Opening hours, please.")
    heard = terminal.wait_for(r'HEARD   "([^"]+)"', timeout=60).group(1)
    assert "hours" in heard.lower(), heard
    terminal.wait_for(r'AGENT   says: "We are open Monday to Friday', timeout=60)
    terminal.wait_for(r"^CONSOLE-EXITED=0$", timeout=90)
