-- The task-queue scripts' state changes beyond a lease: indexing a task that may run,
-- handing a lease back, ending a task with what that means for its dependents. Runs
-- after prelude.lua (whose helpers these use), for every task-queue script but
-- reserve.lua, which needs none of it: its ~11 closures cost ~21,000 server
-- instructions of every run that builds them.

-- Index a task that may run: the ready set, or the delayed set until its eta. (Fields
-- as arguments: enqueue calls this per task without building a table for it.)
local function index_ready(id, q, p, sq, e, x)
  if e and e > NOW then
    zadd(qkey(q, 'delayed'), num(e), id)
  else
    zadd(qkey(q, 'ready'), ready_score(p, sq), id)
  end
  if x then zadd(TTL_KEY, num(x), id) end
  WAKE[q] = true
end

-- Move a waiting task to a state that may run (one HSET, like the ones below).
local function to_ready(f, state)
  set_state(f, state)
  redis.call('HSET', f.key or tkey(f.id), 's', state)
  f.s = state
  index_ready(f.id, f.q, f.p, f.sq, f.e, f.x)
end

-- Hand a leased task back to a state that may run, its lease cleared, in one HSET with up
-- to two more fields (n1 = v1, n2 = v2: strings, which the caller has set in f already).
local function unlease(f, state, n1, v1, n2, v2)
  zrem(RUNNING_KEY, f.id)
  set_state(f, state)
  local key = f.key or tkey(f.id)
  if n2 then
    redis.call('HSET', key, 's', state, 'lo', '', 'lt', '', 'ld', '', n1, v1, n2, v2)
  elseif n1 then
    redis.call('HSET', key, 's', state, 'lo', '', 'lt', '', 'ld', '', n1, v1)
  else
    redis.call('HSET', key, 's', state, 'lo', '', 'lt', '', 'ld', '')
  end
  f.s, f.lo, f.lt, f.ld = state, false, false, false
  index_ready(f.id, f.q, f.p, f.sq, f.e, f.x)
end

local function error_info(kind, message) return cmsgpack.pack({type = kind, message = message}) end

-- The error of a task cancelled because its direct parent ended in `state`: the type,
-- module and text of omniq.lifecycle.dependency_failure().
local function dependency_failure(parent, state)
  return cmsgpack.pack({type = 'DependencyFailedError', module = 'omniq.errors',
                        message = "parent task '" .. parent .. "' ended " .. state})
end

local function finish(f, state, err)
  if f.s == 'running' then
    zrem(RUNNING_KEY, f.id)
  elseif f.s then
    zrem(qkey(f.q, 'ready'), f.id)
    zrem(qkey(f.q, 'delayed'), f.id)
  end
  if f.x then zrem(TTL_KEY, f.id) end
  set_state(f, state)
  -- one HSET of what changes, in the hash and in f (the lease, if any, is cleared)
  local key, fa = f.key or tkey(f.id), num(NOW)
  if f.lt then
    if err then
      redis.call('HSET', key, 's', state, 'fa', fa, 'lo', '', 'lt', '', 'ld', '', 'er', err)
    else
      redis.call('HSET', key, 's', state, 'fa', fa, 'lo', '', 'lt', '', 'ld', '')
    end
    f.lo, f.lt, f.ld = false, false, false
  elseif err then
    redis.call('HSET', key, 's', state, 'fa', fa, 'er', err)
  else
    redis.call('HSET', key, 's', state, 'fa', fa)
  end
  f.s, f.fa = state, fa
  if err then f.er = err end
  local keep = f.rt
  if state == 'dead' then keep = f.dt end
  zadd(DONE_KEY, done_at(keep), f.id)
end

-- One parent of a waiting dependent is done with (succeeded, or ended however for a
-- dependent that runs on failure): ready once none is left (w counts them).
local function parent_done(c)
  if redis.call('HINCRBY', tkey(c.id), 'w', -1) <= 0 then
    if c.e and c.e > NOW then to_ready(c, 'scheduled') else to_ready(c, 'pending') end
  end
end

-- Cancel the waiting dependents of a task that ended without success, recursively; one
-- that runs on failure (field rf, read on this path only) is released instead. `err`,
-- if given, is the error of the direct dependents (a purge's), else dependency_failure;
-- `out`, if given, gathers the ids cancelled.
local function cancel_dependents(f, state, err, out)
  local stack = {{f.id, state, f.hd, err}}
  while #stack > 0 do
    local top = table.remove(stack)
    if top[3] then
      local dkey = P .. ':deps:' .. top[1]
      for _, child in ipairs(redis.call('SMEMBERS', dkey)) do
        local c = load(child)
        if c and c.s == 'waiting' then
          if redis.call('HGET', tkey(child), 'rf') then
            parent_done(c)
          else
            finish(c, 'cancelled', top[4] or dependency_failure(top[1], top[2]))
            if out then out[#out + 1] = c end
            table.insert(stack, {child, 'cancelled', c.hd})
          end
        end
      end
    end
  end
end

-- A parent succeeded: each waiting dependent whose parents all succeeded becomes ready.
local function release_dependents(f)
  if not f.hd then return end
  local dkey = P .. ':deps:' .. f.id
  for _, child in ipairs(redis.call('SMEMBERS', dkey)) do
    local c = load(child)
    if c and c.s == 'waiting' then parent_done(c) end
  end
end

-- End a task in a terminal state, with what that means for its dependents.
local function conclude(f, state, err)
  finish(f, state, err)
  if state == 'succeeded' then release_dependents(f) else cancel_dependents(f, state) end
end

local function held(f, token) return f ~= nil and f.s == 'running' and f.lt == token end
