-- heartbeat.lua: extend the leases of jobs held by one worker (any number, one shard).
--
-- KEYS: 1 leased set, 2.. job keys.
-- ARGV: 1 new deadline, 2.. lease tokens (same order as the job keys).
-- Returns: one integer per job: 1 extended, 2 extended but the job's execution was stopped
--          (the worker kills the job and settles it), 0 lease lost (token changed or job
--          settled).
-- Invariant: a heartbeat never extends a lease it does not hold.
local out = {}
for i = 2, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 'lease_token', 'status', 'id', 'cancel_requested')
  if f[1] == ARGV[i] and (f[2] == 'running' or f[2] == 'pending') then
    redis.call('HSET', KEYS[i], 'lease_deadline', ARGV[1])
    redis.call('ZADD', KEYS[1], ARGV[1], f[3])
    if f[4] == '1' then
      out[#out + 1] = 2
    else
      out[#out + 1] = 1
    end
  else
    out[#out + 1] = 0
  end
end
return out
