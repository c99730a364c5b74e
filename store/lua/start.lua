-- start.lua: the lease holder starts a reserved job (pending -> running).
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 job, 5 leased set, 6 the execution's event list (step
--       jobs only).
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 lease token, 5 new lease deadline.
-- Returns: {"ok", attempts} | {"cancelled"} | {"lease_lost"} | {"not_found"}
-- Invariant: only the holder of the current token can start the job; the attempt counter
--            moves here, once per attempt; `started_at` is the start of this attempt.
local key = KEYS[4]
local f = redis.call('HMGET', key, 'status', 'lease_token', 'id', 'queue', 'kind',
  'execution_id', 'step')
local status, token = f[1], f[2]
if not status then
  return {'not_found'}
end
if status == 'cancelled' then
  return {'cancelled'}
end
if status ~= 'pending' or token ~= ARGV[4] then
  return {'lease_lost'}
end
local attempts = redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'status', 'running', 'started_at', ARGV[1], 'updated_at', ARGV[1],
  'lease_deadline', ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[5], f[3])
free_dedupe(key, f[3])
local data = {job_id = f[3], queue = f[4], kind = f[5], attempt = attempts}
if f[6] and f[6] ~= '' then
  data.execution_id = f[6]
  data.step = tonumber(f[7])
end
local log = KEYS[6]
emit('job.started', cjson.encode(data), log)
if data.execution_id then
  emit('execution.step.started', cjson.encode(data), log)
end
return {'ok', attempts}
