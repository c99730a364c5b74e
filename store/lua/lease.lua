-- lease.lua: promote due delayed jobs of one queue's builtin lane, then reserve up to N of
-- its ready jobs for one of sluice's workers.
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 ready set, 5 delayed set (the builtin lane's),
--       6 leased set (shard).
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 max jobs to reserve, 5 reservation deadline,
--       6 worker id, 7 token prefix (unique per call), 8 job key prefix, 9 promote limit.
-- Returns: {next_due_ms_or_-1, id1, {field, value, ...}, id2, {...}, ...}; nothing while the
--          queue is paused in this shard.
-- Invariant: a reserved job stays `pending` (it can still be cancelled) with a lease token;
--            it runs only after `start.lua` accepts that token. Cost: O(log n) per job moved.
return lease_lane(function(id, key, token, fields)
  redis.call('HSET', key, 'lease_token', token, 'lease_worker', ARGV[6], 'lease_deadline', ARGV[5])
  redis.call('ZADD', KEYS[6], ARGV[5], id)
  -- The reply reads later pairs over earlier ones: these are the fields just written.
  fields[#fields + 1] = 'lease_token'
  fields[#fields + 1] = token
  fields[#fields + 1] = 'lease_worker'
  fields[#fields + 1] = ARGV[6]
  fields[#fields + 1] = 'lease_deadline'
  fields[#fields + 1] = ARGV[5]
  return fields
end)
