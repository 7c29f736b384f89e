--[[
  cancel: take a task out of the queue and, if a worker holds it, ask that worker to stop it.

  The request reaches the holder two ways: a PUBLISH on the cancel channel (immediate), and a
  marker key that the holder's next heartbeat sees (extend.lua returns 3) in case the message
  was missed.

  KEYS[1] ready    ZSET
  KEYS[2] delayed  ZSET
  KEYS[3] active   ZSET
  ARGV[1] id
  ARGV[2] cancel_prefix  "taskd:{q}:cancel:" - marker keys carry the queue's hash tag
  ARGV[3] channel        the cancel channel workers subscribe to
  ARGV[4] marker_ms      how long the marker lives (a few lease periods)
  Returns 1 when a worker held the task (a cancel request was sent), else 0.
]]
local ready, delayed, active = KEYS[1], KEYS[2], KEYS[3]
local id, cancel_prefix, channel = ARGV[1], ARGV[2], ARGV[3]
local marker_ms = tonumber(ARGV[4])
redis.call('ZREM', ready, id)
redis.call('ZREM', delayed, id)
if redis.call('ZSCORE', active, id) then
  redis.call('SET', cancel_prefix .. id, '1', 'PX', marker_ms)
  redis.call('PUBLISH', channel, id)
  return 1
end
return 0
