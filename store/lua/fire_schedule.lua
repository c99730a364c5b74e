-- fire_schedule.lua: one fire of a schedule, claimed, checked and committed at once.
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 the schedule's hash, 5 the shard's due set, 6 its
--       history index, 7 its history rows, 8 the target slot of the execution it starts
--       (the schedule's hash when it starts none), 9.. keys named by the start plan.
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 schedule id, 5 the revision the fire was
--       planned from, 6 the next_run_at it fires for ('' for run-now: no claim), 7 the plan:
--   {"mode": "start" | "record",
--    "exec_id", "tail" (start: the execution's start plan, as start_execution.lua takes it),
--    "row_id", "row" (JSON of the history row), "event": [type, data],
--    "skip": {"row_id", "row", "event": [type, data]} (start, due fires with overlap skip:
--            what to record when the target is busy; absent: a busy target is refused),
--    "next": {"mode": "keep" | "set" | "clear", "at"}, "recheck_at", "retention_ms",
--    "history_cap"}
-- Returns: {'fired'} | {'recorded'} | {'skipped', holder} | {'busy', holder} | {'claimed'}
--          | {'conflict'} | {'gone'}
-- Invariant: each (schedule, due time) is fired at most once, whatever the number of
--   schedulers: the fire only happens while next_run_at still holds the due time it was
--   planned for, and moves it in the same write. The target claim, the execution, its first
--   job, the history row, the events and the next due time land together or not at all. A
--   fire skipped for a busy target leaves next_run_at as it is (its row is written once per
--   due time) and asks to be looked at again at recheck_at.
local now = tonumber(ARGV[1])
local id = ARGV[4]
local f = redis.call('HMGET', KEYS[4], 'rev', 'next_run_at')
if not f[1] then
  redis.call('ZREM', KEYS[5], id)
  return {'gone'}
end
if tonumber(f[1]) ~= tonumber(ARGV[5]) then
  return {'conflict'}
end
if ARGV[6] ~= '' and f[2] ~= ARGV[6] then
  return {'claimed'}
end
local plan = cjson.decode(ARGV[7])

-- Appends `extra` (`"name":"value"`) to a JSON object given as text.
local function with_member(json, extra)
  return string.sub(json, 1, -2) .. ',' .. extra .. '}'
end

-- Records a history row; keeps the history within its age and size limits.
local function record(row_id, row)
  redis.call('HSET', KEYS[7], row_id, row)
  redis.call('ZADD', KEYS[6], int(now), row_id)
  local aged = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', '(' .. int(now - plan.retention_ms), 'LIMIT', 0, 100)
  for _, old in ipairs(aged) do
    redis.call('HDEL', KEYS[7], old)
    redis.call('ZREM', KEYS[6], old)
  end
  local excess = redis.call('ZCARD', KEYS[6]) - plan.history_cap
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', KEYS[6], 0, excess - 1)) do
      redis.call('HDEL', KEYS[7], old)
      redis.call('ZREM', KEYS[6], old)
    end
  end
  redis.call('PEXPIRE', KEYS[6], int(plan.retention_ms))
  redis.call('PEXPIRE', KEYS[7], int(plan.retention_ms))
end

local function move_next()
  if plan.next.mode == 'set' then
    redis.call('HSET', KEYS[4], 'next_run_at', int(plan.next.at))
    redis.call('ZADD', KEYS[5], int(plan.next.at), id)
  elseif plan.next.mode == 'clear' then
    redis.call('HDEL', KEYS[4], 'next_run_at')
    redis.call('ZREM', KEYS[5], id)
  end
end

if plan.mode == 'record' then
  record(plan.row_id, plan.row)
  emit(plan.event[1], plan.event[2], nil)
  move_next()
  return {'recorded'}
end

local holder = redis.call('GET', KEYS[8])
if holder then
  if not plan.skip then
    return {'busy', holder}
  end
  local blocked = '"blocked_by":"' .. holder .. '"'
  if redis.call('HEXISTS', KEYS[7], plan.skip.row_id) == 0 then
    record(plan.skip.row_id, with_member(plan.skip.row, blocked))
    emit(plan.skip.event[1], with_member(plan.skip.event[2], blocked), nil)
  end
  redis.call('ZADD', KEYS[5], int(plan.recheck_at), id)
  return {'skipped', holder}
end
redis.call('SET', KEYS[8], plan.exec_id)
apply_tail(plan.tail, now)
record(plan.row_id, plan.row)
-- Also in the execution's own event list, so the execution tells which schedule started it.
emit(plan.event[1], plan.event[2], plan.tail.log and KEYS[plan.tail.log] or nil)
redis.call('HSET', KEYS[4], 'last_run_at', int(now))
move_next()
return {'fired'}
