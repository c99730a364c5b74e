-- operate.lua: commit an operator action on an execution (cancel, retry, restart, pause,
-- resume): the execution's next state, the jobs it stops and creates, the target it claims
-- or releases, and the events.
--
-- KEYS: 1 events, 2 seq, 3 queues, 4.. keys named by the plan.
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 plan JSON {"tail": {...}} (see lib.lua).
-- Returns: {"ok"} | {"conflict", current_rev} | {"busy", holder}
-- Invariant: applied only while the execution is at the revision the plan was made from
--            and, when the plan claims the target, no other execution holds it; a stopped
--            pending job is out of every queue set in the same step, so no worker can lease
--            or start it afterwards.
local now = tonumber(ARGV[1])
local plan = cjson.decode(ARGV[4])
local refusal = tail_refusal(plan.tail)
if refusal then
  return refusal
end
apply_tail(plan.tail, now)
return {'ok'}
