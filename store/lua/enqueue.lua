-- enqueue.lua: create standalone jobs (any number), honouring dedupe keys.
--
-- KEYS: 1 events, 2 seq, 3 queues, then per job the keys named by its plan entry.
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 plan JSON:
--       {"jobs": [job entries as in lib.lua create_job], "events": [[type, data] per job]}
-- Returns: a flat array, per job: id of the job that represents it, 1 if created / 0 if an
--          existing pending job with the same dedupe key was returned instead.
-- Invariant: while a job is pending, its dedupe key names it and no second job is created.
local now = tonumber(ARGV[1])
local plan = cjson.decode(ARGV[4])
local out = {}
for i, j in ipairs(plan.jobs) do
  local id, created = create_job(j, now)
  out[#out + 1] = id
  out[#out + 1] = created and 1 or 0
  if created then
    emit(plan.events[i][1], plan.events[i][2])
  end
end
return out
