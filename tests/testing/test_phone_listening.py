"""The simulated phone listens: in-band DTMF decoding, per-frame levels, the heard log (real sockets)."""

from __future__ import annotations

from voice_runtime.audio.dtmf import dtmf_tones
from voice_runtime.audio.g711 import pcm16_to_ulaw
from voice_runtime.providers.mock import tone_speech
from voice_runtime.testing import locate

from ..conftest import CallHarness, FlowResult


def test_phone_decodes_tones_logs_heard_segments_and_levels(harness: CallHarness, flow_result: FlowResult) -> None:
    speech = pcm16_to_ulaw(tone_speech(0.6))

    def body(session) -> None:
        session.put_outbound_sync(speech)
        first = session.send_mark("first")
        session.put_outbound_sync(dtmf_tones("42#"))
        flow_result.values["first"] = first.wait(5)
        flow_result.values["second"] = session.send_mark_and_wait("second", timeout=5)

    _, running = harness.serve(flow_result.run(body))
    phone = harness.phone(running)
    values = flow_result.wait()
    assert values["first"] == values["second"] == "played"
    assert phone.wait_for_tones("42#", timeout=5) == "42#"
    log = phone.heard_log()
    assert log, "nothing heard"
    heard = phone.heard_audio()
    assert locate(heard[:800], speech) == 0  # the speech was heard from its first byte, unaltered
    assert heard.startswith(speech)
    names = [name for segment in log for _, name in segment.marks]
    assert names[0].startswith("first__") and names[-1].startswith("second__")
    first_offset = next(off for seg in log for off, name in seg.marks if name.startswith("first__"))
    assert first_offset == len(speech)  # the mark was reached exactly where its audio ended
    frames = phone.levels()
    assert any(f.audio and f.level > 1000 for f in frames)
    assert any(not f.audio and f.level == 0 for f in frames)  # nothing buffered: a truly silent line
