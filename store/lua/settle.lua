-- settle.lua: commit the outcome of a running job's attempt, and its execution's next state.
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 job, 5 leased set, 6 ready set and 7 delayed set of
--       the job's lane, 8.. keys named by the plan.
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 lease token,
--       5 expired-before guard (0: none; else the lease deadline must be older than this),
--       6 plan JSON: {"status": "completed"|"failed"|"pending"|"running", "fields": {...},
--                     "due": ms (pending: when it is due again; running: new lease deadline),
--                     "stem": the lane's stem (its notification channel),
--                     "record"?: {"key": index of the job's results hash, "name": the
--                                 Idempotency-Key, "answer": JSON text, "ttl": ms},
--                     "tail": {"exec"?, "release"?, "jobs"?, "events"?}} (see lib.lua)
-- Returns: {"ok"} | {"lease_lost"} | {"conflict", current_rev}
--          | {"replay", answer} (a result with this Idempotency-Key was applied before)
--          | {"already_applied"} (this lease's attempt was settled by a result with another
--            Idempotency-Key)
-- Invariant: applied at most once per attempt: only while the job is running under this
--            token, and only if the execution is still at the revision the plan was made
--            from. Job result, execution state, next job, events and the record of a posted
--            result land together or not at all.
local now = tonumber(ARGV[1])
local key = KEYS[4]
local plan = cjson.decode(ARGV[6])
local record = plan.record
if record then
  local results = KEYS[record.key]
  local answer = redis.call('HGET', results, 'k:' .. record.name)
  if answer then
    return {'replay', answer}
  end
  if redis.call('HEXISTS', results, 't:' .. ARGV[4]) == 1 then
    return {'already_applied'}
  end
end
local f = redis.call('HMGET', key, 'status', 'lease_token', 'lease_deadline', 'id', 'priority',
  'attempts')
if f[1] ~= 'running' or f[2] ~= ARGV[4] then
  return {'lease_lost'}
end
local guard = tonumber(ARGV[5])
if guard > 0 and tonumber(f[3] or '0') >= guard then
  return {'lease_lost'}
end
local tail = plan.tail or {}
local refusal = tail_refusal(tail)
if refusal then
  return refusal
end
if record then
  local results = KEYS[record.key]
  redis.call('HSET', results, 'k:' .. record.name, record.answer, 't:' .. ARGV[4], record.name,
    'a:' .. (f[6] or '0'), record.name)
  redis.call('PEXPIRE', results, record.ttl)
end
local args = {'status', plan.status, 'updated_at', ARGV[1]}
for name, value in pairs(plan.fields) do
  args[#args + 1] = name
  args[#args + 1] = value
end
redis.call('HSET', key, unpack(args))
if plan.status == 'running' then
  -- Deferred: the result will be posted back under the same token before the new deadline.
  redis.call('HSET', key, 'lease_deadline', plan.due)
  redis.call('ZADD', KEYS[5], plan.due, f[4])
  apply_tail(tail, now)
  return {'ok'}
end
clear_lease(key)
redis.call('ZREM', KEYS[5], f[4])
if plan.status == 'pending' then
  place(key, f[4], plan.stem, tonumber(f[5] or '0'), plan.due, KEYS[6], KEYS[7], now)
  count_outcome(KEYS[6], 'retried')
else
  count_outcome(KEYS[6], plan.status)
end
apply_tail(tail, now)
return {'ok'}
