"""Drawing a :class:`~voice_runtime.report.timeline.Timeline` with matplotlib (the ``[report]`` extra).

Layout, chosen to be read at a glance: two lanes (caller on top, agent below) on one time axis; speech as
bars with the words in them; the latency that matters drawn where it happens (a bracket from "caller
stopped" to "agent audible", labelled in ms); barge-ins, clears, DTMF and errors as labelled vertical lines;
and the recording's waveform underneath on the same axis (caller up, agent down), so a silence or an
overlap in the audio lines up with the event that caused it.
"""

from __future__ import annotations

import io
import textwrap
import wave
from pathlib import Path
from typing import Any

import numpy as np

from voice_runtime.report.timeline import Timeline

CALLER, AGENT = "#2f6db5", "#d9782d"
CALLER_BG, AGENT_BG = "#dce8f7", "#f9e3d2"
ALERT, DTMF, ERROR, MUTED = "#c62828", "#6a3fa0", "#111111", "#777777"
Y = {"caller": 1.0, "agent": 0.0}
BAR = 0.42


def _require_matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: searchable, selectable, small
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("drawing a call timeline needs matplotlib: pip install 'voice-runtime[report]'") from exc
    return plt


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _fit(text: str, width_px: float, font_px: float, lines: int = 2) -> str:
    """``text`` wrapped into at most ``lines`` lines of the bar's width, the rest cut with an ellipsis."""
    chars = int(width_px / (font_px * 0.56))
    if chars < 8:
        return ""
    wrapped = textwrap.wrap(text, chars, break_long_words=False) or [""]
    if any(len(line) > chars for line in wrapped[:lines]):
        return ""
    if len(wrapped) > lines:
        last = wrapped[lines - 1]
        wrapped = wrapped[: lines - 1] + [(last[: chars - 1] if len(last) >= chars else last).rstrip() + "…"]
    return "\n".join(wrapped)


def read_waveform(path: Path, bins: int) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Peak envelope per channel (caller, agent) in ``bins`` columns, normalised to 1, and the seconds."""
    try:
        with wave.open(str(path)) as wav:
            channels, rate, n = wav.getnchannels(), wav.getframerate(), wav.getnframes()
            data = np.frombuffer(wav.readframes(n), dtype="<i2").reshape(-1, channels)
    except (OSError, EOFError, wave.Error):
        return None
    if data.shape[0] == 0:
        return None
    caller = np.abs(data[:, 0].astype(np.int32))
    agent = np.abs(data[:, 1 if channels > 1 else 0].astype(np.int32))
    bins = max(1, min(bins, data.shape[0]))
    edges = np.linspace(0, data.shape[0], bins + 1).astype(int)
    peak = max(1, int(max(caller.max(), agent.max())))
    env_c = np.maximum.reduceat(caller, edges[:-1]) / peak
    env_a = np.maximum.reduceat(agent, edges[:-1]) / peak
    return env_c, env_a, data.shape[0] / rate


def figure(timeline: Timeline, *, wav_path: Path | None = None, width: float = 16.0, dpi: int = 110) -> Any:
    """The matplotlib Figure for ``timeline`` (``wav_path`` overrides the recording named in the log)."""
    plt = _require_matplotlib()
    wav = wav_path or timeline.recording_path
    wave_data = read_waveform(wav, 3000) if wav is not None and Path(wav).exists() else None
    rows = [3.2, 1.3] if wave_data is not None else [3.2]
    fig = plt.figure(figsize=(width, 2.0 + sum(rows)), dpi=dpi)
    grid = fig.add_gridspec(len(rows), 1, height_ratios=rows, hspace=0.08, left=0.06, right=0.985, top=0.86, bottom=0.09)
    ax = fig.add_subplot(grid[0])
    span = max(timeline.duration, 1.0)
    pad = span * 0.01
    ax.set_xlim(-pad, span + pad)
    ax.set_ylim(-0.75, 1.95)
    ax.set_yticks([Y["agent"], Y["caller"]], ["agent", "caller"], fontsize=12, fontweight="bold")
    ax.get_yticklabels()[0].set_color(AGENT)
    ax.get_yticklabels()[1].set_color(CALLER)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    for lane, bg in (("caller", CALLER_BG), ("agent", AGENT_BG)):
        ax.axhspan(Y[lane] - BAR / 2 - 0.06, Y[lane] + BAR / 2 + 0.06, color=bg, alpha=0.35, linewidth=0, zorder=0)

    px_per_s = fig.get_figwidth() * fig.dpi * 0.925 / (span + 2 * pad)
    font_px = 10 * fig.dpi / 72

    for start, end in timeline.paused:
        ax.axvspan(start, end, facecolor="#999999", alpha=0.18, hatch="//", edgecolor="#888888", linewidth=0, zorder=0.5)
        ax.text((start + end) / 2, 1.78, "recording paused", ha="center", fontsize=9, color=MUTED)

    for seg in timeline.segments:
        color = CALLER if seg.lane == "caller" else AGENT
        y = Y[seg.lane]
        width_s = max(seg.end - seg.start, 0.02)
        cleared = seg.outcome == "cleared"  # cut off: drawn pale with a red edge, so it reads as "not heard"
        ax.broken_barh([(seg.start, width_s)], (y - BAR / 2, BAR), facecolors="#f3cfb3" if cleared else color, alpha=0.95,
                       zorder=2, edgecolor=ALERT if cleared else color, linewidth=1.6 if cleared else 0.8, linestyle="--" if cleared else "-")
        label = _fit(f'"{seg.text}"', width_s * px_per_s - 8, font_px * 0.9) if seg.text else ""
        if label:
            ax.text(seg.start + 4 / px_per_s, y, label, va="center", ha="left", fontsize=9, color="#5a2a0a" if cleared else "white", linespacing=1.15,
                    fontweight="bold", zorder=3, clip_on=True)
        if seg.outcome:
            ax.text(seg.end, y - BAR / 2 - 0.04, seg.outcome, ha="right", va="top", fontsize=8.5,
                    color=ALERT if seg.outcome == "cleared" else "#2e7d32", zorder=3)

    levels = [1.62, 1.44]
    used = 0
    for m in timeline.markers:
        if m.kind in ("mark_played", "mark_cleared"):
            continue
        color = {"barge_in": ALERT, "clear": ALERT, "dtmf": DTMF, "error": ERROR}.get(m.kind, MUTED)
        style = "--" if m.kind in ("clear", "hangup", "end") else "-"
        ax.axvline(m.at, color=color, linestyle=style, linewidth=1.4, alpha=0.85, zorder=1.5)
        right = m.at > span * 0.85  # labels near the end go to the left of their line, not off the figure
        ax.text(m.at, levels[used % len(levels)], (m.label + " ") if right else (" " + m.label), ha="right" if right else "left",
                va="center", fontsize=9.5, color=color,
                fontweight="bold" if m.kind in ("barge_in", "dtmf", "error") else "normal", zorder=4,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
        used += 1

    for lat in timeline.latencies:
        # Three rows between the lanes: barge-in (at the caller's start), STT and response (both from the
        # caller's end, so they must not share a row).
        if lat.name == "response":
            y, color, text = 0.30, "#1b5e20", f"response {_ms(lat.seconds)}"
        elif lat.name == "reply":
            y, color, text = 0.30, "#1b5e20", f"transcript → audio {_ms(lat.seconds)}"
        elif lat.name == "stt":
            y, color, text = 0.50, CALLER, f"STT {_ms(lat.seconds)}"
        else:
            y, color, text = 0.60, ALERT, f"barge-in → clear {_ms(lat.seconds)}"
        ax.annotate("", xy=(lat.end, y), xytext=(lat.start, y), arrowprops={"arrowstyle": "|-|,widthA=0.3,widthB=0.3", "color": color, "lw": 1.6}, zorder=4)
        ax.text((lat.start + lat.end) / 2, y + 0.06, text, ha="center", va="bottom", fontsize=9.5, color=color,
                fontweight="bold" if lat.name == "response" else "normal", zorder=4,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.5})

    title = f"Call {timeline.call_id or '?'}"
    if timeline.carrier:
        title += f"  ·  {timeline.carrier}"
    title += f"  ·  {timeline.duration:.1f} s"
    if timeline.end_reason:
        title += f"  ·  ended: {timeline.end_reason}"
    fig.text(0.06, 0.955, title, fontsize=15, fontweight="bold", ha="left", va="center")
    fig.text(0.06, 0.905, _summary_line(timeline), fontsize=11, ha="left", va="center", color="#333333")

    if wave_data is not None:
        env_c, env_a, seconds = wave_data
        offset = timeline.recording_offset or 0.0
        xs = offset + np.linspace(0, seconds, len(env_c))
        wax = fig.add_subplot(grid[1], sharex=ax)
        wax.fill_between(xs, 0, env_c, color=CALLER, linewidth=0, step="mid")
        wax.fill_between(xs, -env_a, 0, color=AGENT, linewidth=0, step="mid")
        wax.axhline(0, color="#bbbbbb", linewidth=0.6)
        wax.set_ylim(-1.05, 1.05)
        wax.set_yticks([0.5, -0.5], ["caller", "agent"], fontsize=9)
        wax.get_yticklabels()[0].set_color(CALLER)
        wax.get_yticklabels()[1].set_color(AGENT)
        wax.tick_params(axis="y", length=0)
        for side in ("top", "right", "left"):
            wax.spines[side].set_visible(False)
        wax.text(0.0, 1.0, "recording", transform=wax.transAxes, fontsize=9, color=MUTED, va="top")
        for start, end in timeline.paused:
            wax.axvspan(start, end, facecolor="#999999", alpha=0.18, hatch="//", edgecolor="#888888", linewidth=0)
        plt.setp(ax.get_xticklabels(), visible=False)
        wax.set_xlabel("seconds since the stream started", fontsize=10)
        wax.grid(axis="x", color="#e6e6e6", linewidth=0.8)
    else:
        ax.set_xlabel("seconds since the stream started", fontsize=10)
    return fig


def _summary_line(timeline: Timeline) -> str:
    parts = []
    names = {"response": "caller stopped → agent audible", "reply": "transcript → agent audio", "stt": "STT", "barge_in": "barge-in → clear"}
    if timeline.summary:
        for key, label in names.items():
            item = timeline.summary.get(key)
            if isinstance(item, dict) and item.get("p50") is not None:
                parts.append(f"{label} p50 {_ms(item['p50'])}" + (f" (p95 {_ms(item['p95'])})" if item.get("count", 0) > 1 and item.get("p95") is not None else ""))
    else:
        for key, label in names.items():
            values = [lat.seconds for lat in timeline.latencies if lat.name == key]
            if values:
                parts.append(f"{label} median {_ms(float(np.median(values)))} (n={len(values)})")
    turns = sum(1 for s in timeline.segments if s.lane == "caller"), sum(1 for s in timeline.segments if s.lane == "agent")
    parts.append(f"{turns[0]} caller / {turns[1]} agent turns")
    return "   ·   ".join(parts)


def save(fig: Any, out: Path, fmt: str) -> None:
    plt = _require_matplotlib()
    try:
        fig.savefig(out, format=fmt)
    finally:
        plt.close(fig)


def svg_text(fig: Any) -> str:
    plt = _require_matplotlib()
    buffer = io.StringIO()
    try:
        fig.savefig(buffer, format="svg")
    finally:
        plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]
