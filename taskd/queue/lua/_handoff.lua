--[[
  Putting tasks in line and handing them to idle workers: included by the scripts that make
  tasks due (see scripts.py).

  A lease loop that found nothing registers in the idle ZSET (member "<lease_ms>/<token prefix>",
  score = when the registration lapses, in ms) and blocks on its own inbox list, whose key is
  inbox_prefix .. member. Handing it a due task leases the task here, atomically, under the
  token "<token prefix>:1", and pushes "<id> <ready score>" to the inbox: the woken worker goes
  straight to its Postgres flip instead of spending a round trip on a lease call.

  An inbox entry is a lease. One never popped (the worker died while registered) expires like
  any lease and the reaper puts the task back; a worker that stops retires its registration
  first (retire.lua), and its next lease call adopts an entry that arrived after it stopped
  waiting (lease.lua). An empty entry is a plain wake-up: a new earliest due time.
]]
-- A registration's lease duration and the token a task handed to it is leased under.
local function registration(member)
  local lease_ms, prefix = string.match(member, '^(%d+)/(.+)$')
  return tonumber(lease_ms), prefix .. ':1'
end

-- End a registration and empty its inbox. Returns the id and ready score of a hand-off left
-- unread there whose lease is still the waiter's (not reaped and leased anew since), or nil.
local function end_registration(idle, inbox_prefix, lease_prefix, member)
  redis.call('ZREM', idle, member)
  local inbox = inbox_prefix .. member
  local entry = redis.call('LPOP', inbox)
  redis.call('DEL', inbox)
  if not entry or entry == '' then
    return nil
  end
  local id, score = string.match(entry, '^(%S+) (%S+)$')
  local _, token = registration(member)
  if redis.call('GET', lease_prefix .. id) ~= token then
    return nil
  end
  return id, score
end

local function live_waiters(idle, now)
  redis.call('ZREMRANGEBYSCORE', idle, '-inf', now)
  return redis.call('ZCARD', idle)
end

-- Lease due tasks to idle waiters, best task to the freshest registration, while both last.
local function hand_off(ready, active, idle, lease_prefix, inbox_prefix, now)
  local waiters = live_waiters(idle, now)
  while waiters > 0 do
    local top = redis.call('ZPOPMIN', ready)
    if #top == 0 then
      return
    end
    local waiter = redis.call('ZPOPMAX', idle)[1]
    waiters = waiters - 1
    local lease_ms, token = registration(waiter)
    redis.call('SET', lease_prefix .. top[1], token, 'PX', lease_ms + 300000)
    redis.call('ZADD', active, now + lease_ms, top[1])
    local inbox = inbox_prefix .. waiter
    redis.call('RPUSH', inbox, top[1] .. ' ' .. top[2])
    redis.call('PEXPIRE', inbox, lease_ms + 300000)
  end
end

-- Wake one idle waiter without a task, so that it re-computes how long to wait.
local function wake_one(idle, inbox_prefix, now)
  if live_waiters(idle, now) == 0 then
    return
  end
  local inbox = inbox_prefix .. redis.call('ZPOPMAX', idle)[1]
  redis.call('RPUSH', inbox, '')
  redis.call('PEXPIRE', inbox, 60000)
end

-- Put an id in line: in delayed when delay_ms > 0, else in ready (a negative delay: overdue by
-- that much). Returns 'due', 'earlier' (a new earliest delayed task) or nil.
local function schedule(ready, delayed, id, rank, delay, now)
  if delay > 0 then
    redis.call('ZADD', delayed, (now + delay) * 1000 + rank, id)
    if redis.call('ZRANGE', delayed, 0, 0)[1] == id then
      return 'earlier'
    end
    return nil
  end
  redis.call('ZADD', ready, rank * 1e13 + now + delay, id)
  return 'due'
end

-- After scheduling: due tasks go to idle waiters; a new earliest due time wakes one of them.
local function tell_waiters(seen, ready, active, idle, lease_prefix, inbox_prefix, now)
  if seen['due'] then
    hand_off(ready, active, idle, lease_prefix, inbox_prefix, now)
  end
  if seen['earlier'] then
    wake_one(idle, inbox_prefix, now)
  end
end
