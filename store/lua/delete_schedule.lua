-- delete_schedule.lua: delete a schedule with its history.
--
-- KEYS: 1 the schedule's hash, 2 the shard's due set, 3 its history index, 4 its history rows.
-- ARGV: 1 schedule id.
-- Returns: 1 if it existed, else 0.
-- Invariant: once deleted, no fire of it can happen (`fire_schedule` finds it gone).
local existed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4])
return existed
