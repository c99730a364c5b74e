-- reclaim.lua: deal with expired leases of one shard, in a bounded chunk.
--
-- KEYS: 1 events, 2 seq, 3 queues, 4 leased set.
-- ARGV: 1 now, 2 event cap, 3 channel prefix, 4 job key prefix, 5 chunk size,
--       6 queue key prefix, 7 ready set suffix, 8 external lane segment (a job's ready set
--       is ARGV[6] .. stem .. ARGV[7], its lane's stem being its queue, followed by ARGV[8]
--       when its `lane` field is `external`).
-- Returns: {released, id1, token1, id2, token2, ...}: `released` reserved-but-never-started
--          jobs went back to their ready sets here; the listed jobs were running and must be
--          settled by the caller as a failed attempt (settle.lua with the expiry guard).
-- Invariant: safe from any number of processes: a reservation is released once (its token
--            is cleared), and the running ones are settled under their token.
local now = tonumber(ARGV[1])
local prefix = ARGV[4]
local ids = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[1], 'LIMIT', 0,
  tonumber(ARGV[5]))
local released = 0
local out = {0}
for _, id in ipairs(ids) do
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'status', 'lease_token', 'queue', 'priority', 'lane')
  if f[1] == 'pending' and f[2] then
    local stem = f[3]
    if f[5] == 'external' then
      stem = stem .. ARGV[8]
    end
    clear_lease(key)
    redis.call('ZREM', KEYS[4], id)
    place(key, id, stem, tonumber(f[4] or '0'), 0, ARGV[6] .. stem .. ARGV[7], '', now)
    released = released + 1
  elseif f[1] == 'running' and f[2] then
    out[#out + 1] = id
    out[#out + 1] = f[2]
  else
    redis.call('ZREM', KEYS[4], id)
  end
end
out[1] = released
return out
