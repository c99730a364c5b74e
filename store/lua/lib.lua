-- lib.lua: helpers prepended to every sluice script (not a script by itself).
--
-- Conventions shared by all scripts:
--   KEYS[1] = the shard's event stream, KEYS[2] = the shard's sequence counter,
--   KEYS[3] = the shard's set of known queue names.
--   ARGV[1] = now (ms), ARGV[2] = event stream cap (approximate MAXLEN),
--   ARGV[3] = notification channel prefix (a queue name is appended).
-- Every decision (status, due time, retry, revision) is made by the caller; these helpers
-- only write. Numbers are written with string.format('%d') so they never take the
-- exponent form of Lua's number-to-string conversion.

local function int(n)
  return string.format('%d', n)
end

-- Score of a ready job: higher priority first, then first in, first out.
local function ready_score(priority, seq)
  return int(-priority * 4398046511104 + seq)
end

local function notify(queue)
  redis.call('PUBLISH', ARGV[3] .. queue, '1')
end

-- Places job `id` (key `job_key`) of `queue` in its ready set (due <= now) or delayed set.
-- Either way idle workers are told: a new due time may be earlier than the one they wait for.
local function place(job_key, id, queue, priority, due, ready_key, delayed_key, now)
  if due > now then
    redis.call('ZADD', delayed_key, int(due), id)
  else
    local seq = redis.call('INCR', KEYS[2])
    redis.call('ZADD', ready_key, ready_score(priority, seq), id)
  end
  notify(queue)
end

local function emit(kind, data)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'type', kind, 'data', data)
end

-- Frees the dedupe slot of a job that leaves `pending` (if the slot still names it).
local function free_dedupe(job_key, id)
  local dedupe = redis.call('HGET', job_key, 'dedupe_ref')
  if dedupe and dedupe ~= '' and redis.call('GET', dedupe) == id then
    redis.call('DEL', dedupe)
  end
end

local function clear_lease(job_key)
  redis.call('HDEL', job_key, 'lease_token', 'lease_worker', 'lease_deadline')
end

-- Creates a job from its plan entry:
-- {key, ready, delayed, dedupe?, id, queue, priority, due, fields = {name = "value", ...}}
-- (key/ready/delayed/dedupe are indexes into KEYS). Returns the id of the job that
-- represents it: its own, or the pending job already holding the dedupe key.
local function create_job(j, now)
  if j.dedupe then
    local existing = redis.call('GET', KEYS[j.dedupe])
    if existing then
      return existing, false
    end
    redis.call('SET', KEYS[j.dedupe], j.id)
  end
  local args = {}
  for name, value in pairs(j.fields) do
    args[#args + 1] = name
    args[#args + 1] = value
  end
  if j.dedupe then
    args[#args + 1] = 'dedupe_ref'
    args[#args + 1] = KEYS[j.dedupe]
  end
  redis.call('HSET', KEYS[j.key], unpack(args))
  redis.call('SADD', KEYS[3], j.queue)
  place(KEYS[j.key], j.id, j.queue, j.priority, j.due, KEYS[j.ready], KEYS[j.delayed], now)
  return j.id, true
end

-- The revision check of a plan's execution write; returns the current revision when it
-- does not match (the caller must re-read and plan again), nil when the write may go on.
local function rev_conflict(tail)
  if tail.exec and tail.exec.rev >= 0 then
    local current = tonumber(redis.call('HGET', KEYS[tail.exec.key], 'rev') or '0')
    if current ~= tail.exec.rev then
      return current
    end
  end
  return nil
end

-- Applies the common tail of a plan: the execution write (revision + 1), the release of a
-- target's live slot, the jobs to create and the events to append.
local function apply_tail(tail, now)
  if tail.exec then
    local key = KEYS[tail.exec.key]
    redis.call('HSET', key, 'doc', tail.exec.doc, 'status', tail.exec.status)
    redis.call('HINCRBY', key, 'rev', 1)
  end
  if tail.release then
    if redis.call('GET', KEYS[tail.release.key]) == tail.release.owner then
      redis.call('DEL', KEYS[tail.release.key])
    end
  end
  if tail.jobs then
    for _, j in ipairs(tail.jobs) do
      create_job(j, now)
    end
  end
  if tail.events then
    for i = 1, #tail.events, 2 do
      emit(tail.events[i], tail.events[i + 1])
    end
  end
end
