-- cancel.lua: cancel a pending job (removed from its queue at once) and apply its
-- execution's next state.
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 job, 5 leased set, 6 ready set and 7 delayed set of
--       the job's lane, 8.. keys named by the plan.
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 plan JSON {"tail": {...}} (see lib.lua).
-- Returns: {"ok"} | {"not_found"} | {"not_pending", status} | {"conflict", current_rev}
-- Invariant: only a pending job can be cancelled; after this script no worker can lease or
--            start it (it is in no queue set, and its reservation token is gone).
local now = tonumber(ARGV[1])
local key = KEYS[4]
local f = redis.call('HMGET', key, 'status', 'id')
if not f[1] then
  return {'not_found'}
end
if f[1] ~= 'pending' then
  return {'not_pending', f[1]}
end
local plan = cjson.decode(ARGV[4])
local tail = plan.tail or {}
local refusal = tail_refusal(tail)
if refusal then
  return refusal
end
cancel_pending(key, f[2], KEYS[6], KEYS[7], KEYS[5], ARGV[1])
apply_tail(tail, now)
return {'ok'}
