--[[
  extend: heartbeat; push the lease deadline of held ids forward.

  A lease key that is missing (Redis lost its data) is restored, so a live worker keeps its task
  and its fenced write still lands; a key holding another token means the lease was reclaimed.

  KEYS[1] active  ZSET id -> lease deadline (ms)
  ARGV[1] lease_ms
  ARGV[2] lease_prefix
  ARGV[3] cancel_prefix  "taskd:{q}:cancel:" (see cancel.lua)
  ARGV    pairs from 4: id, token
  Returns one code per pair: 1 extended, 2 restored, 0 lost (held by another token),
  3 extended but a cancel was requested.
]]
local active = KEYS[1]
local lease_ms, lease_prefix, cancel_prefix = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local codes = {}
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = lease_prefix .. id
  local holder = redis.call('GET', key)
  if holder == token then
    redis.call('PEXPIRE', key, lease_ms + 300000)  -- outlives the lease: see lease.lua
    redis.call('ZADD', active, now + lease_ms, id)
    codes[#codes + 1] = 1
  elseif not holder then
    redis.call('SET', key, token, 'PX', lease_ms + 300000)
    redis.call('ZADD', active, now + lease_ms, id)
    codes[#codes + 1] = 2
  else
    codes[#codes + 1] = 0
  end
  if codes[#codes] ~= 0 and redis.call('EXISTS', cancel_prefix .. id) == 1 then
    codes[#codes] = 3
  end
end
return codes
