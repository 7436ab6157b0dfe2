"""The self-contained HTML page: the timeline as inline SVG, then the turns and every event as tables.

One file with no external scripts, fonts or images, so it can be attached to a ticket or opened offline.
Everything from the log is escaped: transcripts are caller-controlled text.
"""

from __future__ import annotations

import html
import json


from voice_runtime.report.timeline import Timeline

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1800px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.figure svg{width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;width:100%;font-size:13px} td,th{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#fafafa;position:sticky;top:0} td.t{font-variant-numeric:tabular-nums;white-space:nowrap;color:#555}
tr.caller td.k{color:#2f6db5} tr.agent td.k{color:#d9782d} tr.alert td.k{color:#c62828;font-weight:bold}
code{font-size:12px;color:#444;word-break:break-all}
"""

_CALLER_KINDS = {"stt_speech_started", "speech_ended", "stt_partial", "stt_final", "dtmf_received"}
_ALERT_KINDS = {"barge_in", "clear_sent", "stt_error", "tts_error", "protocol_error", "mark_cleared"}


def page(timeline: Timeline, svg: str) -> str:
    esc = html.escape
    rows = []
    for e in timeline.events:
        kind = str(e.get("kind"))
        cls = "alert" if kind in _ALERT_KINDS else ("caller" if kind in _CALLER_KINDS else "agent")
        data = json.dumps(e.get("data") or {}, default=str, ensure_ascii=False)
        rows.append(
            f'<tr class="{cls}"><td class="t">{float(e["at"]) - timeline.t0:8.3f}</td><td class="k">{esc(kind)}</td>'
            f"<td><code>{esc(data[:400])}</code></td></tr>"
        )
    turns = []
    for seg in timeline.segments:
        turns.append(
            f'<tr class="{seg.lane}"><td class="t">{seg.start:.2f}–{seg.end:.2f}</td><td class="k">{seg.lane}</td>'
            f"<td>{esc(seg.text)}</td><td>{esc(seg.outcome)}</td></tr>"
        )
    lats = "".join(
        f'<tr><td class="t">{lat.start:.2f}</td><td>{esc(lat.name)}</td><td class="t">{lat.seconds * 1000:.0f} ms</td></tr>'
        for lat in timeline.latencies
    )
    title = f"Call {timeline.call_id or '?'}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1><div>{esc(timeline.carrier or '')} · {timeline.duration:.1f} s"
        f"{' · ended: ' + esc(str(timeline.end_reason)) if timeline.end_reason else ''}</div>"
        f"<div class='figure'>{svg}</div>"
        "<h2>Turns</h2><table><tr><th>seconds</th><th>who</th><th>words</th><th>outcome</th></tr>"
        + "".join(turns)
        + "</table><h2>Latencies</h2><table><tr><th>at</th><th>what</th><th>took</th></tr>"
        + lats
        + f"</table><h2>Events ({len(timeline.events)})</h2><table><tr><th>seconds</th><th>kind</th><th>data</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )


