"""The provider WebSocket client seam (``providers/ws_client.py``): both backends behave the same.

Against a real ``websockets`` server on loopback: text round trips (a fragmented message arrives whole), an
upgrade refused with an HTTP status is ``HandshakeRejected`` with that status and body, the server's close
code reaches ``recv`` and ``send`` as ``ClientClosed``, our close is a clean close the server sees as 1000, a
URL that is not ws:// is ``ValueError`` and nobody listening is ``OSError``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import serve

from voice_runtime.providers.ws_client import ClientClosed, HandshakeRejected, connect


@pytest.fixture(params=["picows", "websockets"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "picows":
        pytest.importorskip("picows", reason="the picows client needs the [fast] extra: pip install 'voice-runtime[fast]'")
    return str(request.param)


class _Server:
    def __init__(self) -> None:
        self.closes: list[int | None] = []
        self.closed = asyncio.Event()
        self.headers: list[str | None] = []
        self.url = ""


@pytest.fixture
async def server() -> AsyncIterator[_Server]:
    state = _Server()

    async def handler(ws: Any) -> None:
        state.headers.append(ws.request.headers.get("xi-api-key"))
        try:
            async for message in ws:
                if message == "fragmented":
                    await ws.send(["frag", "mented ", "reply"])
                elif message.startswith("close "):
                    await ws.close(int(message.split()[1]), "bye")
                else:
                    await ws.send(f"echo {message}")
        finally:
            state.closes.append(ws.close_code)
            state.closed.set()

    def process_request(connection: Any, request: Any) -> Any:
        if request.path == "/refuse":
            return connection.respond(401, "bad api key\n")
        return None

    async with serve(handler, "127.0.0.1", 0, process_request=process_request) as running:
        port = running.sockets[0].getsockname()[1]
        state.url = f"ws://127.0.0.1:{port}"
        yield state


async def _open(url: str, backend: str) -> Any:
    return await connect(url, headers={"xi-api-key": "k"}, ssl=None, open_timeout=5, close_timeout=2,
                         max_size=2**20, ping_interval=None, backend=backend)


async def test_text_round_trips_and_a_fragmented_message_arrives_whole(server: _Server, backend: str) -> None:
    ws = await _open(server.url + "/stream", backend)
    await ws.send("hello")
    assert await asyncio.wait_for(ws.recv(), 5) == "echo hello"
    await ws.send("fragmented")
    assert await asyncio.wait_for(ws.recv(), 5) == "fragmented reply"
    await ws.close()
    assert server.headers == ["k"]


async def test_a_refused_upgrade_is_handshake_rejected_with_status_and_body(server: _Server, backend: str) -> None:
    with pytest.raises(HandshakeRejected) as info:
        await _open(server.url + "/refuse", backend)
    assert info.value.status == 401 and b"bad api key" in info.value.body


async def test_the_servers_close_code_reaches_recv_and_send(server: _Server, backend: str) -> None:
    ws = await _open(server.url + "/stream", backend)
    await ws.send("close 4001")
    with pytest.raises(ClientClosed) as info:
        await asyncio.wait_for(ws.recv(), 5)
    assert info.value.code == 4001
    with pytest.raises(ClientClosed):
        await ws.send("too late")
    await ws.close()  # idempotent after the server's close


async def test_our_close_is_a_clean_close(server: _Server, backend: str) -> None:
    ws = await _open(server.url + "/stream", backend)
    await ws.send("hello")
    await asyncio.wait_for(ws.recv(), 5)
    await asyncio.wait_for(ws.close(1000), 5)
    await asyncio.wait_for(server.closed.wait(), 5)  # the server's handler records the code when its side is done
    assert server.closes == [1000]


async def test_bad_urls_and_nobody_listening(backend: str) -> None:
    with pytest.raises(ValueError):
        await _open("http://127.0.0.1:1/x", backend)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a port nobody listens on
    with pytest.raises(OSError):
        await _open(f"ws://127.0.0.1:{port}/x", backend)
