"""TurnTracker and the report from hand-made event sequences (the pairing rules, edge cases)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from voice_runtime import call_events as ev
from voice_runtime.call_events import CallEvent
from voice_runtime.metrics import JsonlCallLog, TurnTracker, percentile, read_call_log
from voice_runtime.metrics.report import build_report


def feed(tracker: TurnTracker, *events: tuple[float, str, dict[str, Any]]) -> None:
    for at, kind, data in events:
        tracker.on_event(CallEvent(kind, at, "CA1", data))


def agent_turn(t: float, text: str, *, stopped: bool = False, sent: bool = True) -> list[tuple[float, str, dict[str, Any]]]:
    events = [(t, ev.TTS_START, {"text": text}), (t + 0.01, ev.TTS_FIRST_AUDIO, {"latency": 0.01})]
    if sent:
        events.append((t + 0.02, ev.AUDIO_SENT, {"playout_at": t + 0.02}))
    events.append((t + 0.05, ev.TTS_END, {"text": text, "audio_seconds": 1.0, "stopped": stopped}))
    return events


def test_a_greeting_answers_nothing_and_the_answer_gets_the_headline() -> None:
    tracker = TurnTracker()
    feed(tracker, (0.0, ev.STREAM_STARTED, {"carrier": "twilio"}), *agent_turn(0.1, "Hi"),
         (1.2, ev.MARK_PLAYED, {"name": "speech"}),
         (2.0, ev.STT_SPEECH_STARTED, {"barge_in": False}), (3.4, ev.SPEECH_ENDED, {"ended_at": 3.0}),
         (3.5, ev.STT_FINAL, {"text": "hello"}), *agent_turn(3.6, "Hello to you"), (5.0, ev.CALL_ENDED, {"reason": "hangup"}))
    greeting, answer = tracker.agent_turns
    assert greeting.answers is None and greeting.response_s is None
    assert answer.answers == 0
    assert abs(answer.response_s - 0.62) < 1e-9  # type: ignore[operator]  # audible 3.62 - stopped 3.0
    assert abs(answer.think_s - 0.1) < 1e-9  # type: ignore[operator]
    assert abs(tracker.caller_turns[0].stt_latency_s - 0.5) < 1e-9  # type: ignore[operator]
    report = build_report(tracker, call_id="CA1", session_stats={"sequence_gaps": 2}, stt_stats={"reconnects": 1},
                          stt_active=True, wall_clock_offset=0.0)
    assert report.duration_s == 5.0 and report.frames_lost == 2 and report.stt_reconnects == 1
    assert report.latencies["response"].count == 1 and report.latencies["tts_ttfb"].count == 2
    assert report.tts_characters == len("Hi") + len("Hello to you")


def test_a_transcript_without_a_speech_start_and_a_stale_untranscribed_turn() -> None:
    tracker = TurnTracker()
    feed(tracker, (1.0, ev.STT_SPEECH_STARTED, {}), (1.5, ev.SPEECH_ENDED, {"ended_at": 1.2}),  # never transcribed
         (20.0, ev.STT_FINAL, {"text": "typed in"}))  # e.g. inject_transcript, long after
    assert [t.text for t in tracker.caller_turns] == [None, "typed in"]
    assert tracker.caller_turns[1].ended_at is None and tracker.caller_turns[1].stt_latency_s is None
    feed(tracker, (21.0, ev.STT_FINAL, {"text": "again"}))
    assert [t.text for t in tracker.caller_turns] == [None, "typed in", "again"]


def test_a_stopped_turn_whose_audio_never_left_does_not_take_the_next_turns_wire_time() -> None:
    tracker = TurnTracker()
    feed(tracker, *agent_turn(0.0, "cut off", stopped=True, sent=False), *agent_turn(1.0, "next"))
    cut, nxt = tracker.agent_turns
    assert cut.wire_at is None and cut.interrupted
    assert nxt.wire_at == 1.02
    assert tracker.counts["interruptions"] == 1


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert abs(percentile(range(1, 101), 95) - 95.05) < 1e-9  # type: ignore[arg-type,operator]


def test_call_log_redacts_secret_looking_parameters_and_reads_back(tmp_path: Path) -> None:
    log = JsonlCallLog(tmp_path)
    log.on_event(CallEvent(ev.STREAM_STARTED, 1.0, "CA/1", {"parameters": {"auth_token": "s3cret", "lang": "en"}}))
    log.write_report("CA/1", {"call_id": "CA/1"})
    path = log.close()
    assert path is not None and "/" not in path.name[len("YYYYmmddTHHMMSSZ_"):]
    assert "s3cret" not in path.read_text()
    events, report = read_call_log(path)
    assert events[0]["data"]["parameters"] == {"auth_token": "***", "lang": "en"}
    assert report == {"schema": 1, "call_id": "CA/1"}


def test_call_log_file_io_happens_on_the_writer_thread_never_the_callers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events fire on the event loop: the open, the writes and the close must all run on the call-log thread."""
    import builtins

    from voice_runtime.metrics import jsonl

    writer = jsonl.LogFileThread()
    opened_on: list[str] = []
    real_open = builtins.open

    def spying_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if str(file).startswith(str(tmp_path)):
            opened_on.append(threading.current_thread().name)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spying_open)
    log = JsonlCallLog(tmp_path, writer=writer)
    for i in range(100):
        log.on_event(CallEvent(ev.MARK_PLAYED, float(i), "CA1", {"name": f"m{i}"}))
    log.write_report("CA1", {"call_id": "CA1"})
    log.close(wait=False)  # returns at once; the file is finished by the writer thread
    assert writer.drain(10)
    monkeypatch.setattr(builtins, "open", real_open)
    assert opened_on == ["call-log-writer"]
    assert log.path is not None
    events, report = read_call_log(log.path)
    assert [e["data"]["name"] for e in events] == [f"m{i}" for i in range(100)]  # every line, in order
    assert report == {"schema": 1, "call_id": "CA1"}


def test_call_log_queue_is_bounded_and_says_what_it_dropped(tmp_path: Path) -> None:
    """A disk that cannot keep up must not grow memory: lines past the byte budget are dropped and counted,
    and the file ends with a ``log_truncated`` line saying how many."""
    from voice_runtime.metrics import jsonl

    writer = jsonl.LogFileThread(max_pending_bytes=2_000)
    gate = threading.Event()
    stalled = JsonlCallLog(tmp_path / "stall", writer=writer)
    real_write_line = stalled._write_line

    def slow_disk(call_id: str | None, line: bytes) -> None:
        gate.wait(10)  # the disk is stuck until the test releases it
        real_write_line(call_id, line)

    stalled._write_line = slow_disk  # type: ignore[method-assign]
    log = JsonlCallLog(tmp_path, writer=writer)
    for i in range(200):  # ~90 bytes a line: far more than 2,000 bytes while the writer is stuck
        (stalled if i == 0 else log).on_event(CallEvent(ev.MARK_PLAYED, float(i), "CA2", {"name": f"m{i}"}))
    assert writer.dropped_lines > 100
    assert writer._pending_bytes <= 2_000
    gate.set()
    path = log.close(timeout=10)
    stalled.close(timeout=10)
    assert path is not None
    events, _ = read_call_log(path)
    assert events[-1]["kind"] == "log_truncated" and events[-1]["data"]["dropped_lines"] == writer.dropped_lines
    assert len(events) - 1 + writer.dropped_lines == 199  # kept + dropped = every event after the stalled one
