"""What the subcommands share: loading ``MODULE:OBJ`` targets, providers from flags/env, carriers, errors.

Every user mistake the CLI can detect (a bad target, a provider that is not installed, missing credentials)
becomes a :class:`CliError`: one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voice_runtime.errors import ConfigError

#: Exit status for usage and configuration errors (argparse uses the same).
EXIT_USAGE = 2


class CliError(Exception):
    """A one-line, user-facing error; ``main`` prints it and exits with :data:`EXIT_USAGE`."""


# ------------------------------------------------------------------------------------------ targets
def load_target(spec: str) -> Any:
    """Resolve ``MODULE:OBJ`` where MODULE is a dotted module or a ``.py`` file path (``examples/ivr.py:flow``)."""
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise CliError(f"target must look like MODULE:OBJ (e.g. examples/ivr_menu.py:flow), got {spec!r}")
    module = _import_module(module_part)
    obj: Any = module
    for name in attr.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise CliError(f"{module_part} has no attribute {attr!r}") from None
    return obj


def _import_module(module_part: str) -> Any:
    is_file = module_part.endswith(".py") or os.sep in module_part or "/" in module_part
    try:
        if is_file:
            path = Path(module_part).resolve()
            if not path.is_file():
                raise CliError(f"no such file: {module_part}")
            sys.path.insert(0, str(path.parent))  # the flow's own imports of its neighbours work
            name = f"_voice_runtime_target_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise CliError(f"cannot import {module_part}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        return importlib.import_module(module_part)
    except CliError:
        raise
    except ModuleNotFoundError as exc:
        raise CliError(f"cannot import {module_part}: {exc}") from None
    except SystemExit as exc:
        raise CliError(f"importing {module_part} exited ({exc.code})") from None
    except Exception as exc:  # the user's module failed at import time: say so in one line
        raise CliError(f"importing {module_part} failed: {type(exc).__name__}: {exc}") from None


def load_flow(spec: str) -> Callable[[Any], Any]:
    """A flow function (or a :class:`VoiceServer`'s inbound flow) from ``MODULE:FLOW``."""
    from voice_runtime.server import VoiceServer

    obj = load_target(spec)
    if isinstance(obj, VoiceServer):
        if obj.inbound_flow is None:
            raise CliError(f"{spec} is a VoiceServer without an inbound flow")
        return obj.inbound_flow
    if not callable(obj) or isinstance(obj, type):
        raise CliError(f"{spec} is not a flow function (a callable taking the session)")
    return obj


# ------------------------------------------------------------------------------------------ providers
def add_provider_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stt", metavar="NAME", help="speech-to-text: local, mock, elevenlabs, azure (env VOICE_STT)")
    parser.add_argument("--tts", metavar="NAME", help="text-to-speech: local, mock, elevenlabs, azure (env VOICE_TTS)")
    parser.add_argument(
        "--mock-script",
        metavar="TEXT",
        action="append",
        default=None,
        help="with --stt mock: what the mock STT 'hears', one utterance per flag, in order (testing)",
    )


def provider_factories(args: argparse.Namespace, *, default: str | None = None) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """``(stt_factory, tts_factory)`` from ``--stt``/``--tts`` or ``VOICE_STT``/``VOICE_TTS``.

    Each provider is built once here so a missing SDK, key or model fails now, with one line, rather than
    on the first call.
    """
    from voice_runtime.stt import create_stt
    from voice_runtime.tts import create_tts

    stt_name = args.stt or os.environ.get("VOICE_STT") or default
    tts_name = args.tts or os.environ.get("VOICE_TTS") or default
    if not stt_name or not tts_name:
        missing = [flag for flag, name in (("--stt (or VOICE_STT)", stt_name), ("--tts (or VOICE_TTS)", tts_name)) if not name]
        raise CliError(f"no speech provider configured: pass {' and '.join(missing)}, e.g. --stt local --tts local")
    script = list(getattr(args, "mock_script", None) or [])

    def stt_factory() -> Any:
        if stt_name == "mock":
            return create_stt("mock", script=list(script))
        return create_stt(stt_name)

    def tts_factory() -> Any:
        return create_tts(tts_name)

    for kind, factory in (("STT", stt_factory), ("TTS", tts_factory)):
        try:
            provider = factory()
        except (ValueError, ImportError, ConfigError) as exc:
            raise CliError(f"{kind} provider: {exc}") from None
        except Exception as exc:
            raise CliError(f"{kind} provider could not be created: {type(exc).__name__}: {exc}") from None
        close = getattr(provider, "close", None)
        if callable(close):
            close()
    return stt_factory, tts_factory


# ------------------------------------------------------------------------------------------ carriers
def _registered_carriers() -> tuple[str, ...]:
    from voice_runtime.carriers import CARRIERS as REGISTRY

    return tuple(sorted(REGISTRY))


CARRIERS = _registered_carriers()


def public_url_from(args: argparse.Namespace) -> str | None:
    return getattr(args, "public_url", None) or os.environ.get("VOICE_PUBLIC_URL") or os.environ.get("VOICE_STREAM_URL")


def attach_carrier(server: Any, carrier: str, public_url: str | None) -> Any:
    """Build ``carrier``'s call control on ``server`` (credentials from the environment)."""
    if not public_url:
        raise CliError(f"{carrier} needs the server's public URL: pass --public-url https://... (or set VOICE_PUBLIC_URL)")
    from voice_runtime.carriers import get_carrier

    try:
        control_class = get_carrier(carrier).load_call_control()
        return control_class(server, public_url=public_url)
    except ConfigError as exc:
        raise CliError(f"{carrier}: {exc}") from None
    except ImportError as exc:
        raise CliError(f"{carrier}: {exc} (pip install 'voice-runtime[{carrier}]')") from None
    except ValueError as exc:  # not a registered carrier
        raise CliError(str(exc)) from None


def http_base(url: str) -> str:
    """``wss://x`` → ``https://x`` (webhooks are HTTP even when the public URL is given as a stream URL)."""
    url = url.rstrip("/")
    for ws, http in (("wss://", "https://"), ("ws://", "http://")):
        if url.startswith(ws):
            return http + url[len(ws) :]
    return url


def webhook_urls(server: Any, carrier: str, public_url: str) -> dict[str, str]:
    """Where the carrier's console must point: answer URL, status callback and the stream URL."""
    base = http_base(public_url) + server.path_prefix
    stream = server.stream_url(base_url=public_url)
    if carrier == "twilio":
        return {"answer URL": f"{base}/twilio/voice", "status callback": f"{base}/twilio/status", "stream URL": stream}
    return {"answer URL": f"{base}/plivo/answer", "status callback (hangup URL)": f"{base}/plivo/hangup", "stream URL": stream}
