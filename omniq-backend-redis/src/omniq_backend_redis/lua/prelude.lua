-- Prelude of every OmniQ task-queue script. ARGV[1] is the key prefix P.
-- Keys: P:t:<id> task hash; P:q:<queue>:ready (score: priority, then enqueue order),
-- P:q:<queue>:delayed (score: eta), P:q:<queue>:s:<state> (score: enqueue order),
-- P:running (lease deadline), P:ttl (expires_at of tasks not started), P:done (when a
-- finished task may be deleted), P:deps:<id> (ids waiting on <id>), P:queues, P:seq.
-- Task hash fields: m marker, d encoded Task, c created_at, q queue, p priority, sq
-- enqueue order, s state, a attempts, e eta, x expires_at, md delivery limit, rt/dt
-- retention when finished/dead, w parents not yet succeeded, lo/lt/ld lease owner,
-- token and deadline, sa started_at, fa finished_at, er encoded ErrorInfo.
local P = ARGV[1]
local MARK = 'omniq:1'
local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local READY = {pending = true, scheduled = true, retrying = true}
local TERMINAL = {succeeded = true, failed = true, cancelled = true, expired = true, dead = true}
local RUNNING_KEY = P .. ':running'
local TTL_KEY = P .. ':ttl'
local DONE_KEY = P .. ':done'
local WAKE = {}

local function fmt(x) return string.format('%.17g', x) end
local function tkey(id) return P .. ':t:' .. id end
local function qkey(q, what) return P .. ':q:' .. q .. ':' .. what end
local function num(v) if v and v ~= '' then return tonumber(v) end return nil end

-- The fields scripts reason about, or nil for a missing (or foreign) task.
local function load(id)
  local v = redis.pcall('HMGET', tkey(id), 'm', 'q', 's', 'sq', 'p', 'e', 'x', 'a', 'md', 'rt', 'dt', 'lt')
  if v.err or v[1] ~= MARK then return nil end
  return {id = id, q = v[2], s = v[3], sq = tonumber(v[4]), p = tonumber(v[5]), e = num(v[6]),
          x = num(v[7]), a = tonumber(v[8]), md = tonumber(v[9]), rt = tonumber(v[10]),
          dt = tonumber(v[11]), lt = v[12]}
end

-- What a script returns for a task (decoded by codec.decode_task).
local function row(id)
  return redis.call('HMGET', tkey(id), 'd', 'c', 's', 'a', 'e', 'lo', 'lt', 'ld', 'sa', 'fa', 'er')
end

local function set_state(f, state)
  if f.s then redis.call('ZREM', qkey(f.q, 's:' .. f.s), f.id) end
  redis.call('ZADD', qkey(f.q, 's:' .. state), f.sq, f.id)
  redis.call('HSET', tkey(f.id), 's', state)
  f.s = state
end

local function ready_score(p, sq)
  if p < 0 then p = 0 elseif p > 9 then p = 9 end
  return fmt((9 - p) * 1e13 + sq)
end

-- A task that may run: into the ready set, or the delayed set until its eta.
local function to_ready(f, state)
  set_state(f, state)
  if f.e and f.e > NOW then
    redis.call('ZADD', qkey(f.q, 'delayed'), fmt(f.e), f.id)
  else
    redis.call('ZADD', qkey(f.q, 'ready'), ready_score(f.p, f.sq), f.id)
  end
  if f.x then redis.call('ZADD', TTL_KEY, fmt(f.x), f.id) end
  WAKE[f.q] = true
end

local function error_info(kind, message) return cmsgpack.pack({type = kind, message = message}) end

local function finish(f, state, err)
  redis.call('ZREM', qkey(f.q, 'ready'), f.id)
  redis.call('ZREM', qkey(f.q, 'delayed'), f.id)
  redis.call('ZREM', RUNNING_KEY, f.id)
  redis.call('ZREM', TTL_KEY, f.id)
  set_state(f, state)
  local k = tkey(f.id)
  redis.call('HSET', k, 'fa', fmt(NOW))
  redis.call('HDEL', k, 'lo', 'lt', 'ld')
  if err then redis.call('HSET', k, 'er', err) end
  local keep = f.rt
  if state == 'dead' then keep = f.dt end
  redis.call('ZADD', DONE_KEY, fmt(NOW + keep), f.id)
end

-- Cancel the waiting dependents of a task that ended without success, recursively.
local function cancel_dependents(id, state)
  local stack = {{id, state}}
  while #stack > 0 do
    local top = table.remove(stack)
    local dkey = P .. ':deps:' .. top[1]
    for _, child in ipairs(redis.call('SMEMBERS', dkey)) do
      local c = load(child)
      if c and c.s == 'waiting' then
        finish(c, 'cancelled', error_info('DependencyError', 'dependency ' .. top[1] .. ' ended ' .. top[2]))
        table.insert(stack, {child, 'cancelled'})
      end
    end
    redis.call('DEL', dkey)
  end
end

-- A parent succeeded: each waiting dependent whose parents all succeeded becomes ready.
local function release_dependents(id)
  local dkey = P .. ':deps:' .. id
  for _, child in ipairs(redis.call('SMEMBERS', dkey)) do
    local c = load(child)
    if c and c.s == 'waiting' and redis.call('HINCRBY', tkey(child), 'w', -1) <= 0 then
      if c.e and c.e > NOW then to_ready(c, 'scheduled') else to_ready(c, 'pending') end
    end
  end
  redis.call('DEL', dkey)
end

-- End a task in a terminal state, with what that means for its dependents.
local function conclude(f, state, err)
  finish(f, state, err)
  if state == 'succeeded' then release_dependents(f.id) else cancel_dependents(f.id, state) end
end

local function held(f, token) return f ~= nil and f.s == 'running' and f.lt == token end

local function wake()
  for q, _ in pairs(WAKE) do redis.call('PUBLISH', P .. ':w:' .. q, '1') end
end

