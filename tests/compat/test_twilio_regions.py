"""The 0.1.14/0.1.15 explicit-region Twilio API, against the loopback fake Twilio (real SDK, real HTTP)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from requests.exceptions import ReadTimeout
from twilio.base.exceptions import TwilioRestException

from voice_runtime.errors import CarrierApiError, ConfigError
from voice_runtime.testing.fake_twilio import FakeTwilio
from voice_runtime.transports import twilio_call
from voice_runtime.transports.twilio_call import (
    TwilioCallNotFoundError,
    TwilioRegion,
    hangup_call,
    initiate_outbound_call,
    list_calls,
)
from voice_runtime.transports.twilio_client import carrier_error
from voice_runtime.transports.twilio_regions import check_continuation

KEY, SECRET = "SK" + "1" * 32, "regional-secret"
HOSTS = ("api.twilio.com", "api.dublin.ie1.twilio.com")


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(api_keys={KEY: SECRET}) as twilio:
        yield twilio


def regions(fake: FakeTwilio) -> tuple[TwilioRegion, ...]:
    return tuple(TwilioRegion(api_host=h, account_sid=fake.account_sid, auth=(KEY, SECRET)) for h in HOSTS)


def dial(fake: FakeTwilio) -> str:
    return initiate_outbound_call("+15551234567", environ=fake.environ(VOICE_STREAM_URL="https://voice.example.com"))


def test_regional_hangup_tries_regions_in_order_until_one_knows_the_call(fake: FakeTwilio) -> None:
    with fake.installed():
        sid = dial(fake)
        fake.fail_next("POST", rf"/Calls/{sid}\.json$", status=404, code=20404, message="not here")
        assert hangup_call(sid, regions=regions(fake)) is None
    updates = [r for r in fake.requests if r.method == "POST" and r.path.endswith(f"/Calls/{sid}.json")]
    assert [r.original_host for r in updates] == list(HOSTS)  # the SDK routed each attempt to its region
    assert all(r.auth_user == KEY and r.auth_ok for r in updates)  # the region's API key, not the ambient token
    assert fake.calls[sid].status == "completed"


def test_absent_everywhere_raises_not_found_with_the_hosts(fake: FakeTwilio) -> None:
    with fake.installed(), pytest.raises(TwilioCallNotFoundError) as caught:
        hangup_call("CA" + "0" * 32, regions=regions(fake))
    assert caught.value.attempted_hosts == HOSTS and "api.dublin.ie1.twilio.com" in str(caught.value)
    assert isinstance(caught.value, RuntimeError) and isinstance(caught.value, CarrierApiError)


def test_other_errors_propagate_at_once_as_both_error_types(fake: FakeTwilio) -> None:
    with fake.installed():
        sid = dial(fake)
        fake.fail_next("POST", rf"/Calls/{sid}\.json$", status=401, code=20003, message="Authenticate")
        with pytest.raises(TwilioRestException) as caught:
            hangup_call(sid, regions=regions(fake))
    assert isinstance(caught.value, CarrierApiError) and caught.value.code == 20003 and caught.value.status == 401
    assert SECRET not in str(caught.value)
    assert len([r for r in fake.requests if r.path.endswith(f"/Calls/{sid}.json")]) == 1  # no retry elsewhere


@pytest.mark.parametrize(
    "bad",
    [(), "list", "duplicate", "not-a-region", "constructed-invalid"],
)
def test_region_tuples_are_validated_before_any_request(fake: FakeTwilio, bad: object) -> None:
    good = regions(fake)[0]
    value = {
        "list": [good],
        "duplicate": (good, good),
        "not-a-region": (good, object()),
        "constructed-invalid": (good, TwilioRegion.model_construct(api_host=HOSTS[1], account_sid="AC/1", auth=("k", "s"))),
    }.get(bad, bad)  # type: ignore[call-overload]
    with fake.installed(), pytest.raises(ValueError) as caught:
        hangup_call("CA" + "1" * 32, regions=value)  # type: ignore[arg-type]
    assert "secret" not in str(caught.value).lower() and fake.requests == []


def test_region_model_is_strict_and_hides_the_secret() -> None:
    region = TwilioRegion(api_host="api.sydney.au1.twilio.com", account_sid="AC123", auth=("SKx", "top-secret"))
    assert "top-secret" not in repr(region) and region.edge_and_region == ("sydney", "au1")
    for host in ("api.twilio.com.evil.com", "API.twilio.com", "api.ie1.twilio.com", "https://api.twilio.com"):
        with pytest.raises(ValueError):
            TwilioRegion(api_host=host, account_sid="AC123", auth=("SKx", "s"))
    with pytest.raises(ValueError) as caught:
        TwilioRegion(api_host="api.twilio.com", account_sid="AC123", auth=("SKx", " "))
    assert "top-secret" not in str(caught.value)


def test_list_calls_validates_everything_before_a_client_exists() -> None:
    ok = dict(api_host="api.twilio.com", account_sid="AC1", auth=("SK1", "s"), to="+15550001000",
              start_after=datetime(2026, 1, 1, tzinfo=timezone.utc))
    for change in ({"to": " "}, {"start_after": datetime(2026, 1, 1)}, {"page_size": 0}, {"page_size": True},
                   {"max_pages": 0}, {"api_host": "example.com"}):
        with pytest.raises(ValueError):
            list_calls(**{**ok, **change})  # type: ignore[arg-type]


def test_continuation_urls_must_stay_on_the_collection() -> None:
    path = "/2010-04-01/Accounts/AC1/Calls.json"
    assert check_continuation(f"https://api.twilio.com{path}?Page=1", host="api.twilio.com", collection_path=path)
    for url in (f"http://api.twilio.com{path}", f"https://evil.com{path}", f"https://api.twilio.com:444{path}",
                f"https://u@api.twilio.com{path}", "https://api.twilio.com/2010-04-01/Accounts/AC2/Calls.json",
                f"https://api.twilio.com{path}/../x", f"https://api.twilio.com{path}%zz", f"https://api.twilio.com{path}#f"):
        with pytest.raises(ValueError):
            check_continuation(url, host="api.twilio.com", collection_path=path)


def test_list_recent_calls_is_deprecated_and_empty_without_credentials() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert twilio_call.list_recent_calls(environ={}) == []
    assert any(issubclass(w.category, DeprecationWarning) and "list_calls" in str(w.message) for w in caught)


def test_carrier_errors_are_also_the_original_exception() -> None:
    timeout = carrier_error(ReadTimeout("boom"), "hangup")
    assert isinstance(timeout, ReadTimeout) and isinstance(timeout, CarrierApiError) and timeout.retryable
    rest = carrier_error(TwilioRestException(404, "/Calls/CA1.json", "gone", 20404), "hangup")
    assert isinstance(rest, TwilioRestException) and rest.code == 20404 and rest.uri == "/Calls/CA1.json"


def test_config_errors_are_runtime_and_value_errors() -> None:
    assert issubclass(ConfigError, RuntimeError) and issubclass(ConfigError, ValueError)
    with pytest.raises(RuntimeError, match="TWILIO_ACCOUNT_SID"):
        hangup_call("CA1", environ={})


def test_send_sms_with_explicit_from_needs_no_phone_number(fake: FakeTwilio) -> None:
    from voice_runtime.transports.twilio_sms import send_sms

    env = fake.environ()
    del env["TWILIO_PHONE_NUMBER"]
    with fake.installed():
        result = send_sms("+15557654321", "hi", from_="+15550009999", environ=env)
    assert result["to"] == "+15557654321"
    (request,) = fake.requests_for("POST", "/Messages.json")
    assert request.form_dict["From"] == "+15550009999"


def test_list_calls_reads_every_page_from_the_named_region(fake: FakeTwilio) -> None:
    with fake.installed():
        sids = {dial(fake) for _ in range(5)}
        rows = list_calls(
            api_host=HOSTS[1], account_sid=fake.account_sid, auth=(KEY, SECRET), to="+15551234567",
            start_after=datetime(2026, 1, 1, tzinfo=timezone.utc), page_size=2,
        )
    assert {r.call_sid for r in rows} == sids and all(r.direction == "outbound-api" for r in rows)
    assert all(r.start_time is None for r in rows)  # unknown start times are kept, as None
    pages = fake.requests_for("GET", "/Calls.json")
    assert len(pages) == 3 and {p.original_host for p in pages} == {HOSTS[1]} and all(p.auth_user == KEY for p in pages)


def test_list_calls_refuses_an_incomplete_read(fake: FakeTwilio) -> None:
    from voice_runtime.transports.twilio_call import TwilioCallListIncompleteError

    with fake.installed():
        for _ in range(3):
            dial(fake)
        with pytest.raises(TwilioCallListIncompleteError) as caught:
            list_calls(
                api_host=HOSTS[0], account_sid=fake.account_sid, auth=(KEY, SECRET), to="+15551234567",
                start_after=datetime(2026, 1, 1, tzinfo=timezone.utc), page_size=1, max_pages=2,
            )
    assert caught.value.pages_fetched == 2
