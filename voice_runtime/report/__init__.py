"""A picture of one call: ``render(call.jsonl, "call.png" | "call.svg" | "call.html")``.

Reads the call's JSON-lines log (``docs/observability.md``), draws the caller and agent lanes with their
words, marks played or cleared, barge-ins, DTMF and provider errors, annotates the per-turn latencies and
puts the recording's waveform underneath. Needs matplotlib: ``pip install 'voice-runtime[report]'``.
"""

from __future__ import annotations

from pathlib import Path

from voice_runtime.report.calllog import CallLogWriter
from voice_runtime.report.timeline import Latency, Marker, Segment, Timeline, build_timeline, load_events

__all__ = ["render", "load_timeline", "Timeline", "Segment", "Marker", "Latency", "CallLogWriter", "FORMATS"]

FORMATS = (".png", ".svg", ".html")


def load_timeline(jsonl_path: str | Path) -> Timeline:
    events, report = load_events(jsonl_path)
    return build_timeline(events, report)


def render(jsonl_path: str | Path, out_path: str | Path, *, wav_path: str | Path | None = None, dpi: int = 110) -> Path:
    """Draw the call in ``jsonl_path`` to ``out_path``; the format follows the suffix (.png, .svg, .html).

    The waveform comes from ``wav_path``, else from the recording the log names (``recording_saved``); a
    recording that is missing is left out, not an error. ``dpi`` scales the PNG (16 inches wide).
    """
    from voice_runtime.report import draw

    out = Path(out_path)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot render to {out.name!r}: use one of {', '.join(FORMATS)}")
    timeline = load_timeline(jsonl_path)
    fig = draw.figure(timeline, wav_path=Path(wav_path) if wav_path else None, dpi=dpi)
    if suffix == ".html":
        from voice_runtime.report.html import page

        out.write_text(page(timeline, draw.svg_text(fig)), encoding="utf-8")
    else:
        draw.save(fig, out, suffix[1:])
    return out
