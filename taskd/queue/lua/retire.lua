--[[
  retire: end an idle waiter's registration when its worker stops (see _handoff.lua).

  A hand-off already in the inbox goes back to ready with its old score (and on to another idle
  waiter); then an empty entry is pushed so that a BLPOP still blocked on the inbox returns now.
  A hand-off the BLPOP already took is the caller's to release (retry.lua).

  KEYS[1] ready    ZSET
  KEYS[2] active   ZSET
  KEYS[3] idle     ZSET
  ARGV[1] lease_prefix
  ARGV[2] inbox_prefix
  ARGV[3] member   the registration, "<lease_ms>/<token prefix>"
  Returns 1 when a hand-off was put back, else 0.
]]
--#include _handoff
local ready, active, idle = KEYS[1], KEYS[2], KEYS[3]
local lease_prefix, inbox_prefix, member = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, score = end_registration(idle, inbox_prefix, lease_prefix, member)
local put_back = 0
if id then
  redis.call('DEL', lease_prefix .. id)
  redis.call('ZREM', active, id)
  redis.call('ZADD', ready, score, id)
  hand_off(ready, active, idle, lease_prefix, inbox_prefix, now)
  put_back = 1
end
local inbox = inbox_prefix .. member
redis.call('RPUSH', inbox, '')
redis.call('PEXPIRE', inbox, 10000)
return put_back
