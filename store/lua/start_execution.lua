-- start_execution.lua: create an execution and its first job, claiming its target's live
-- slot and its idempotency key.
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 target slot (or the execution key when no target),
--       5 idempotency key (or the execution key when none), 6.. keys named by the plan.
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 execution id, 5 has target (0/1),
--       6 has idempotency key (0/1), 7 idempotency key lifetime (ms),
--       8 plan JSON {"tail": {"exec": {..., "rev": -1}, "jobs": [...], "events": [...]}}.
-- Returns: {"ok"} | {"existing", execution_id} | {"busy", live_execution_id}
-- Invariant: at most one live execution per target; one execution per idempotency key; the
--            claim, the execution, its first job and the events land together or not at all.
local now = tonumber(ARGV[1])
if ARGV[6] == '1' then
  local existing = redis.call('GET', KEYS[5])
  if existing then
    return {'existing', existing}
  end
end
if ARGV[5] == '1' then
  local holder = redis.call('GET', KEYS[4])
  if holder then
    return {'busy', holder}
  end
  redis.call('SET', KEYS[4], ARGV[4])
end
if ARGV[6] == '1' then
  redis.call('SET', KEYS[5], ARGV[4], 'PX', ARGV[7])
end
local plan = cjson.decode(ARGV[8])
apply_tail(plan.tail, now)
return {'ok'}
