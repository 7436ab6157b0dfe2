"""The Lua scripts: every state change of a job, the CPS limiter and the concurrency leases, each atomic.

Each script touches only keys that share one hash tag (one campaign, one carrier account, or one fleet), so
they run unchanged on Redis Cluster. Times come from Redis' own clock (``TIME``), so every worker on every host
agrees on them; scripts are replicated by effects (Redis >= 5 default, the only mode in 7).

Job states: ``queued`` -> ``dialling`` (intent recorded *before* the REST dial) -> ``live`` (call SID known)
-> back to ``queued`` (a retry, in ``delayed``) or a final ``done`` / ``failed`` / ``cancelled``. Every
transition names the attempt number and the owning worker it expects, so a stale or duplicated delivery
changes nothing (compare-and-set).
"""

from __future__ import annotations

from typing import Any

#: KEYS: bucket, grants. ARGV: max wait (us). Reserves the next send slot of the account:
#: returns {1, wait_us, interval_us} (reserved: dial after wait_us) or {0, wait_us, interval_us} (the next slot
#: is beyond the max wait: ask again later).
#: GCRA without burst: slots are ``interval_us`` apart, so no 1-s window holds more than 1/interval of them.
CPS_RESERVE = """
local interval = tonumber(redis.call('HGET', KEYS[1], 'interval_us'))
if not interval then return redis.error_reply('no CPS configured for this carrier account') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0')
local at = math.max(tat, now)
if at - now > tonumber(ARGV[1]) then return {0, at - now, interval} end
redis.call('HSET', KEYS[1], 'tat', string.format('%d', at + interval))
redis.call('ZADD', KEYS[2], at, string.format('%d', at))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000000)
return {1, at - now, interval}
"""

#: KEYS: slots. ARGV: lease id, ttl ms, cap. 1 = a global call slot is ours until now+ttl (heartbeats extend).
ACQUIRE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

#: KEYS: slots. ARGV: ttl ms, lease ids... Extends the leases that still exist.
REFRESH_SLOTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
return #ARGV - 1
"""

#: KEYS: job, counts, jobs stream. ARGV: fields (k, v, ...). 1 = added, 0 = a job with that id exists.
ADD_JOB = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', '0', unpack(ARGV, 2))
redis.call('XADD', KEYS[3], '*', 'job', ARGV[1], 'attempt', '1')
redis.call('HINCRBY', KEYS[2], 'queued', 1)
redis.call('HINCRBY', KEYS[2], 'total', 1)
return 1
"""

#: KEYS: job, counts, meta. ARGV: attempt, worker. The dial intent, written before the REST request.
BEGIN_DIAL = """
local cstate = redis.call('HGET', KEYS[3], 'state')
if cstate ~= 'running' then return 'campaign:' .. tostring(cstate) end
local state = redis.call('HGET', KEYS[1], 'state')
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '-1')
if state ~= 'queued' or attempts ~= tonumber(ARGV[1]) - 1 then return 'stale:' .. tostring(state) .. ':' .. tostring(attempts) end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'state', 'dialling', 'attempts', ARGV[1], 'worker', ARGV[2], 'call_sid', '',
  'intent_at', t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
redis.call('HINCRBY', KEYS[2], 'queued', -1)
redis.call('HINCRBY', KEYS[2], 'active', 1)
return 'ok'
"""

#: KEYS: job. ARGV: attempt, worker, call sid. The carrier accepted the dial: remember its call record.
SET_CALL = """
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[2] or tonumber(redis.call('HGET', KEYS[1], 'attempts')) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'live', 'call_sid', ARGV[3])
return 1
"""

#: KEYS: job, counts. ARGV: attempt, worker. A reclaimed intent the carrier never saw: undo it.
REVERT_DIAL = """
if redis.call('HGET', KEYS[1], 'state') ~= 'dialling' or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[2]
   or tonumber(redis.call('HGET', KEYS[1], 'attempts')) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', tostring(tonumber(ARGV[1]) - 1), 'worker', '', 'intent_at', '')
redis.call('HINCRBY', KEYS[2], 'active', -1)
redis.call('HINCRBY', KEYS[2], 'queued', 1)
return 1
"""

#: KEYS: job, counts, jobs stream, delayed, results. ARGV: attempt, expected worker, entry id, outcome,
#: history record (JSON), retry due ms ('' = final), final state, result (JSON), job id.
FINISH_ATTEMPT = """
local state = redis.call('HGET', KEYS[1], 'state')
if (state ~= 'dialling' and state ~= 'live') or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[2]
   or tonumber(redis.call('HGET', KEYS[1], 'attempts')) ~= tonumber(ARGV[1]) then return 'stale' end
local history = redis.call('HGET', KEYS[1], 'history')
if not history or history == '' then history = '[' .. ARGV[5] .. ']'
else history = string.sub(history, 1, -2) .. ',' .. ARGV[5] .. ']' end
redis.call('HSET', KEYS[1], 'history', history, 'last_outcome', ARGV[4], 'worker', '', 'call_sid', '')
redis.call('HINCRBY', KEYS[2], 'active', -1)
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'state', 'queued', 'next_at', ARGV[6])
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[9] .. '|' .. tostring(tonumber(ARGV[1]) + 1))
  redis.call('HINCRBY', KEYS[2], 'queued', 1)
  redis.call('HINCRBY', KEYS[2], 'retries', 1)
else
  redis.call('HSET', KEYS[1], 'state', ARGV[7], 'result', ARGV[8])
  redis.call('HINCRBY', KEYS[2], ARGV[7], 1)
  redis.call('XADD', KEYS[5], '*', 'job', ARGV[9], 'result', ARGV[8])
end
redis.call('XACK', KEYS[3], 'workers', ARGV[3])
return 'ok'
"""

#: KEYS: job, delayed, jobs stream. ARGV: attempt, entry id, due ms, job id. Outside calling hours: later.
DEFER = """
if redis.call('HGET', KEYS[1], 'state') ~= 'queued' or tonumber(redis.call('HGET', KEYS[1], 'attempts')) ~= tonumber(ARGV[1]) - 1 then return 0 end
redis.call('HSET', KEYS[1], 'next_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4] .. '|' .. ARGV[1])
redis.call('XACK', KEYS[3], 'workers', ARGV[2])
return 1
"""

#: KEYS: job, counts, jobs stream. ARGV: entry id. A queued job of a cancelled campaign.
CANCEL_JOB = """
if redis.call('HGET', KEYS[1], 'state') == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled')
  redis.call('HINCRBY', KEYS[2], 'queued', -1)
  redis.call('HINCRBY', KEYS[2], 'cancelled', 1)
end
redis.call('XACK', KEYS[3], 'workers', ARGV[1])
return 1
"""

#: KEYS: delayed, jobs stream. ARGV: max count, ('all' to move every entry regardless of due time).
PROMOTE_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local upto = now
if ARGV[2] == 'all' then upto = '+inf' end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', upto, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local sep = string.find(member, '|', 1, true)
  redis.call('XADD', KEYS[2], '*', 'job', string.sub(member, 1, sep - 1), 'attempt', string.sub(member, sep + 1))
end
return #due
"""


class Scripts:
    """The scripts registered on one client (EVALSHA, reloaded by redis-py on NOSCRIPT)."""

    def __init__(self, redis: Any) -> None:
        self.cps_reserve = redis.register_script(CPS_RESERVE)
        self.acquire_slot = redis.register_script(ACQUIRE_SLOT)
        self.refresh_slots = redis.register_script(REFRESH_SLOTS)
        self.add_job = redis.register_script(ADD_JOB)
        self.begin_dial = redis.register_script(BEGIN_DIAL)
        self.set_call = redis.register_script(SET_CALL)
        self.revert_dial = redis.register_script(REVERT_DIAL)
        self.finish_attempt = redis.register_script(FINISH_ATTEMPT)
        self.defer = redis.register_script(DEFER)
        self.cancel_job = redis.register_script(CANCEL_JOB)
        self.promote_due = redis.register_script(PROMOTE_DUE)
