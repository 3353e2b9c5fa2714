r"""The Lua scripts of the Redis feature state (`fraud_core.cards.redis_state`).

Every script is `constants(definition)` + one of the bodies below. They share these keys:
KEYS[1..6] = newest, events, labelled, first, idle:c, idle:t, and ARGV[1] = the prefix (`{name}`),
from which a script builds the per-customer and per-terminal keys (same hash tag, same slot).

Times are integers below 2**53, exact as Lua numbers (doubles), but Lua's own number-to-string
conversion keeps 14 digits only: every time handed to a Redis command goes through `fmt`.
Members are `<id>\0<amount>`; ids and key names never hold control characters (the contract), so
NUL separates fields safely and byte order within one score is the ids' order.
"""

from __future__ import annotations

from fraud_core.cards.definition import US_PER_DAY, FeatureDefinition
from fraud_core.cards.state import EVICT_PER_CALL


def constants(definition: FeatureDefinition) -> str:
    """The definition's numbers as Lua locals (µs): part of each script, hence of its SHA."""
    cw = [w * US_PER_DAY for w in definition.customer_windows_days]
    tw = [w * US_PER_DAY for w in definition.terminal_windows_days]
    return (
        f"local CW = {{{', '.join(map(str, cw))}}}\n"
        f"local CW_MAX = {max(cw)}\n"
        f"local TW = {{{', '.join(map(str, tw))}}}\n"
        f"local DELAY = {definition.delay_days * US_PER_DAY}\n"
        f"local LATENESS = {definition.max_lateness_us}\n"
        f"local RETENTION = {definition.retention_us}\n"
        f"local EVICT_PER_CALL = {EVICT_PER_CALL}\n" + _COMMON
    )


_COMMON = r"""
local P = ARGV[1]
local NEWEST, EVENTS, LABELLED, FIRST = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local IDLE_C, IDLE_T = KEYS[5], KEYS[6]

local function fmt(x) return string.format('%.0f', x) end

local function split(s)
  local out, start = {}, 1
  while true do
    local stop = string.find(s, '\0', start, true)
    if not stop then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, stop - 1)
    start = stop + 1
  end
end

local function id_of(member)
  return string.sub(member, 1, string.find(member, '\0', 1, true) - 1)
end

-- Forget a customer's events at or before the cutoff: their records and first answers.
local function drop_events(ckey, cutoff_s)
  local old = redis.call('ZRANGEBYSCORE', ckey, '-inf', cutoff_s)
  for i = 1, #old, 1000 do
    local ids = {}
    for j = i, math.min(i + 999, #old) do ids[#ids + 1] = id_of(old[j]) end
    local labelled = 0
    for _, record in ipairs(redis.call('HMGET', EVENTS, unpack(ids))) do
      if record and string.byte(record, -1) ~= 0 then labelled = labelled + 1 end
    end
    if labelled > 0 then redis.call('DECRBY', LABELLED, labelled) end
    redis.call('HDEL', EVENTS, unpack(ids))
    redis.call('HDEL', FIRST, unpack(ids))
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', ckey, '-inf', cutoff_s) end
end

-- Evict up to `limit` customers and as many terminals whose newest event is gone.
local function evict(cutoff_s, limit)
  local customers = redis.call('ZRANGEBYSCORE', IDLE_C, '-inf', cutoff_s, 'LIMIT', 0, limit)
  for _, name in ipairs(customers) do
    drop_events(P .. ':c:' .. name, cutoff_s)
    redis.call('ZREM', IDLE_C, name)
  end
  local terminals = redis.call('ZRANGEBYSCORE', IDLE_T, '-inf', cutoff_s, 'LIMIT', 0, limit)
  for _, name in ipairs(terminals) do
    redis.call('DEL', P .. ':t:' .. name, P .. ':f:' .. name)
    redis.call('ZREM', IDLE_T, name)
  end
  return #customers + #terminals
end
"""

#: score: KEYS[7..9] = the customer's, terminal's and terminal-frauds' sorted sets; ARGV[2..7] =
#: id, tx_us, customer, terminal, amount, batch token ("" alone). Returns {status, windows}:
#: 1 new or 0 re-sent, with its windows as text; 2 too late, with the newest time; 3 skipped (a
#: batch after a too-late transaction).
SCORE = r"""
local CUSTOMER, TERMINAL, FRAUDS = KEYS[7], KEYS[8], KEYS[9]
local id, t_s, amount_s, token = ARGV[2], ARGV[3], ARGV[6], ARGV[7]
if token ~= '' and redis.call('EXISTS', P .. ':batch:' .. token) == 1 then return {3, ''} end

-- The windows of an event already in the sets, as of its place in (time, id) order, as text:
-- 'tx_us amount <count per customer window> <sum per customer window> <count frauds per
-- terminal window>'. The sums add the amounts from the newest back to the oldest, one at a
-- time, as fraud_core.cards.state.window_sums does in Python: the same doubles, the same bits.
local function windows(t, t_s, amount_s, ckey, tkey, fkey, member)
  local rank = redis.call('ZRANK', ckey, member)
  local start = redis.call('ZCOUNT', ckey, '-inf', fmt(t - CW_MAX))
  local members = redis.call('ZRANGE', ckey, start, rank)
  local n = #members
  local totals, total = {}, 0
  for j = n, 1, -1 do
    local m = members[j]
    local amount = tonumber(string.sub(m, string.find(m, '\0', 1, true) + 1))
    if j == n then total = amount else total = total + amount end
    totals[n - j + 1] = total
  end
  local out, sums = {t_s, amount_s}, {}
  for k, w in ipairs(CW) do
    local before = start
    if w ~= CW_MAX then before = redis.call('ZCOUNT', ckey, '-inf', fmt(t - w)) end
    local count = rank + 1 - before
    out[#out + 1] = count
    sums[k] = string.format('%.17g', totals[count])
  end
  for k = 1, #sums do out[#out + 1] = sums[k] end
  local hi = fmt(t - DELAY)
  for _, w in ipairs(TW) do
    local lo = '(' .. fmt(t - DELAY - w)
    out[#out + 1] = redis.call('ZCOUNT', tkey, lo, hi)
    out[#out + 1] = redis.call('ZCOUNT', fkey, lo, hi)
  end
  return table.concat(out, ' ')
end

local newest_s = redis.call('GET', NEWEST)
local newest = newest_s and tonumber(newest_s)
local record = redis.call('HGET', EVENTS, id)
if record then
  local f = split(record)
  if not newest or tonumber(f[1]) > newest - RETENTION then
    local first = redis.call('HGET', FIRST, id)
    if first then return {0, first} end
    -- loaded as history: its windows at its own place become its first answer
    local raw = windows(tonumber(f[1]), f[1], f[4], P .. ':c:' .. f[2], P .. ':t:' .. f[3],
      P .. ':f:' .. f[3], id .. '\0' .. f[4])
    redis.call('HSET', FIRST, id, raw)
    return {0, raw}
  end
  drop_events(P .. ':c:' .. f[2], fmt(newest - RETENTION))  -- gone: forget it, score anew
end
local t = tonumber(t_s)
if newest and t < newest - LATENESS then
  if token ~= '' then redis.call('SET', P .. ':batch:' .. token, 1, 'EX', 60) end
  return {2, newest_s}
end
local member = id .. '\0' .. amount_s
redis.call('ZADD', CUSTOMER, t_s, member)
redis.call('ZADD', TERMINAL, t_s, id)
-- the label field stays empty until label() sets it
redis.call('HSET', EVENTS, id, table.concat({t_s, ARGV[4], ARGV[5], amount_s, ''}, '\0'))
local raw = windows(t, t_s, amount_s, CUSTOMER, TERMINAL, FRAUDS, member)
redis.call('HSET', FIRST, id, raw)
if not newest or t > newest then
  redis.call('SET', NEWEST, t_s)
  newest = t
end
redis.call('ZADD', IDLE_C, 'GT', t_s, ARGV[4])
redis.call('ZADD', IDLE_T, 'GT', t_s, ARGV[5])
local cutoff_s = fmt(newest - RETENTION)
drop_events(CUSTOMER, cutoff_s)
redis.call('ZREMRANGEBYSCORE', TERMINAL, '-inf', cutoff_s)
redis.call('ZREMRANGEBYSCORE', FRAUDS, '-inf', cutoff_s)
evict(cutoff_s, EVICT_PER_CALL)
return {1, raw}
"""

#: label: ARGV[2..3] = id, "0"/"1". Returns 1, or 0 when the id is unknown or gone.
LABEL = r"""
local id, label = ARGV[2], ARGV[3]
local record = redis.call('HGET', EVENTS, id)
if not record then return 0 end
local f = split(record)
local newest = tonumber(redis.call('GET', NEWEST) or '')
if newest and tonumber(f[1]) <= newest - RETENTION then return 0 end
local old = f[5]
if old == '' then redis.call('INCR', LABELLED) end
redis.call('HSET', EVENTS, id, string.sub(record, 1, #record - #old) .. label)
local fkey = P .. ':f:' .. f[3]
if label == '1' and old ~= '1' then
  redis.call('ZADD', fkey, f[1], id)
elseif label == '0' and old == '1' then
  redis.call('ZREM', fkey, id)
end
return 1
"""

#: evict: ARGV[2] = how many keys of each kind at most. Returns how many were evicted.
EVICT = r"""
local newest_s = redis.call('GET', NEWEST)
if not newest_s then return 0 end
return evict(fmt(tonumber(newest_s) - RETENTION), tonumber(ARGV[2]))
"""

#: newest_max: ARGV[2] = a time; newest becomes it if it is newer.
NEWEST_MAX = r"""
local current = redis.call('GET', NEWEST)
if not current or tonumber(ARGV[2]) > tonumber(current) then redis.call('SET', NEWEST, ARGV[2]) end
return 0
"""

#: bulk: ARGV[2..] = (command, key, payload) triples, command "Z" (ZADD), "G" (ZADD GT) or "H"
#: (HSET), the payload its score/member or field/value arguments joined by newlines (no id or
#: name holds one). A few big arguments instead of millions of small ones: a history of 640 k
#: rows goes in a few seconds, where the client would spend most of its time packing arguments.
BULK = r"""
local function send(command, key, args)
  if command == 'G' then
    redis.call('ZADD', key, 'GT', unpack(args))
  elseif command == 'Z' then
    redis.call('ZADD', key, unpack(args))
  else
    redis.call('HSET', key, unpack(args))
  end
end
for i = 2, #ARGV, 3 do
  local command, key, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local args, n, start = {}, 0, 1
  while true do
    local stop = string.find(payload, '\n', start, true)
    n = n + 1
    args[n] = string.sub(payload, start, (stop or 0) - 1)
    if n == 4000 then
      send(command, key, args)
      args, n = {}, 0
    end
    if not stop then break end
    start = stop + 1
  end
  if n > 0 then send(command, key, args) end
end
return 0
"""
