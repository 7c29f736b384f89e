--[[
  enqueue: add tasks to a queue unless Redis already tracks them (ready, delayed or active).

  The "unless tracked" rule makes enqueue safe to repeat: the API calls it after commit, the
  promoter's reconcile calls it for every PENDING row it finds, and neither can duplicate a task
  or disturb one a worker holds. Due tasks go to idle workers first (_handoff.lua).

  KEYS[1] ready    ZSET id -> (100 - priority) * 1e13 + due_ms
  KEYS[2] delayed  ZSET id -> due_ms * 1000 + (100 - priority)
  KEYS[3] active   ZSET id -> lease deadline (ms)
  KEYS[4] idle     ZSET idle workers' registrations (see _handoff.lua)
  ARGV[1] lease_prefix
  ARGV[2] inbox_prefix
  ARGV    triples from 3: id, priority (-100..100), delay_ms (<= 0: due now; negative = overdue by)
  Returns the number of ids added.
]]
--#include _handoff
local ready, delayed, active, idle = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local lease_prefix, inbox_prefix = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added, seen = 0, {}
for i = 3, #ARGV, 3 do
  local id, rank, delay = ARGV[i], 100 - tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if not redis.call('ZSCORE', ready, id) and not redis.call('ZSCORE', delayed, id)
     and not redis.call('ZSCORE', active, id) then
    local what = schedule(ready, delayed, id, rank, delay, now)
    if what then
      seen[what] = true
    end
    added = added + 1
  end
end
tell_waiters(seen, ready, active, idle, lease_prefix, inbox_prefix, now)
return added
