-- promote.lua: move due delayed jobs of one queue to its ready set, in a bounded chunk.
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 ready set, 5 delayed set.
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 job key prefix, 5 chunk size, 6 queue name.
-- Returns: the number of jobs moved (call again while it equals the chunk size).
-- Invariant: idempotent and safe from any number of processes; O(log n) per job moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[5], id)
  local priority = tonumber(redis.call('HGET', ARGV[4] .. id, 'priority') or '0')
  make_ready(KEYS[4], id, priority, tonumber(ARGV[1]))
end
if #due > 0 then
  notify(ARGV[6])
end
return #due
