"""A LangGraph graph whose tool nodes drive the call: ``say_and_listen``, ``gather`` and SMS.

The pattern: a ``VoiceSession`` subclass carries what the tools need (here the carrier's SMS), the server is
told to use it (``VoiceServer(session_class=AssistantSession)``), and each call builds its graph over *its*
session — the tools are closures over the session, so a graph never reaches another call. The graph runs on
the call's flow thread (``graph.invoke``); every tool is a blocking intent with its own deadline, so a
hang-up surfaces as ``CallHangupError`` out of ``invoke`` and the flow ends like any other.

The model decides which tool node runs next. Offline (tests, ``python -m examples.tool_nodes_langgraph``) it
is langchain_core's ``GenericFakeChatModel`` with a scripted list of tool calls; in production pass any chat
model that supports tool calling (``bind_tools`` is used when the model has it).

Needs the ``examples`` extra: ``pip install 'voice_runtime[examples]'`` (langgraph, langchain-core).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from voice_runtime import CallTimeoutError, VoiceSession


class AssistantSession(VoiceSession):
    """The call as the graph's tools see it. ``sms`` sends a text to the caller (set by the server wiring)."""

    sms: Callable[[str, str], Any] | None = None

    def text_caller(self, body: str) -> str:
        if self.sms is None or not self.caller_number:
            return "cannot send SMS on this call"
        self.sms(self.caller_number, body)
        return "sent"


def build_tools(session: AssistantSession) -> list[Any]:
    from langchain_core.tools import tool

    @tool
    def say_and_listen(text: str) -> str:
        """Say ``text`` to the caller and return their spoken answer ("(no answer)" after 10 s of silence)."""
        try:
            return session.say_and_listen(text, timeout=10)
        except CallTimeoutError:
            return "(no answer)"

    @tool
    def gather_digits(prompt: str, num_digits: int = 4) -> str:
        """Ask the caller to type ``num_digits`` digits on the keypad; returns them, or "(no_input)"/"(no_match)"."""
        result = session.gather(prompt, speech=False, num_digits=num_digits, timeout=6, max_attempts=2)
        return result.value if result.ok else f"({result.kind})"

    @tool
    def send_sms(body: str) -> str:
        """Send ``body`` to the caller by SMS."""
        return session.text_caller(body)

    return [say_and_listen, gather_digits, send_sms]


def build_graph(session: AssistantSession, model: Any) -> Any:
    """agent → (tool calls? → tools → agent) … → goodbye: speaks the model's last words."""
    from langchain_core.messages import AIMessage
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    tools = build_tools(session)
    try:
        llm = model.bind_tools(tools)
    except (AttributeError, NotImplementedError):  # scripted fakes already know their tool calls
        llm = model

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    def goodbye(state: MessagesState) -> dict[str, Any]:
        last = state["messages"][-1]
        if isinstance(last, AIMessage) and str(last.content).strip():
            session.speak(str(last.content), wait=True)
        return {}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_node("goodbye", goodbye)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: "goodbye"})
    graph.add_edge("tools", "agent")
    graph.add_edge("goodbye", END)
    return graph.compile()


def run_call(session: AssistantSession, model: Any, *, recursion_limit: int = 25) -> list[Any]:
    """The flow: run this call's graph to the end; returns the conversation's messages."""
    from langchain_core.messages import SystemMessage

    graph = build_graph(session, model)
    system = SystemMessage("You are a phone assistant for Example Pharmacy. Use the tools to talk to the caller.")
    state = graph.invoke({"messages": [system]}, {"recursion_limit": recursion_limit})
    return list(state["messages"])


def scripted_model() -> Any:
    """The offline stand-in for an LLM: a fixed sequence of tool calls, then a closing line."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    def call(name: str, **args: Any) -> AIMessage:
        return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"call_{name}", "type": "tool_call"}])

    return GenericFakeChatModel(
        messages=iter(
            [
                call("say_and_listen", text="Hello, Example Pharmacy. What can I do for you?"),
                call("gather_digits", prompt="Please type your four digit prescription number.", num_digits=4),
                call("send_sms", body="Your prescription is ready for pickup."),
                AIMessage("I've texted you the details. Goodbye!"),
            ]
        )
    )


def main() -> dict[str, Any]:

    from examples._offline import FlowRun, offline_server, recording
    from voice_runtime.providers.mock import tone_speech
    from voice_runtime.testing.fake_twilio import FakeTwilio
    from voice_runtime.transports.twilio_control import TwilioCallControl

    with FakeTwilio() as fake, offline_server(script=["is my prescription ready"], session_class=AssistantSession) as (server, running):
        control = TwilioCallControl(server, credentials=fake.credentials(), http_client=fake.http_client())
        run = FlowRun()

        def flow(session: VoiceSession) -> list[Any]:
            assert isinstance(session, AssistantSession)
            session.sms = lambda to, body: control.send_sms(to, body)
            return run_call(session, scripted_model())

        control.on_inbound_call(recording(flow, run))
        _, _, phone = fake.inbound_call(running.http_url + "/twilio/voice", from_="+15557654321")
        assert phone is not None
        first = phone.wait_for("mark_echoed", 15)  # greeting heard
        phone.say(tone_speech(0.6))
        phone.wait_for("playback_start", 15, after=first.at + 1e-6)  # the keypad prompt started
        phone.press("2468")
        messages = run.wait(40)
        phone.wait_closed(10)
        sms = fake.wait_for_request(lambda r: r.method == "POST" and r.path.endswith("/Messages.json"), 10)
        tools = [(m.name, m.content) for m in messages if getattr(m, "type", "") == "tool"]
        print("tool results:", tools)
        print("sms:", sms.form_dict.get("To"), sms.form_dict.get("Body"))
        return {"tools": tools, "sms": sms.form_dict, "said": run.said, "class": type(run.session).__name__}


if __name__ == "__main__":
    main()
