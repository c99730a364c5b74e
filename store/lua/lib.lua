-- lib.lua: helpers prepended to every sluice script (not a script by itself).
--
-- Conventions shared by all scripts:
--   KEYS[1] = the shard's event stream, KEYS[2] = the shard's sequence counter,
--   KEYS[3] = the shard's set of known queue names.
--   ARGV[1] = now (ms), ARGV[2] = event stream cap (approximate MAXLEN),
--   ARGV[3] = notification channel prefix (a lane's stem is appended: the queue name, or the
--             queue name and `:external` for the external lane; see `Lane::stem`).
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

-- A lane's other keys sit beside its ready set (`…:q:<stem>:ready`), in the same hash
-- tag: `:since` (ZSET id -> when it became ready), `:stats` (HASH of outcome counters) and
-- `:paused` (STRING flag). See `docs/redis-keys.md`.
local function sibling(ready_key, suffix)
  return string.sub(ready_key, 1, #ready_key - 6) .. suffix
end

-- Puts `id` in a ready set, remembering since when it waits.
local function make_ready(ready_key, id, priority, now)
  local seq = redis.call('INCR', KEYS[2])
  redis.call('ZADD', ready_key, ready_score(priority, seq), id)
  redis.call('ZADD', sibling(ready_key, ':since'), now, id)
end

-- Takes `id` out of a ready set (and its waiting-since set).
local function unready(ready_key, id)
  redis.call('ZREM', ready_key, id)
  redis.call('ZREM', sibling(ready_key, ':since'), id)
end

-- Counts an outcome (`completed`, `failed`, `retried`, `cancelled`) of a job of the queue.
local function count_outcome(ready_key, outcome)
  redis.call('HINCRBY', sibling(ready_key, ':stats'), outcome, 1)
end

-- Tells the idle workers of a lane (`stem`: see ARGV[3] above) that a job became ready.
local function notify(stem)
  redis.call('PUBLISH', ARGV[3] .. stem, '1')
end

-- Places job `id` (key `job_key`) in its lane's ready set (due <= now) or delayed set.
-- Either way the lane's idle workers are told: a new due time may be earlier than the one
-- they wait for.
local function place(job_key, id, stem, priority, due, ready_key, delayed_key, now)
  if due > now then
    redis.call('ZADD', delayed_key, int(due), id)
  else
    make_ready(ready_key, id, priority, now)
  end
  notify(stem)
end

-- Moves up to `limit` due jobs of a lane's delayed set to its ready set (job hashes are
-- `prefix .. id`). Returns how many moved.
local function promote_due(ready_key, delayed_key, prefix, now, limit)
  local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', int(now), 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed_key, id)
    local priority = tonumber(redis.call('HGET', prefix .. id, 'priority') or '0')
    make_ready(ready_key, id, priority, now)
  end
  return #due
end

-- When the earliest job of a delayed set is due (ms), or -1 when it is empty.
local function next_due(delayed_key)
  local first = redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')
  if #first > 0 then
    return tonumber(first[2])
  end
  return -1
end

-- Most entries kept in an execution's own event list.
local EXEC_LOG_CAP = 1000

-- Appends an event to the shard's stream and, when `log` (a key) is given, to that
-- execution's own event list. Returns the stream entry id.
local function emit(kind, data, log)
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'type', kind, 'data', data)
  if log then
    -- Trimmed only once over the cap: RPUSH answers the new length.
    if redis.call('RPUSH', log, cjson.encode({id = id, type = kind, data = data})) > EXEC_LOG_CAP then
      redis.call('LTRIM', log, -EXEC_LOG_CAP, -1)
    end
  end
  return id
end

-- Frees the dedupe slot `dedupe` (a key, or nil/'' for none) of job `id` as it leaves
-- `pending`, if the slot still names it.
local function free_dedupe_slot(dedupe, id)
  if dedupe and dedupe ~= '' and redis.call('GET', dedupe) == id then
    redis.call('DEL', dedupe)
  end
end

-- Frees the dedupe slot of a job that leaves `pending` (if the slot still names it).
local function free_dedupe(job_key, id)
  free_dedupe_slot(redis.call('HGET', job_key, 'dedupe_ref'), id)
end

local function clear_lease(job_key)
  redis.call('HDEL', job_key, 'lease_token', 'lease_worker', 'lease_deadline')
end

-- Cancels pending job `id`: out of its ready, delayed and leased sets (a reservation in a
-- worker's prefetch buffer loses its token), dedupe slot freed, status `cancelled`.
local function cancel_pending(job_key, id, ready_key, delayed_key, leased_key, now)
  unready(ready_key, id)
  count_outcome(ready_key, 'cancelled')
  redis.call('ZREM', delayed_key, id)
  redis.call('ZREM', leased_key, id)
  free_dedupe(job_key, id)
  clear_lease(job_key)
  redis.call('HSET', job_key, 'status', 'cancelled', 'updated_at', now, 'finished_at', now)
end

-- Creates a job from its plan entry:
-- {key, ready, delayed, dedupe?, id, queue, stem, priority, due, fields = {name = "value", ...}}
-- (key/ready/delayed/dedupe are indexes into KEYS, the ready and delayed sets those of the
-- job's lane, `stem` the lane's stem). Returns the id of the job that represents it: its
-- own, or the pending job already holding the dedupe key.
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
  place(KEYS[j.key], j.id, j.stem, j.priority, j.due, KEYS[j.ready], KEYS[j.delayed], now)
  return j.id, true
end

-- The fields of a job that `start_job` reads, in this order (`HMGET key unpack(...)`).
local START_FIELDS = {'queue', 'kind', 'execution_id', 'step', 'dedupe_ref', 'attempts',
  'lease_worker'}

-- Starts pending job `id` (key `key`) under the lease it holds: one more attempt, status
-- `running` from `now` with the lease until `deadline`, its dedupe slot freed; appends
-- `job.started` (and `execution.step.started` for a step job), naming the lease holder as
-- `worker`, to the stream and to the list `log_of(execution_id)` names (nil: none). `f`
-- holds the job's START_FIELDS when the caller read them already (nil: read here). Returns
-- the attempt number.
local function start_job(key, id, deadline, leased_key, now, log_of, f)
  f = f or redis.call('HMGET', key, unpack(START_FIELDS))
  local attempts = tonumber(f[6] or '0') + 1
  redis.call('HSET', key, 'attempts', int(attempts), 'status', 'running', 'started_at', now,
    'updated_at', now, 'lease_deadline', deadline)
  redis.call('ZADD', leased_key, deadline, id)
  free_dedupe_slot(f[5], id)
  local data = {job_id = id, queue = f[1], kind = f[2], attempt = attempts, worker = f[7] or nil}
  local log = nil
  if f[3] and f[3] ~= '' then
    data.execution_id = f[3]
    data.step = tonumber(f[4])
    log = log_of(f[3])
  end
  emit('job.started', cjson.encode(data), log)
  if data.execution_id then
    emit('execution.step.started', cjson.encode(data), log)
  end
  return attempts
end

-- The checks of a plan's tail, before anything is written: the execution's revision (the
-- caller re-reads and plans again on a mismatch) and the target claim. Returns nil when the
-- write may go on, else a reply for the caller: {'conflict', rev} or {'busy', holder}.
local function tail_refusal(tail)
  if tail.exec and tail.exec.rev >= 0 then
    local current = tonumber(redis.call('HGET', KEYS[tail.exec.key], 'rev') or '0')
    if current ~= tail.exec.rev then
      return {'conflict', current}
    end
  end
  if tail.claim then
    local holder = redis.call('GET', KEYS[tail.claim.key])
    if holder and holder ~= tail.claim.owner then
      return {'busy', holder}
    end
  end
  return nil
end

-- Keeps the execution indexes in step with a write: on creation the id joins the `all`,
-- pipeline and target sets; on a status change it moves between the status sets.
local function index_execution(ix, id)
  if ix.old then
    redis.call('ZREM', KEYS[ix.old], id)
  end
  for _, name in ipairs({'all', 'pipeline', 'target', 'new'}) do
    if ix[name] then
      redis.call('ZADD', KEYS[ix[name]], ix.score, id)
    end
  end
end

-- Stops the jobs of an execution: a pending job is cancelled; a running one is marked
-- `cancel_requested` and its id published on the cancel channel for the worker running it.
local function stop_jobs(stop, now, log)
  for _, j in ipairs(stop.jobs) do
    local key = KEYS[j.key]
    local f = redis.call('HMGET', key, 'status', 'queue', 'kind', 'execution_id', 'step',
      'lease_worker')
    local data = {job_id = j.id, queue = f[2], kind = f[3], execution_id = f[4],
      step = tonumber(f[5] or ''), reason = stop.reason}
    if f[1] == 'pending' then
      cancel_pending(key, j.id, KEYS[j.ready], KEYS[j.delayed], KEYS[stop.leased], ARGV[1])
      emit('job.cancelled', cjson.encode(data), log)
    elseif f[1] == 'running' and f[6] == 'awaiting-result' then
      -- No process holds it (an http step whose service answered 202): end it here; a
      -- result posted later finds the lease gone.
      clear_lease(key)
      redis.call('ZREM', KEYS[stop.leased], j.id)
      count_outcome(KEYS[j.ready], 'failed')
      local err = cjson.encode({retryable = false, message =
        'stopped: the execution was cancelled or restarted while the result was awaited'})
      redis.call('HSET', key, 'status', 'failed', 'updated_at', ARGV[1], 'finished_at', ARGV[1],
        'last_error', err)
      data.will_retry = false
      data.error = 'stopped while its result was awaited'
      emit('job.failed', cjson.encode(data), log)
    elseif f[1] == 'running' then
      redis.call('HSET', key, 'cancel_requested', '1')
      redis.call('PUBLISH', stop.channel, j.id)
      emit('job.cancel_requested', cjson.encode(data), log)
    end
  end
end

-- Applies the common tail of a plan (after `tail_refusal`): the execution write (revision
-- + 1, indexes), the target claim or release, the jobs to stop and to create, and the events
-- to append (also to the execution's own list when the tail names it).
local function apply_tail(tail, now)
  local log = tail.log and KEYS[tail.log] or nil
  if tail.exec then
    local key = KEYS[tail.exec.key]
    redis.call('HSET', key, 'doc', tail.exec.doc, 'status', tail.exec.status)
    redis.call('HINCRBY', key, 'rev', 1)
    if tail.exec.index then
      index_execution(tail.exec.index, tail.exec.id)
    end
  end
  if tail.claim then
    redis.call('SET', KEYS[tail.claim.key], tail.claim.owner)
  end
  if tail.release then
    if redis.call('GET', KEYS[tail.release.key]) == tail.release.owner then
      redis.call('DEL', KEYS[tail.release.key])
    end
  end
  if tail.stop then
    stop_jobs(tail.stop, now, log)
  end
  if tail.jobs then
    for _, j in ipairs(tail.jobs) do
      create_job(j, now)
    end
  end
  if tail.events then
    for i = 1, #tail.events, 2 do
      emit(tail.events[i], tail.events[i + 1], log)
    end
  end
end

-- The value of `field` in a flat {field, value, ...} reply (HGETALL), or nil.
local function field_of(flat, field)
  for i = 1, #flat, 2 do
    if flat[i] == field then
      return flat[i + 1]
    end
  end
  return nil
end

-- The body of the lease scripts (`lease.lua`, `lease_external.lua`), which share their KEYS
-- (4 the lane's ready set, 5 its delayed set, 6 the shard's leased set) and ARGV (4 max
-- jobs, 5 lease deadline, 6 worker id, 7 token prefix, 8 job key prefix, 9 promote limit):
-- unless the lane is paused, promotes its due delayed jobs, then pops up to max ready jobs
-- and gives each one still pending a fresh token (the call's unique prefix and the job's
-- place in the call), handing it to `take(id, key, token, fields)`, which returns the
-- job's fields as it left them (`fields`: the job's HGETALL before).
-- Returns {next_due_ms_or_-1, id1, {field, value, ...}, ...}.
local function lease_lane(take)
  if redis.call('EXISTS', sibling(KEYS[4], ':paused')) == 1 then
    return {-1}
  end
  local prefix = ARGV[8]
  promote_due(KEYS[4], KEYS[5], prefix, tonumber(ARGV[1]), tonumber(ARGV[9]))
  local out = {-1}
  local popped = redis.call('ZPOPMIN', KEYS[4], tonumber(ARGV[4]))
  local since = sibling(KEYS[4], ':since')
  local ids = {}
  for i = 1, #popped, 2 do
    ids[#ids + 1] = popped[i]
    if #ids == 500 then
      redis.call('ZREM', since, unpack(ids))
      ids = {}
    end
  end
  if #ids > 0 then
    redis.call('ZREM', since, unpack(ids))
  end
  for i = 1, #popped, 2 do
    local id = popped[i]
    local key = prefix .. id
    local fields = redis.call('HGETALL', key)
    if field_of(fields, 'status') == 'pending' then
      out[#out + 1] = id
      out[#out + 1] = take(id, key, ARGV[7] .. '.' .. ((i + 1) / 2), fields)
    end
  end
  out[1] = next_due(KEYS[5])
  return out
end
