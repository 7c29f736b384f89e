--[[
  lease: promote due delayed tasks, pop the highest-priority ready ids and lease them.

  One atomic "zpopmin plus lease": a popped id is never lost between pop and lease. The token
  of the i-th leased id is "<token_prefix>:<i>"; the worker builds the same tokens.

  The lease deadline is the id's score in the active set. The lease key (holding the token)
  lives 5 minutes longer, so that the reaper can still read the token of an expired lease and
  fence its Postgres update on it even when it runs late (the reaper deletes the key).

  When nothing is leased and idle_ms > 0, the caller is registered as an idle waiter
  (_handoff.lua) until now + idle_ms; it passes that registration back as `retire` on its next
  call, which ends it and adopts a hand-off that reached the inbox after the caller stopped
  waiting (re-leased under this call's first token) if its lease is still the waiter's.

  KEYS[1] ready    ZSET (see enqueue.lua for the scores)
  KEYS[2] delayed  ZSET
  KEYS[3] active   ZSET id -> lease deadline (ms)
  KEYS[4] idle     ZSET idle workers' registrations
  ARGV[1] count         how many ids to lease at most (>= 1)
  ARGV[2] lease_ms      lease duration
  ARGV[3] token_prefix  unique per lease call (worker id + sequence number)
  ARGV[4] lease_prefix  "taskd:{q}:lease:" - lease keys carry the queue's hash tag
  ARGV[5] inbox_prefix  "taskd:{q}:inbox:"
  ARGV[6] idle_ms       register as an idle waiter for this long if nothing is leased (0: don't)
  ARGV[7] retire        the caller's previous registration, or ""
  Returns {wait_ms, id1, id2, ...}: wait_ms is how long until the next delayed task is due
  (-1 when there is none); it matters only when no id was leased.
]]
--#include _handoff
local ready, delayed, active, idle = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local count, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local token_prefix, lease_prefix, inbox_prefix = ARGV[3], ARGV[4], ARGV[5]
local idle_ms, retire = tonumber(ARGV[6]), ARGV[7]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local result = {-1}

local function take(id)
  local n = #result
  -- SET without NX on purpose: an id in ready is authoritative that nobody may run it now, so a
  -- lease key still present belongs to a stale holder (reaped, then restored by its heartbeat);
  -- overwriting it makes that holder see LOST on its next heartbeat.
  redis.call('SET', lease_prefix .. id, token_prefix .. ':' .. n, 'PX', lease_ms + 300000)
  redis.call('ZADD', active, now + lease_ms, id)
  result[n + 1] = id
end

if retire ~= '' then
  local adopted = end_registration(idle, inbox_prefix, lease_prefix, retire)
  if adopted then
    take(adopted)
  end
end

-- Promote due delayed tasks in bounded chunks; the rest wait for the next call.
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now * 1000 + 999, 'WITHSCORES', 'LIMIT', 0, 1000)
for i = 1, #due, 2 do
  local score = tonumber(due[i + 1])
  local due_ms = math.floor(score / 1000)
  local rank = score - due_ms * 1000
  redis.call('ZADD', ready, rank * 1e13 + due_ms, due[i])
  redis.call('ZREM', delayed, due[i])
end

local wanted = count - (#result - 1)
if wanted > 0 then
  local popped = redis.call('ZPOPMIN', ready, wanted)
  for i = 1, #popped, 2 do
    take(popped[i])
  end
end

if #result > 1 then
  -- More work may be waiting: give it to the idle waiters rather than let them sleep on.
  hand_off(ready, active, idle, lease_prefix, inbox_prefix, now)
else
  local nxt = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if #nxt > 0 then
    result[1] = math.max(0, math.floor(tonumber(nxt[2]) / 1000) - now)
  end
  if idle_ms > 0 then
    redis.call('ZADD', idle, now + idle_ms, lease_ms .. '/' .. token_prefix)
  end
end
return result
