"""``benchmarks/echo_bench.py``'s decoding floor and uvloop-listening servers and ``--pin``, and ``echo_inproc.py``'s
STT styles, end to end.

The floor and uvloop rows are only meaningful if they really echo every byte (the generator matches each frame); a pinned row
only if the two processes really ran on a CPU each; the STT styles are only a before/after if every frame
reaches the STT in both, one inline and one by its queue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ._load import BENCHMARKS

pytest.importorskip("picows", reason="needs the [fast] extra: pip install -e '.[fast]'")


@pytest.mark.parametrize("server", ["bare-picows-decoded", "bare-picows-uvloop"])
def test_the_reference_echoes_return_every_frame_intact(server: str) -> None:
    root = BENCHMARKS.parent
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "echo_bench.py"), "--servers", server, "--calls", "5",
         "--runs", "1", "--duration", "1", "--warmup", "0.5"],
        check=True, capture_output=True, text=True, timeout=120, cwd=root,
    ).stdout
    (row,) = json.loads(out.strip().splitlines()[-1])["echo_bench"]
    assert row["server"] == server
    assert (row["frames_lost"], row["corrupt_calls"]) == (0, 0)
    first = json.loads(out.strip().splitlines()[0])
    assert first["frames_sent"] >= 5 * 25  # five calls for a second: about 50 frames each, all matched
    # The user/system split adds up to the total (each rounded to 3 places) and is summarised per server.
    split = first["server_user_ms_per_call_s"] + first["server_sys_ms_per_call_s"]
    assert abs(split - first["server_ms_per_call_s"]) <= 0.002
    assert row["user_ms"] == first["server_user_ms_per_call_s"] and row["sys_ms"] == first["server_sys_ms_per_call_s"]
    # Unpinned by default: both processes may run on every CPU this one may.
    assert first["pinned"] is False
    assert first["server_cpus"] == first["generator_cpus"] == sorted(os.sched_getaffinity(0))


def test_pin_gives_the_server_and_the_generator_a_cpu_each() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("--pin needs 2 CPUs; run this on a machine with at least two")
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "echo_bench.py"), "--servers", "bare-picows", "--calls", "3", "--runs", "1",
         "--duration", "1", "--warmup", "0.5", "--pin"],
        check=True, capture_output=True, text=True, timeout=120, cwd=BENCHMARKS.parent,
    ).stdout
    first = json.loads(out.strip().splitlines()[0])
    # Read back from the live processes (sched_getaffinity of their pids), not from the flag.
    assert first["pinned"] is True
    assert first["server_cpus"] == [cpus[-1]] and first["generator_cpus"] == [cpus[0]]
    assert (first["frames_lost"], first["corrupt_calls"]) == (0, 0) and first["frames_sent"] >= 3 * 25


@pytest.mark.parametrize("style", ["stt", "stt-queue"])
def test_every_frame_reaches_the_stt_inline_or_by_its_queue(style: str) -> None:
    root = BENCHMARKS.parent
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "echo_inproc.py"), "--style", style, "--calls", "20", "--frames", "2000"],
        check=True, capture_output=True, text=True, timeout=120, cwd=root,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["echo_ok"] is True  # every echo back, and every frame counted by the calls' STTs
    assert result["frames"] == 2000
