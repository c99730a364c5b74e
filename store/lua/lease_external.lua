-- lease_external.lua: promote due delayed jobs of one queue's external lane, then lease and
-- start up to N of its ready jobs for an external worker, in one step.
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 ready set, 5 delayed set (the external lane's),
--       6 leased set (shard).
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 max jobs to lease, 5 lease deadline,
--       6 worker id, 7 token prefix (unique per call), 8 job key prefix, 9 promote limit,
--       10 execution key prefix, 11 suffix of an execution's event list.
-- Returns: {next_due_ms_or_-1, id1, {field, value, ...}, id2, {...}, ...}, each job as it is
--          once started; nothing while the queue is paused in this shard.
-- Invariant: a job leaves the ready set `running` under a fresh token, its attempt counted
--            and `job.started` appended, as `lease.lua` followed by `start.lua` would leave
--            it (an external worker has no prefetch buffer to reserve into).
local function log_of(execution_id)
  return ARGV[10] .. execution_id .. ARGV[11]
end

return lease_lane(function(id, key, token)
  redis.call('HSET', key, 'lease_token', token, 'lease_worker', ARGV[6])
  start_job(key, id, ARGV[5], KEYS[6], ARGV[1], log_of)
  return redis.call('HGETALL', key)
end)
