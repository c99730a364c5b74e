-- promote.lua: move due delayed jobs of one lane of a queue to its ready set, in a bounded
-- chunk.
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 ready set, 5 delayed set (of the lane).
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 job key prefix, 5 chunk size, 6 the lane's
--       stem (its notification channel).
-- Returns: the number of jobs moved (call again while it equals the chunk size).
-- Invariant: idempotent and safe from any number of processes; O(log n) per job moved.
local moved = promote_due(KEYS[4], KEYS[5], ARGV[4], tonumber(ARGV[1]), tonumber(ARGV[5]))
if moved > 0 then
  notify(ARGV[6])
end
return moved
