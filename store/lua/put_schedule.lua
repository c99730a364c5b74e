-- put_schedule.lua: create a schedule, or change its definition under its revision.
--
-- KEYS: 1 events, 2 seq, 3 queues (the shared convention; unused), 4 the schedule's hash,
--       5 the shard's due set.
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 schedule id, 5 expected revision (0: create,
--       the schedule must not exist), 6 definition (JSON), 7 what becomes of next_run_at:
--       'keep' | 'set' | 'clear', 8 the new next_run_at (with 'set').
-- Returns: {'ok', new_rev} | {'exists'} | {'gone'} | {'conflict', current_rev}
-- Invariant: a definition is only written over the revision it was made from; 'keep'
--            leaves next_run_at and the due set as they are (a fire may have moved them
--            since the caller read the schedule).
local expected = tonumber(ARGV[5])
local current = redis.call('HGET', KEYS[4], 'rev')
if expected == 0 then
  if current then
    return {'exists'}
  end
elseif not current then
  return {'gone'}
elseif tonumber(current) ~= expected then
  return {'conflict', tonumber(current)}
end
local rev = expected + 1
redis.call('HSET', KEYS[4], 'doc', ARGV[6], 'rev', rev)
if ARGV[7] == 'set' then
  redis.call('HSET', KEYS[4], 'next_run_at', ARGV[8])
  redis.call('ZADD', KEYS[5], ARGV[8], ARGV[4])
elseif ARGV[7] == 'clear' then
  redis.call('HDEL', KEYS[4], 'next_run_at')
  redis.call('ZREM', KEYS[5], ARGV[4])
end
return {'ok', rev}
