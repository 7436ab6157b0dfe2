"""The speech worker's pure parts: sentence regrouping of a token stream, FIFO order, cancel, barrier."""

from __future__ import annotations

import threading

from voice_runtime.session.speech_queue import SpeechQueue, TextStreamSource, sentences


def test_sentences_regroup_tokens_at_sentence_ends() -> None:
    tokens = ["Hel", "lo there", ", caller. ", "It costs 3.5 dol", "lars! Is that", " ok?"]
    assert list(sentences(tokens)) == ["Hello there, caller.", "It costs 3.5 dollars!", "Is that ok?"]


def test_short_pieces_wait_and_long_ones_are_cut_at_a_space() -> None:
    assert list(sentences(["Hi. ", "How are you doing today? ", "Fine."])) == ["Hi. How are you doing today?", "Fine."]
    long = ["word " * 80]
    pieces = list(sentences(long, max_chars=100))
    assert all(len(p) <= 100 for p in pieces) and " ".join(pieces).split() == ["word"] * 80


class Recorder:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def synthesize(self, text: str, stop_event: threading.Event):  # noqa: ANN201
        self.texts.append(text)
        yield text.encode()


class Streamer(Recorder):
    def synthesize_stream(self, tokens, stop_event):  # noqa: ANN001, ANN201
        for token in tokens:
            self.texts.append(token)
            yield token.encode()


def test_text_stream_source_uses_streaming_input_when_the_provider_has_it() -> None:
    chunked, streamed = Recorder(), Streamer()
    tokens = ["One two. ", "Three four five six. ", "Seven"]
    assert b"".join(TextStreamSource(chunked, iter(tokens)).synthesize("", threading.Event()))
    assert chunked.texts == ["One two. Three four five six.", "Seven"]  # per sentence
    source = TextStreamSource(streamed, iter(tokens))
    list(source.synthesize("", threading.Event()))
    assert streamed.texts == tokens and source.text == "".join(tokens)  # token by token


def test_jobs_run_in_order_and_pending_ones_can_be_cancelled() -> None:
    queue = SpeechQueue()
    release = threading.Event()
    ran: list[int] = []
    cancelled: list[tuple[int, bool]] = []
    queue.submit(lambda: (release.wait(5), ran.append(1)), lambda h: cancelled.append((1, h)))
    for n in (2, 3):
        queue.submit(lambda n=n: ran.append(n), lambda h, n=n: cancelled.append((n, h)))
    assert queue.pending == 3
    assert not queue.barrier(0.05)  # job 1 is still running
    assert queue.cancel_pending() == 2
    release.set()
    assert queue.barrier(5)
    assert ran == [1] and cancelled == [(2, False), (3, False)]
    for n in (4, 5, 6):
        queue.submit(lambda n=n: ran.append(n), lambda h: None)
    assert queue.barrier(5) and ran == [1, 4, 5, 6] and queue.pending == 0
