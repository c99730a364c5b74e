-- settle.lua: commit the outcome of a running job's attempt, and its execution's next state.
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 job, 5 leased set, 6 job's ready set,
--       7 job's delayed set, 8.. keys named by the plan.
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 lease token,
--       5 expired-before guard (0: none; else the lease deadline must be older than this),
--       6 plan JSON: {"status": "completed"|"failed"|"pending"|"running", "fields": {...},
--                     "due": ms (pending: when it is due again; running: new lease deadline),
--                     "tail": {"exec"?, "release"?, "jobs"?, "events"?}} (see lib.lua)
-- Returns: {"ok"} | {"lease_lost"} | {"conflict", current_rev}
-- Invariant: applied at most once per attempt: only while the job is running under this
--            token, and only if the execution is still at the revision the plan was made
--            from. Job result, execution state, next job and events land together or not.
local now = tonumber(ARGV[1])
local key = KEYS[4]
local f = redis.call('HMGET', key, 'status', 'lease_token', 'lease_deadline', 'id', 'queue',
  'priority')
if f[1] ~= 'running' or f[2] ~= ARGV[4] then
  return {'lease_lost'}
end
local guard = tonumber(ARGV[5])
if guard > 0 and tonumber(f[3] or '0') >= guard then
  return {'lease_lost'}
end
local plan = cjson.decode(ARGV[6])
local tail = plan.tail or {}
local refusal = tail_refusal(tail)
if refusal then
  return refusal
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
  place(key, f[4], f[5], tonumber(f[6] or '0'), plan.due, KEYS[6], KEYS[7], now)
  count_outcome(KEYS[6], 'retried')
else
  count_outcome(KEYS[6], plan.status)
end
apply_tail(tail, now)
return {'ok'}
