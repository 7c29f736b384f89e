--[[
  retry: give a held task back to the queue, due after a delay (0 = now).

  Used for backoff after a failed attempt and, with delay 0, to release leased tasks that were
  never started (shutdown, or a Postgres flip that did not happen). Due tasks go to idle
  workers first (_handoff.lua).

  KEYS[1] ready    ZSET
  KEYS[2] delayed  ZSET
  KEYS[3] active   ZSET
  KEYS[4] idle     ZSET idle workers' registrations
  ARGV[1] lease_prefix
  ARGV[2] inbox_prefix
  ARGV    quadruples from 3: id, token, priority, delay_ms
  Returns one code per quadruple: 1 re-queued, 0 the lease belongs to another token (left alone).
]]
--#include _handoff
local ready, delayed, active, idle = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local lease_prefix, inbox_prefix = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local codes, seen = {}, {}
for i = 3, #ARGV, 4 do
  local id, token = ARGV[i], ARGV[i + 1]
  local rank, delay = 100 - tonumber(ARGV[i + 2]), math.max(0, tonumber(ARGV[i + 3]))
  local key = lease_prefix .. id
  local holder = redis.call('GET', key)
  if holder == token or not holder then
    redis.call('DEL', key)
    redis.call('ZREM', active, id)
    local what = schedule(ready, delayed, id, rank, delay, now)
    if what then
      seen[what] = true
    end
    codes[#codes + 1] = 1
  else
    codes[#codes + 1] = 0
  end
end
tell_waiters(seen, ready, active, idle, lease_prefix, inbox_prefix, now)
return codes
