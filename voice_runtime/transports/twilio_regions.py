"""Explicit-region Twilio REST (the 0.1.14/0.1.15 API): ordered regional hangup and complete call-record reads.

Why explicit regions at all: a Twilio account's calls live in the region that handled them (US1, IE1, AU1 ...)
and an API key is scoped to one region. A process that serves several regions cannot rely on the ambient
``TWILIO_REGION``; it names each region it may look in, with the credentials that region accepts.

* :class:`TwilioRegion` — one region: its API host, the account SID (the path identity) and the
  ``(username, secret)`` pair that authenticates there (an API key, or the account SID and auth token).
  Validated strictly and frozen; the secret never appears in ``repr`` or in validation errors.
* :func:`hangup_in_regions` — try each region in order. "No such call here" (404/20404) moves on to the
  next region; "already ended" (400/21220) is success; anything else is raised at once, never retried.
  Absent everywhere raises :class:`TwilioCallNotFoundError`: absence is *not* proof that the call ended.
* :func:`list_calls` — every call to one number since a time, as typed :class:`TwilioCallRow`s, reading all
  pages or failing (:class:`TwilioCallListIncompleteError`) — never a silently truncated list. Continuation
  URLs are followed only when they stay on the same host and collection.

Clients are built by :func:`voice_runtime.transports._twilio_client.build_explicit_twilio_client`, which hands
the region to the SDK's own region/edge routing and never reads or writes ``os.environ``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voice_runtime.errors import CarrierApiError

log = logging.getLogger(__name__)

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^api\.twilio\.com$|^api\.{_LABEL}\.{_LABEL}\.twilio\.com$")
_SID = re.compile(r"^[A-Za-z0-9]{2,64}$")


class TwilioRegion(BaseModel):
    """One Twilio region to act in: ``api_host``, ``account_sid`` and ``auth=(username, secret)``."""

    model_config = ConfigDict(frozen=True, strict=True, hide_input_in_errors=True, revalidate_instances="always")

    api_host: str
    account_sid: str
    auth: tuple[str, str] = Field(repr=False)

    @field_validator("api_host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not _HOST.match(value):
            raise ValueError("api_host must be api.twilio.com or api.<edge>.<region>.twilio.com (lowercase)")
        return value

    @field_validator("account_sid")
    @classmethod
    def _account(cls, value: str) -> str:
        if not (value.isascii() and value.isalnum()):
            raise ValueError("account_sid must be ASCII letters and digits")
        return value

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: tuple[str, str]) -> tuple[str, str]:
        if not all(part.strip() for part in value):
            raise ValueError("both parts of auth must be non-blank")
        return value

    @property
    def edge_and_region(self) -> tuple[str | None, str | None]:
        """The SDK's ``(edge, region)`` for this host (``(None, None)`` for the default ``api.twilio.com``)."""
        labels = self.api_host.split(".")
        if len(labels) == 3:
            return None, None
        return labels[1], labels[2]


class TwilioCallRow(BaseModel):
    """One call record: ``start_time`` is epoch seconds, or None when Twilio did not report one."""

    model_config = ConfigDict(frozen=True, strict=True)

    call_sid: str
    status: str
    start_time: float | None
    direction: str
    caller: str | None = None

    @field_validator("call_sid", "status", "direction")
    @classmethod
    def _non_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-blank string")
        return value

    @field_validator("caller")
    @classmethod
    def _caller(cls, value: str | None) -> str | None:
        return value if value and value.strip() else None


class TwilioCallNotFoundError(CarrierApiError, RuntimeError):
    """The call was absent (404/20404) in every region tried. ``attempted_hosts`` lists them in order."""

    def __init__(self, attempted_hosts: Iterable[str]) -> None:
        self.attempted_hosts = tuple(attempted_hosts)
        super().__init__(
            f"Call not found in: {', '.join(self.attempted_hosts)}", carrier="twilio", code=20404, status=404,
            retryable=False,
        )


class TwilioCallListIncompleteError(CarrierApiError, RuntimeError):
    """``list_calls`` reached ``max_pages`` with more pages left: the list would have been incomplete."""

    def __init__(self, api_host: str, pages_fetched: int) -> None:
        self.api_host = api_host
        self.pages_fetched = pages_fetched
        super().__init__(
            f"call list from {api_host} incomplete after {pages_fetched} pages", carrier="twilio", retryable=False
        )


def validate_sid(call_sid: object) -> str:
    if not isinstance(call_sid, str) or not _SID.match(call_sid):
        raise ValueError("call_sid must be 2-64 ASCII letters and digits")
    return call_sid


def validated_regions(regions: object) -> tuple[TwilioRegion, ...]:
    """A non-empty tuple of valid regions with distinct hosts, revalidated; anything else is ``ValueError``.

    Revalidation matters because ``model_construct`` can build an instance that never passed validation.
    The error text never contains the secrets.
    """
    if not isinstance(regions, tuple) or not regions:
        raise ValueError("regions must be a non-empty tuple of TwilioRegion")
    checked: list[TwilioRegion] = []
    for index, region in enumerate(regions):
        if not isinstance(region, TwilioRegion):
            raise ValueError(f"regions[{index}] is not a TwilioRegion")
        try:
            checked.append(TwilioRegion.model_validate(region))
        except Exception:
            raise ValueError(f"regions[{index}] is not a valid TwilioRegion") from None
    hosts = [r.api_host for r in checked]
    if len(set(hosts)) != len(hosts):
        raise ValueError("regions must have distinct api_host values")
    return tuple(checked)


def _is_absent(exc: Any) -> bool:
    return getattr(exc, "status", None) == 404 and getattr(exc, "code", None) == 20404


def _is_already_ended(exc: Any) -> bool:
    return getattr(exc, "status", None) == 400 and getattr(exc, "code", None) == 21220


def hangup_in_regions(call_sid: str, regions: Sequence[TwilioRegion], build_client: Any) -> None:
    """Hang ``call_sid`` up (``Status=completed``) in the first region that knows it (see module doc)."""
    from twilio.base.exceptions import TwilioRestException

    from voice_runtime.transports.twilio_client import carrier_error

    attempted: list[str] = []
    for region in regions:
        client = build_client(region)
        attempted.append(region.api_host)
        try:
            client.calls(call_sid).update(status="completed")
        except TwilioRestException as exc:
            if _is_absent(exc):
                log.info("call %s not found in %s; trying the next region", call_sid, region.api_host)
                continue
            if _is_already_ended(exc):
                log.info("call %s had already ended (%s)", call_sid, region.api_host)
                return
            raise carrier_error(exc, "hangup") from None
        except Exception as exc:
            raise carrier_error(exc, "hangup") from None
        log.info("hung up call %s in %s", call_sid, region.api_host)
        return
    raise TwilioCallNotFoundError(attempted)


# ------------------------------------------------------------------------------------------- call records
def _check_list_arguments(to: object, start_after: object, page_size: object, max_pages: object) -> None:
    if not isinstance(to, str) or not to.strip():
        raise ValueError("to must be a non-blank string")
    if not isinstance(start_after, datetime) or start_after.tzinfo is None or start_after.utcoffset() is None:
        raise ValueError("start_after must be a timezone-aware datetime")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 1000:
        raise ValueError("page_size must be an int in 1..1000")
    if isinstance(max_pages, bool) or not isinstance(max_pages, int) or max_pages < 1:
        raise ValueError("max_pages must be an int >= 1")


_BAD_PATH = re.compile(r"[\\\x00-\x1f\x7f]|%(?![0-9A-Fa-f]{2})")


def check_continuation(url: str, *, host: str, collection_path: str) -> str:
    """Accept a next-page URL only on ``https://{host}{collection_path}`` (no userinfo, port, dot segments)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.netloc != host or parts.fragment:
        raise ValueError("continuation URL leaves the collection's host")
    if _BAD_PATH.search(parts.path) or _BAD_PATH.search(parts.query):
        raise ValueError("continuation URL has control characters, backslashes or bad escapes")
    path = unquote(parts.path)
    if path != collection_path or any(seg in (".", "..") for seg in path.split("/")):
        raise ValueError("continuation URL leaves the calls collection")
    return url


def _row(record: Any) -> TwilioCallRow:
    start = record.start_time
    if start is not None and not isinstance(start, datetime):
        raise ValueError("call record start_time is not an RFC 2822 date")
    if isinstance(start, datetime) and start.tzinfo is None:
        raise ValueError("call record start_time has no UTC offset")
    caller = vars(record).get("_from")  # the SDK keeps the payload's "from" under this name
    if caller is not None and not isinstance(caller, str):
        raise ValueError("call record 'from' is not a string")
    for name in ("sid", "status", "direction"):
        value = getattr(record, name, None)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"call record {name!r} is missing or blank")
    return TwilioCallRow(
        call_sid=record.sid,
        status=str(record.status),
        start_time=None if start is None else start.timestamp(),
        direction=str(record.direction),
        caller=caller,
    )


def list_calls_with_client(
    client: Any, region: TwilioRegion, *, to: str, start_after: datetime, page_size: int, max_pages: int
) -> list[TwilioCallRow]:
    """Read every page of calls to ``to`` since ``start_after`` (see :func:`voice_runtime.transports.twilio_call.list_calls`)."""
    from voice_runtime.transports.twilio_client import carrier_error

    collection_path = f"/2010-04-01/Accounts/{region.account_sid}/Calls.json"
    base_host = urlsplit(client.api.base_url).netloc  # the SDK routes this host to the region at request time
    rows: list[TwilioCallRow] = []
    try:
        page = client.calls.page(to=to, start_time_after=start_after, page_size=page_size)
        pages = 1
        while True:
            for record in page:
                row = _row(record)
                if row.start_time is not None and row.start_time <= start_after.timestamp():
                    continue
                rows.append(row)
            next_url = page.next_page_url
            if not next_url:
                return rows
            if pages >= max_pages:
                raise TwilioCallListIncompleteError(region.api_host, pages)
            page = client.calls.get_page(check_continuation(next_url, host=base_host, collection_path=collection_path))
            pages += 1
    except (TwilioCallListIncompleteError, ValueError):
        raise
    except Exception as exc:
        raise carrier_error(exc, "call list") from None


__all__ = [
    "TwilioCallListIncompleteError",
    "TwilioCallNotFoundError",
    "TwilioCallRow",
    "TwilioRegion",
    "check_continuation",
    "hangup_in_regions",
    "list_calls_with_client",
    "validate_sid",
    "validated_regions",
]
