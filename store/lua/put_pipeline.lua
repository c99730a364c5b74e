-- put_pipeline.lua: store a pipeline definition, as a new version only when it changed.
--
-- KEYS: 1 the pipeline's hash, 2 the set of pipeline ids.
-- ARGV: 1 now, 2 canonical JSON definition, 3 digest of the definition, 4 pipeline id.
-- Returns: {version, changed (0/1)}
-- Invariant: versions count up from 1; an unchanged definition keeps its version.
local f = redis.call('HMGET', KEYS[1], 'version', 'digest')
local version = tonumber(f[1] or '0')
if f[2] == ARGV[3] and version > 0 then
  return {version, 0}
end
version = version + 1
redis.call('HSET', KEYS[1], 'version', version, 'digest', ARGV[3], 'updated_at', ARGV[1],
  'def:' .. version, ARGV[2])
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[4])
return {version, 1}
