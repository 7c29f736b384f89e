--[[
  announce: a worker says it is alive, what it serves and what it is doing (worker presence).

  KEYS[1] live   ZSET worker id -> presence deadline (ms, Redis clock)
  KEYS[2] info   STRING the worker's JSON description, expiring with the deadline
  ARGV[1] worker id
  ARGV[2] ttl_ms: how long the announcement holds without another one
  ARGV[3] the JSON description
  Returns the number of live workers after expired ones are dropped.
]]
local live, info = KEYS[1], KEYS[2]
local worker_id, ttl_ms, doc = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', live, '-inf', now)
redis.call('ZADD', live, now + ttl_ms, worker_id)
redis.call('SET', info, doc, 'PX', ttl_ms)
return redis.call('ZCARD', live)
