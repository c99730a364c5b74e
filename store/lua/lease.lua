-- lease.lua: promote due delayed jobs of one queue, then reserve up to N ready jobs.
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 ready set, 5 delayed set, 6 leased set (shard).
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 max jobs to reserve, 5 reservation deadline,
--       6 worker id, 7 token prefix (unique per call), 8 job key prefix, 9 promote limit.
-- Returns: {next_due_ms_or_-1, id1, {field, value, ...}, id2, {...}, ...}; nothing while the
--          queue is paused in this shard.
-- Invariant: a reserved job stays `pending` (it can still be cancelled) with a lease token;
--            it runs only after `start.lua` accepts that token. Cost: O(log n) per job moved.
local now = tonumber(ARGV[1])
local prefix = ARGV[8]
if redis.call('EXISTS', sibling(KEYS[4], ':paused')) == 1 then
  return {-1}
end

local due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[9]))
if #due > 0 then
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[5], id)
    local priority = tonumber(redis.call('HGET', prefix .. id, 'priority') or '0')
    make_ready(KEYS[4], id, priority, now)
  end
end

local out = {-1}
local popped = redis.call('ZPOPMIN', KEYS[4], tonumber(ARGV[4]))
local since = sibling(KEYS[4], ':since')
for i = 1, #popped, 2 do
  local id = popped[i]
  redis.call('ZREM', since, id)
  local key = prefix .. id
  if redis.call('HGET', key, 'status') == 'pending' then
    local n = redis.call('HINCRBY', key, 'lease_seq', 1)
    redis.call('HSET', key, 'lease_token', ARGV[7] .. '.' .. n, 'lease_worker', ARGV[6],
      'lease_deadline', ARGV[5])
    redis.call('ZADD', KEYS[6], ARGV[5], id)
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGETALL', key)
  end
end

local next_due = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
if #next_due > 0 then
  out[1] = tonumber(next_due[2])
end
return out
