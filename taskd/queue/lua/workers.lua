--[[
  workers: the live workers' descriptions (worker presence), expired ones dropped.

  KEYS[1] live  ZSET worker id -> presence deadline (ms, Redis clock)
  ARGV[1] info key prefix (the {workers} tag keeps the keys built here in KEYS[1]'s slot)
  ARGV[2] at most this many workers
  Returns a flat list {id1, json1, id2, json2, ...}, soonest deadline first.
]]
local live, prefix, limit = KEYS[1], ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', live, '-inf', now)
local ids = redis.call('ZRANGE', live, 0, limit - 1)
local out = {}
for _, id in ipairs(ids) do
  local doc = redis.call('GET', prefix .. id)
  if doc then
    out[#out + 1] = id
    out[#out + 1] = doc
  end
end
return out
