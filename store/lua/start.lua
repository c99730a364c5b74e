-- start.lua: the lease holder starts a reserved job (pending -> running).
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 job, 5 leased set, 6 the execution's event list (step
--       jobs only).
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 lease token, 5 new lease deadline.
-- Returns: {"ok", attempts} | {"cancelled"} | {"lease_lost"} | {"not_found"}
-- Invariant: only the holder of the current token can start the job; the attempt counter
--            moves here, once per attempt; `started_at` is the start of this attempt. A
--            start repeated under the same token (a retry after a lost answer) changes
--            nothing and answers "ok" with the attempt already started.
local key = KEYS[4]
local f = redis.call('HMGET', key, 'status', 'lease_token', 'id', unpack(START_FIELDS))
local status, token = f[1], f[2]
if not status then
  return {'not_found'}
end
if status == 'cancelled' then
  return {'cancelled'}
end
if status == 'running' and token == ARGV[4] then
  -- Already started under this lease: a retry of a start whose answer was lost (the call
  -- timed out and Redis ran it later). Answer as that start did; nothing changes.
  return {'ok', tonumber(f[9])}
end
if status ~= 'pending' or token ~= ARGV[4] then
  return {'lease_lost'}
end
local attempts = start_job(key, f[3], ARGV[5], KEYS[5], ARGV[1], function() return KEYS[6] end,
  {f[4], f[5], f[6], f[7], f[8], f[9], f[10]})
return {'ok', attempts}
