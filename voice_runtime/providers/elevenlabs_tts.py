"""ElevenLabs text-to-speech, streamed as telephony μ-law straight into the call.

Design choices (and why):

* **``output_format=ulaw_8000``** — the service encodes G.711 μ-law at 8 kHz itself, so the bytes go to the
  carrier untouched: no MP3, no ffmpeg, no resampling, no transcoding latency (see
  ``benchmarks/elevenlabs_tts_bench.py`` for the measured difference). μ-law is one byte per sample, so a
  network chunk of any length is a whole number of samples: nothing needs carrying across chunk boundaries.
* **httpx directly, not the SDK**: httpx is already a core dependency, so this provider works without the
  ``elevenlabs`` extra; the SDK buffers reads into 1024-byte pieces (128 ms of audio before the first chunk);
  and we need the status code *before* treating a body as audio (an error body played as audio is static on
  the line). ``iter_bytes()`` without a chunk size hands over each piece as it comes, i.e. the
  smallest possible first chunk.
* **One ``httpx.Client`` per provider instance** (a keep-alive connection pool), so each utterance after the
  first skips TCP+TLS setup; :meth:`warm_up` opens that connection before the first utterance.
* **urllib3 under that client** (``http_transport="auto"``, the default): the response streams as many small
  HTTP chunks, each read on the speech thread under the GIL beside the event loop, and httpx's own transport
  costs about 4x more CPU per chunk (:mod:`~voice_runtime.providers.urllib3_transport`). Behind a proxy named
  in the environment, or with ``http_transport="httpx"``, httpx's own transport is used.
* **Barge-in**: ``synthesize`` checks ``stop_event`` between chunks and leaving the generator closes the
  response, which drops the connection (the server stops generating; the pool opens a fresh one next time).
* **Errors**: every failure (auth, quota, network, bad status, a JSON body where audio was expected) raises
  :class:`~voice_runtime.errors.ProviderError`. The provider never calls ``on_error`` itself:
  :meth:`VoiceSession.speak` reports the raised error to ``on_error`` exactly once and puts it in the result.
  A retryable failure before any audio is retried ``max_retries`` times; after audio has been queued a
  retry would repeat words, so it is not.
* **Token streaming** (:meth:`synthesize_stream`, :meth:`speak_stream`): the ``stream-input`` WebSocket with
  ``{"text": " "}`` keepalives inside the 20 s inactivity window, flush at sentence ends for a fast first
  sentence, and a clean close (code 1000) on barge-in. Written on ``websockets.sync`` because the SDK's
  ``convert_realtime`` forces ``wss://`` (untestable against a loopback fake) and polls.

Configuration is read per instance (never at import): ``ELEVENLABS_API_KEY``, ``ELEVENLABS_VOICE_ID``,
``ELEVENLABS_MODEL`` (default ``eleven_flash_v2_5``, the lowest-latency model), ``ELEVENLABS_BASE_URL``,
``ELEVENLABS_LANGUAGE_CODE``, ``ELEVENLABS_VOICE_SETTINGS`` (JSON object).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode

import httpx

from voice_runtime.compat.names import deprecated_module_names, prior_art_class
from voice_runtime.errors import ConfigError, ProviderError
from voice_runtime.providers.base import StreamingTtsBase
from voice_runtime.providers.urllib3_transport import streaming_transport
from voice_runtime.providers.elevenlabs_common import (
    PROVIDER,
    env_or,
    http_status_error,
    parse_error_body,
    resolve_api_key,
    resolve_base_url,
    shared_ssl_context,
    to_http_url,
    to_ws_url,
)

if TYPE_CHECKING:  # pragma: no cover
    from voice_runtime.session import SpeechResult, VoiceSession

__all__ = ["ElevenLabsTts", "DEFAULT_VOICE_ID", "DEFAULT_MODEL_ID"]

log = logging.getLogger(__name__)

DEFAULT_VOICE_ID = "21m00Tcm4TlvDq8ikWAM"  # "Rachel", the prior art's default
DEFAULT_MODEL_ID = "eleven_flash_v2_5"
_MAX_ERROR_BODY = 8192
_SENTENCE_END = re.compile(r"[.!?;:][\"')\]]*\s*$")


class ElevenLabsTts(StreamingTtsBase):
    """Streaming ElevenLabs TTS producing μ-law 8 kHz for :meth:`VoiceSession.speak`.

    ``speak(text, session, stop_event=None) -> dict`` (prior-art shape) is inherited from
    :class:`StreamingTtsBase`. Call :meth:`close` (or use as a context manager) to release the pool.
    """

    name = PROVIDER

    output_format = "ulaw_8000"

    def __init__(
        self,
        api_key: str | None = None,
        voice_id: str | None = None,
        model_id: str | None = None,
        *,
        base_url: str | None = None,
        ws_base_url: str | None = None,
        voice_settings: Mapping[str, Any] | None = None,
        language_code: str | None = None,
        optimize_streaming_latency: int | None = None,
        apply_text_normalization: str | None = None,
        enable_logging: bool | None = None,
        seed: int | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_retries: int = 1,
        keepalive_interval: float = 10.0,
        inactivity_timeout: int | None = None,
        chunk_length_schedule: Iterable[int] = (50, 90, 120, 150),
        http_client: httpx.Client | None = None,
        http_transport: Literal["auto", "httpx"] = "auto",
    ) -> None:
        self._api_key: str | None = env_or(api_key, "ELEVENLABS_API_KEY")  # checked at first use
        self.voice_id = str(env_or(voice_id, "ELEVENLABS_VOICE_ID", DEFAULT_VOICE_ID))
        self.model_id = str(env_or(model_id, "ELEVENLABS_MODEL", DEFAULT_MODEL_ID))
        self.base_url = to_http_url(resolve_base_url(base_url))
        self.ws_base_url = to_ws_url(ws_base_url.rstrip("/") if ws_base_url else self.base_url)
        self.language_code = env_or(language_code, "ELEVENLABS_LANGUAGE_CODE")
        settings = voice_settings
        if settings is None and env_or(None, "ELEVENLABS_VOICE_SETTINGS"):
            try:
                settings = json.loads(env_or(None, "ELEVENLABS_VOICE_SETTINGS"))
            except ValueError as exc:
                raise ConfigError(f"ELEVENLABS_VOICE_SETTINGS is not valid JSON: {exc}") from None
        if settings is not None and not isinstance(settings, Mapping):
            raise ConfigError("voice_settings must be a mapping (stability, similarity_boost, style, speed ...)")
        self.voice_settings = dict(settings) if settings else None
        if optimize_streaming_latency is not None and not 0 <= optimize_streaming_latency <= 4:
            raise ConfigError("optimize_streaming_latency must be 0..4")
        self.optimize_streaming_latency = optimize_streaming_latency
        self.apply_text_normalization = apply_text_normalization
        self.enable_logging = enable_logging
        self.seed = seed
        self.timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout)
        self.max_retries = max(0, max_retries)
        self.keepalive_interval = keepalive_interval
        self.inactivity_timeout = inactivity_timeout
        self.chunk_length_schedule = [min(500, max(50, int(n))) for n in chunk_length_schedule] or [120]
        self.on_error: Callable[[str], None] | None = None
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "interrupted": 0, "failures": 0}
        if http_transport not in ("auto", "httpx"):
            raise ConfigError("http_transport must be 'auto' (urllib3 unless a proxy applies) or 'httpx'")
        self.http_transport = http_transport
        self._client = http_client
        self._owns_client = http_client is None
        self._client_lock = threading.Lock()

    # ================================================================================ HTTP plumbing

    @property
    def api_key(self) -> str:
        """The API key; missing raises :class:`ConfigError` here, at first use (construction never needs it)."""
        if not self._api_key:
            self._api_key = resolve_api_key(None)  # the environment may have been set since construction
        return self._api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        self._api_key = value

    def check_credentials(self) -> None:
        """Fail fast: raise :class:`ConfigError` now if no API key is configured (e.g. at server start-up)."""
        self.api_key  # noqa: B018
    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                context = shared_ssl_context()  # not a CA-bundle load per client (per call)
                # urllib3 under httpx: a quarter of httpx's own per-chunk cost (providers/urllib3_transport.py)
                transport = streaming_transport(self.base_url, ssl_context=context) if self.http_transport == "auto" else None
                self._client = httpx.Client(
                    base_url=self.base_url,
                    headers={"xi-api-key": self.api_key, "accept-encoding": "identity"},
                    timeout=self.timeout,
                    limits=httpx.Limits(max_connections=8, max_keepalive_connections=4, keepalive_expiry=60.0),
                    verify=context,
                    transport=transport,
                )
            return self._client

    def warm_up(self) -> None:
        """Open the pooled connection now (TCP+TLS), so the first utterance does not pay for it."""
        try:
            self._http().get("/v1/models").close()
        except httpx.HTTPError as exc:
            log.warning("ElevenLabs warm-up failed: %s", exc)

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None and self._owns_client:
            client.close()

    def __enter__(self) -> ElevenLabsTts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _body(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text, "model_id": self.model_id}
        if self.voice_settings:
            body["voice_settings"] = self.voice_settings
        if self.language_code:
            body["language_code"] = self.language_code
        if self.seed is not None:
            body["seed"] = self.seed
        if self.apply_text_normalization:
            body["apply_text_normalization"] = self.apply_text_normalization
        return body

    def _params(self, output_format: str) -> dict[str, Any]:
        params: dict[str, Any] = {"output_format": output_format}
        if self.optimize_streaming_latency is not None:
            params["optimize_streaming_latency"] = self.optimize_streaming_latency
        if self.enable_logging is not None:
            params["enable_logging"] = str(self.enable_logging).lower()
        return params

    def stream_audio(self, text: str, stop_event: threading.Event, output_format: str | None = None) -> Iterator[bytes]:
        """Raw audio bytes of ``text`` in ``output_format`` as they arrive (status checked first).

        Exposed so other encodings (e.g. the benchmark's MP3 path) share the exact same client and pool.
        """
        fmt = output_format or self.output_format
        path = f"/v1/text-to-speech/{quote(self.voice_id, safe='')}/stream"
        attempt = 0
        while True:
            got_audio = False
            self.stats["requests"] += 1
            try:
                with self._http().stream("POST", path, params=self._params(fmt), json=self._body(text)) as response:
                    if response.status_code >= 300:
                        raise http_status_error(response.status_code, _read_capped(response), what="text-to-speech")
                    content_type = response.headers.get("content-type", "")
                    if "json" in content_type or "text/" in content_type:  # never play an error body as audio
                        status, message = parse_error_body(_read_capped(response))
                        raise ProviderError(
                            f"text-to-speech: expected audio, got {content_type} [{status}]: {message}",
                            provider=PROVIDER, retryable=False,
                        )
                    for chunk in response.iter_bytes():
                        if stop_event.is_set():
                            self.stats["interrupted"] += 1
                            return  # leaving the with-block closes the response and drops the connection
                        if chunk:
                            got_audio = True
                            yield chunk
                    return
            except ProviderError as exc:
                error = exc
            except httpx.TimeoutException as exc:
                error = ProviderError(f"text-to-speech timed out ({type(exc).__name__})", provider=PROVIDER, retryable=True)
            except httpx.HTTPError as exc:  # connect errors, dropped connections, protocol errors
                error = ProviderError(f"text-to-speech network error: {type(exc).__name__}: {exc}", provider=PROVIDER, retryable=True)
            if got_audio or not error.retryable or attempt >= self.max_retries or stop_event.is_set():
                self.stats["failures"] += 1
                raise error
            attempt += 1
            self.stats["retries"] += 1
            log.info("ElevenLabs TTS retry %d after: %s", attempt, error)
            if stop_event.wait(0.1 * attempt):
                return

    def synthesize(self, text: str, stop_event: threading.Event) -> Iterator[bytes]:
        """μ-law 8 kHz chunks of ``text`` as they stream; stops promptly once ``stop_event`` is set."""
        if not text.strip():
            return iter(())
        return self.stream_audio(text, stop_event)

    # ================================================================================ token streaming
    def _stream_input_url(self) -> str:
        query: dict[str, Any] = {"model_id": self.model_id, "output_format": self.output_format}
        if self.language_code:
            query["language_code"] = self.language_code
        if self.inactivity_timeout is not None:
            query["inactivity_timeout"] = self.inactivity_timeout
        if self.enable_logging is not None:
            query["enable_logging"] = str(self.enable_logging).lower()
        if self.apply_text_normalization:
            query["apply_text_normalization"] = self.apply_text_normalization
        return f"{self.ws_base_url}/v1/text-to-speech/{quote(self.voice_id, safe='')}/stream-input?{urlencode(query)}"

    def synthesize_stream(self, tokens: Iterable[str], stop_event: threading.Event) -> Iterator[bytes]:
        """μ-law audio for text that is still being produced (an LLM's token stream).

        Tokens are sent as whole words; a sentence end forces generation (``flush``) so the first sentence
        is heard before the LLM finishes. While the token source is slow, ``{"text": " "}`` keepalives keep
        the socket inside the service's inactivity window. Barge-in (``stop_event``) closes the socket
        cleanly with code 1000; the token iterator is abandoned (not drained).
        """
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect

        stack = contextlib.ExitStack()
        try:
            ws = stack.enter_context(connect(
                self._stream_input_url(),
                additional_headers={"xi-api-key": self.api_key},
                open_timeout=self.timeout.connect,
                close_timeout=2.0,
                max_size=2**24,
            ))
        except InvalidStatus as exc:
            raise http_status_error(exc.response.status_code, bytes(exc.response.body or b""), what="stream-input") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ProviderError(f"stream-input connect failed: {type(exc).__name__}: {exc}", provider=PROVIDER, retryable=True) from None

        send_lock = threading.Lock()
        last_send = [time.monotonic()]
        sender_error: list[BaseException] = []
        sender_done = threading.Event()

        def send(message: dict[str, Any]) -> None:
            with send_lock:
                ws.send(json.dumps(message))
                last_send[0] = time.monotonic()

        def feed() -> None:
            try:
                init: dict[str, Any] = {"text": " ", "generation_config": {"chunk_length_schedule": self.chunk_length_schedule}}
                if self.voice_settings:
                    init["voice_settings"] = self.voice_settings
                send(init)
                for piece, flush in _word_chunks(tokens):
                    if stop_event.is_set():
                        return
                    send({"text": piece, "flush": flush} if flush else {"text": piece})
                if not stop_event.is_set():
                    send({"text": ""})  # end of input: the service flushes, sends isFinal, closes
            except ConnectionClosed:
                pass
            except BaseException as exc:  # the token source failed: surface it to the consumer
                sender_error.append(exc)
            finally:
                sender_done.set()

        feeder = threading.Thread(target=feed, name="elevenlabs-stream-input", daemon=True)
        feeder.start()
        poll = 0.05
        try:
            while not stop_event.is_set():
                if sender_error:
                    raise sender_error[0]
                try:
                    raw = ws.recv(timeout=poll)
                except TimeoutError:
                    if not sender_done.is_set() and time.monotonic() - last_send[0] >= self.keepalive_interval:
                        send({"text": " "})  # keepalive: a single space never ends the stream
                    continue
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else 1006
                    raise ProviderError(f"stream-input closed before the final message (code {code})", provider=PROVIDER, retryable=True) from None
                message = json.loads(raw)
                if message.get("error"):
                    status = str(message.get("error"))
                    raise ProviderError(
                        f"stream-input error [{status}]: {message.get('message', '')}",
                        provider=PROVIDER, retryable=status not in ("auth_error", "quota_exceeded", "invalid_request"),
                    )
                audio = message.get("audio")
                if audio:
                    yield base64.b64decode(audio)
                if message.get("isFinal"):
                    return
            self.stats["interrupted"] += 1
        finally:
            stop_event_was_set = stop_event.is_set()
            try:
                ws.close(1000, "barge-in" if stop_event_was_set else "done")
            except Exception:  # pragma: no cover - closing a dead socket
                pass
            stack.close()
            feeder.join(0.5)

    def speak_stream(self, tokens: Iterable[str], session: VoiceSession, stop_event: threading.Event | None = None) -> dict[str, Any]:
        """Like ``speak`` but for a token stream; the result's ``last_spoken`` is the text actually sent."""
        return self.speak_stream_result(tokens, session, stop_event).as_dict()

    def speak_stream_result(
        self, tokens: Iterable[str], session: VoiceSession, stop_event: threading.Event | None = None, *, wait: bool = True
    ) -> SpeechResult:
        """``session.speak(tokens, tts=self)``: the session streams the tokens into :meth:`synthesize_stream`."""
        return session.speak(tokens, wait=wait, tts=self, stop_event=stop_event)


def _word_chunks(tokens: Iterable[str]) -> Iterator[tuple[str, bool]]:
    """Regroup LLM tokens into whole words ending in a space; flag sentence ends for a flush."""
    pending = ""
    for token in tokens:
        if not token:
            continue
        pending += token
        cut = max(pending.rfind(" "), pending.rfind("\n"))
        if cut < 0:
            continue
        ready, pending = pending[: cut + 1], pending[cut + 1 :]
        if ready.strip():
            yield ready, bool(_SENTENCE_END.search(ready))
    if pending.strip():
        yield pending + " ", True


def _read_capped(response: httpx.Response) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= _MAX_ERROR_BODY:
            break
    return bytes(data[:_MAX_ERROR_BODY])


# Prior-art name kept for compatibility (``create_tts("elevenlabs")`` resolves it).
_ElevenLabsTTS = prior_art_class(ElevenLabsTts, "ElevenLabsTTS")  # what the factory builds (see voice_runtime.compat.names)
__getattr__ = deprecated_module_names(__name__, {"ElevenLabsTTS": (_ElevenLabsTTS, "ElevenLabsTts")})
