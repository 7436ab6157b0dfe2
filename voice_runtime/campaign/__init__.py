"""Outbound call campaigns on Redis: a job queue, a fleet-wide CPS limit, retries and results.

Needs the ``[redis]`` extra (``pip install voice-runtime[redis]``) and a Redis server (>= 6.2 for
``XAUTOCLAIM``). Single-process use of the library needs none of this. See ``docs/scale-out.md``.
"""

from voice_runtime.campaign.campaign import Campaign, CampaignStatus, current_cps, set_account_cps
from voice_runtime.campaign.dialer import CallRecord, Dialer, DialRejected, TwilioDialer, dialer_for
from voice_runtime.campaign.plivo_dialer import PlivoDialer
from voice_runtime.campaign.jobs import CallJob, Outcome, RetryPolicy, TimeWindow
from voice_runtime.campaign.worker import CampaignFlow, CampaignWorker, fleet_live_calls, fleet_workers

__all__ = [
    "CallJob",
    "CallRecord",
    "Campaign",
    "CampaignFlow",
    "CampaignStatus",
    "CampaignWorker",
    "DialRejected",
    "PlivoDialer",
    "Dialer",
    "Outcome",
    "RetryPolicy",
    "TimeWindow",
    "TwilioDialer",
    "current_cps",
    "dialer_for",
    "fleet_live_calls",
    "fleet_workers",
    "set_account_cps",
]
