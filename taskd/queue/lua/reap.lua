--[[
  reap: take expired leases off the active set and return them with the token they had.

  The task is not re-queued here: the promoter first records the lost attempt in Postgres (fenced
  on the token), then re-queues what Postgres says is PENDING. A crash in between leaves a RUNNING
  row without a lease, which the rescue step reclaims.

  KEYS[1] active  ZSET id -> lease deadline (ms); the lease key outlives it (see lease.lua)
  ARGV[1] lease_prefix
  ARGV[2] limit   at most this many per call
  Returns {id1, token1, id2, token2, ...}; token is "" when the lease key was already gone.
]]
local active, lease_prefix, limit = KEYS[1], ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, id in ipairs(expired) do
  local key = lease_prefix .. id
  local token = redis.call('GET', key)
  redis.call('DEL', key)
  redis.call('ZREM', active, id)
  out[#out + 1] = id
  out[#out + 1] = token or ''
end
return out
