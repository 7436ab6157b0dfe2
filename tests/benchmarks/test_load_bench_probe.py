"""The load benchmark's own measuring devices are correct (no timing asserted).

Each caller frame carries (call, counter, send time) in its first 18 μ-law bytes; the server-side probe must
decode exactly what was encoded, count duplicates, and the header must stay inaudible to the mock VAD so
the benchmark measures a silent caller as silent.
"""

from __future__ import annotations

from tests.benchmarks._load import load_benchmark
from voice_runtime.providers.mock import EnergyVad, frame_level

load_bench = load_benchmark("load_bench")


def _frame(call: int, counter: int, sent_us: int) -> bytes:
    header = f"{(call << 56) | (counter << 32) | sent_us:018x}".encode().translate(load_bench._TO_ULAW)
    return header + b"\xff" * (load_bench.FRAME - load_bench.HEADER)


def test_probe_decodes_call_and_counter_and_counts_duplicates() -> None:
    probe = load_bench.Probe()
    probe.active = True
    for counter in (0, 1, 2, 2, 3):
        probe.on_frame(_frame(255, counter, 123456))
    probe.on_frame(_frame(7, 0, 1))
    assert probe.calls[255] == [5, 1, 3]  # received, duplicates, highest counter
    assert probe.calls[7] == [1, 0, 0]
    assert len(probe.latency_us) == 6


def test_header_is_inaudible_to_the_vad() -> None:
    loudest = _frame(0xFFFF, 0xFFFFFF, 0xFFFFFFFF)
    assert frame_level(loudest) < 50  # the VAD threshold is 500
    vad = EnergyVad()
    assert all(vad.process(_frame(1, i, i)) is None for i in range(100))


def test_zero_mask_client_frame_layout() -> None:
    small, large = load_bench.ws_frame("x" * 10), load_bench.ws_frame("y" * 300)
    assert small[:6] == bytes((0x81, 0x80 | 10, 0, 0, 0, 0)) and small[6:] == b"x" * 10
    assert large[:2] == bytes((0x81, 0xFE)) and int.from_bytes(large[2:4], "big") == 300 and large[4:8] == b"\0\0\0\0"
