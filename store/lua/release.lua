-- release.lua: the lease holder gives a job back unfinished (graceful shutdown).
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 job, 5 leased set, 6 ready set and 7 delayed set of
--       the job's lane.
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 lease token, 5 the lane's stem.
-- Returns: {"ok"} | {"lease_lost"}
-- Invariant: the job is pending and ready again; an attempt that was started and given
--            back is not counted.
local now = tonumber(ARGV[1])
local key = KEYS[4]
local f = redis.call('HMGET', key, 'status', 'lease_token', 'id', 'priority')
if f[2] ~= ARGV[4] or (f[1] ~= 'running' and f[1] ~= 'pending') then
  return {'lease_lost'}
end
if f[1] == 'running' then
  redis.call('HINCRBY', key, 'attempts', -1)
end
redis.call('HSET', key, 'status', 'pending', 'updated_at', ARGV[1])
clear_lease(key)
redis.call('ZREM', KEYS[5], f[3])
place(key, f[3], ARGV[5], tonumber(f[4] or '0'), 0, KEYS[6], KEYS[7], now)
return {'ok'}
