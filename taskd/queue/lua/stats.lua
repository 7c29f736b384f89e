--[[
  stats: how many tasks a queue holds in each state, and how long its oldest due task has waited.

  Read-only. Ready scores sort by priority band first ((100 - priority) * 1e13 + due_ms, see
  enqueue.lua), so the oldest due task is the smallest due time over the bands in use: one
  ZRANGEBYSCORE per band (at most 201, usually a few), each O(log n). Due tasks still in the
  delayed set count as ready: they move only when a worker leases, so with no worker running that
  is where they wait.

  KEYS[1] ready    ZSET
  KEYS[2] delayed  ZSET id -> due_ms * 1000 + rank
  KEYS[3] active   ZSET
  Returns {ready, delayed, active, oldest_ready_age_ms}; the age is 0 when nothing is due.
]]
local ready, delayed, active = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due_limit = now * 1000 + 999

local due_delayed = redis.call('ZCOUNT', delayed, '-inf', due_limit)
local oldest = nil
local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if #first > 0 and tonumber(first[2]) <= due_limit then
  oldest = math.floor(tonumber(first[2]) / 1000)
end

local entry = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
while #entry > 0 do
  local score = tonumber(entry[2])
  local band = math.floor(score / 1e13)
  local due = score - band * 1e13
  if oldest == nil or due < oldest then
    oldest = due
  end
  entry = redis.call('ZRANGEBYSCORE', ready, (band + 1) * 1e13, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
end

local age = 0
if oldest ~= nil then
  age = math.max(0, now - oldest)
end
return {
  redis.call('ZCARD', ready) + due_delayed,
  redis.call('ZCARD', delayed) - due_delayed,
  redis.call('ZCARD', active),
  age,
}
