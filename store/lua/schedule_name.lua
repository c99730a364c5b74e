-- schedule_name.lua: claim or release a schedule's name (names are unique).
--
-- KEYS: 1 names (HASH name -> id), 2 name index (ZSET), 3 names defined in files (SET).
-- ARGV: 1 'claim' | 'release', 2 name, 3 schedule id,
--       4 (claim) the id the name may be taken from ('' = none: the name must be free or
--         already this id's), 5 (claim) source ('api' | 'file').
-- Returns: {'ok'} | {'taken', holder_id}
-- Invariant: a name names at most one schedule; a release only frees a name its id holds.
local holder = redis.call('HGET', KEYS[1], ARGV[2])
if ARGV[1] == 'release' then
  if holder == ARGV[3] then
    redis.call('HDEL', KEYS[1], ARGV[2])
    redis.call('ZREM', KEYS[2], ARGV[2])
    redis.call('SREM', KEYS[3], ARGV[2])
  end
  return {'ok'}
end
if holder and holder ~= ARGV[3] and holder ~= ARGV[4] then
  return {'taken', holder}
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
if ARGV[5] == 'file' then
  redis.call('SADD', KEYS[3], ARGV[2])
else
  redis.call('SREM', KEYS[3], ARGV[2])
end
return {'ok'}
