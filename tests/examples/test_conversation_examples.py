"""Every example runs offline end to end (real server and sockets, SimulatedPhone, fake carriers) and does
what its docstring says."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest


@pytest.mark.timeout(60)
def test_ivr_gather_routes_to_balance_and_reads_the_account() -> None:
    from examples import ivr_gather

    out = ivr_gather.main()
    assert out["route"] == "balance"
    assert out["said"][-1] == "The balance of account 1 2 3 4 5 6 is 42 dollars."


@pytest.mark.timeout(60)
def test_ivr_validator() -> None:
    from examples.ivr_gather import choose

    assert [choose(v) for v in ("1", "2", "I want an agent please", "Balance", "7", "")] == [
        "balance", "agent", "agent", "balance", None, None,
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("human", [False, True])
def test_voicemail_reminder_leaves_a_message_after_the_beep_or_talks_to_a_person(human: bool) -> None:
    from examples import voicemail_reminder

    out = voicemail_reminder.main(human=human)
    if human:
        assert out == {"talked": True, "choice": "1"}
    else:
        assert out == {"talked": False, "reason": "beep", "delivered": True}


@pytest.mark.timeout(60)
def test_warm_transfer_on_both_carriers() -> None:
    from examples._offline import run_warm_transfer_demo

    out = run_warm_transfer_demo()
    assert out["twilio"] is True and out["plivo"] is True
    assert ET.fromstring(out["twilio_twiml"]).find("Dial").text == "+15559990000"  # type: ignore[union-attr]
    assert [n.text for n in ET.fromstring(out["plivo_xml"]).iter("Number")] == ["+14155557777"]


@pytest.mark.timeout(60)
def test_fsm_flow_books_a_table_on_its_session_subclass() -> None:
    from examples import fsm_flow

    out = fsm_flow.main()
    assert out["class"] == "BookingSession"  # VoiceServer(session_class=...) reached the inbound /stream call
    assert out["trail"] == ["greet", "party_size", "confirm", "booked", "done"]
    assert out["party"] == 4
    assert out["said"][-1] == "Done: a table for 4 tonight. Goodbye!"


def test_fsm_make_server_wires_the_subclass_and_flow() -> None:
    from examples.fsm_flow import BookingSession, make_server

    server = make_server()
    assert server.session_class is BookingSession and type(server.new_session()) is BookingSession
    assert server.inbound_flow is not None


@pytest.mark.timeout(90)
def test_langgraph_tool_nodes_drive_the_call() -> None:
    pytest.importorskip("langgraph", reason="install the examples extra: pip install -e '.[examples]'")
    from examples import tool_nodes_langgraph

    out = tool_nodes_langgraph.main()
    assert out["class"] == "AssistantSession"
    # each tool node's result is what the caller really did on the phone
    assert out["tools"] == [
        ("say_and_listen", "is my prescription ready"),
        ("gather_digits", "2468"),
        ("send_sms", "sent"),
    ]
    assert out["sms"]["To"] == "+15557654321" and out["sms"]["Body"] == "Your prescription is ready for pickup."
    assert out["said"] == [
        "Hello, Example Pharmacy. What can I do for you?",
        "Please type your four digit prescription number.",
        "I've texted you the details. Goodbye!",
    ]
