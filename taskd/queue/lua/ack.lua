--[[
  ack: the outcome is recorded in Postgres; forget the lease.

  KEYS[1] active  ZSET
  ARGV[1] lease_prefix
  ARGV    pairs from 2: id, token
  Returns one code per pair: 1 acked, 0 the lease belongs to another token (left alone).
]]
local active, lease_prefix = KEYS[1], ARGV[1]
local codes = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = lease_prefix .. id
  local holder = redis.call('GET', key)
  if holder == token or not holder then
    redis.call('DEL', key)
    redis.call('ZREM', active, id)
    codes[#codes + 1] = 1
  else
    codes[#codes + 1] = 0
  end
end
return codes
