-- ARGV: P, then a msgpack array of columns {n, ids, lengths of the encoded tasks, queues,
-- priorities, etas, expires_ats, delivery limits, result ttls, dead ttls, created_ats,
-- lists of parent ids, number of task blob arguments, chain, expected states, whether
-- the ids are distinct, whether each task runs on a parent's failure (nil: none does)}, then the encoded tasks end to end (see batch.lua), then, when
-- expected states are given, the tasks' events as events_lib.lua reads them.
-- A column is one value that every task shares (a bulk's tasks share most) or an array
-- with one value per task; nil is none, and the parents column is nil when no task has
-- any. One unpack of a few arrays instead of a dozen arguments (or a table) per task.
-- The chain ({key, k} or nil) orders the batches of one enqueue sent back to back: batch
-- k > 1 runs only if the key says batch k - 1 ran, so a refused or failed batch stops
-- the ones after it and what is stored is always a prefix.
-- Event j is written if task j is new and stored in expected state j (what the client
-- encoded in it); the others are held back, for the client to send as stored.
-- Returns msgpack {now, per task: state (new, no error) | {state, error} (new, cancelled)
-- | row (existed already), positions of the held events}; a new task's created_at is its
-- own, or now when it gave 0.
local C = cmsgpack.unpack(ARGV[2])
local n, parents, chain, expected, run_flags = C[1], C[12], C[14], C[15], C[17]
if chain and chain[2] > 1 and redis.call('GET', chain[1]) ~= int(chain[2] - 1) then
  error({err = 'OMNIQ_ABORTED'})
end
local id1, ids = split(C[2])
local len1, lens = split(C[3])
local q1, qs = split(C[4])
local p1, ps = split(C[5])
local e1, es = split(C[6])
local x1, xs = split(C[7])
local md1, mds = split(C[8])
local rt1, rts = split(C[9])
local dt1, dts = split(C[10])
local c1, cs = split(C[11])
local next_body = items_from(3)
local NONE = {}
local function parents_of(j) return parents and parents[j] or NONE end
local keys = {}
for j = 1, n do keys[j] = tkey(id1 or ids[j]) end

-- Pass 1: refuse foreign keys and unknown parents before writing anything.
local function check(key, want)
  local ty = redis.call('TYPE', key)['ok']
  if ty ~= 'none' and ty ~= want then error({err = 'OMNIQ_FOREIGN ' .. key .. ' holds a ' .. ty}) end
  return ty ~= 'none'
end
-- One EXISTS for the whole batch: when none of the keys exists (the usual case), no
-- task key needs a look of its own.
local any = 0
for i = 1, #keys, 4000 do any = any + redis.call('EXISTS', unpack(keys, i, math.min(i + 3999, #keys))) end
local in_batch, checked, existed = {}, {}, {}
local function check_queue(q)
  if not checked[q] then
    for _, what in ipairs({'ready', 'delayed', 's:pending', 's:waiting', 's:scheduled'}) do
      check(qkey(q, what), 'zset')
    end
    checked[q] = true
  end
end
-- A batch of new tasks without parents (the usual bulk) needs only its queues checked.
local plain = any == 0 and not parents
if plain then
  if q1 then check_queue(q1) else for j = 1, n do check_queue(qs[j]) end end
end
for j = 1, plain and 0 or n do
  local id, k = id1 or ids[j], keys[j]
  local exists = false
  if any > 0 then
    exists = check(k, 'hash')
    if exists then
      if not marked(redis.call('HGET', k, 'h')) then
        error({err = 'OMNIQ_FOREIGN ' .. k .. ' is a hash without the OmniQ marker'})
      end
      existed[id] = true
    end
  end
  check_queue(q1 or qs[j])
  if not exists and not in_batch[id] then
    for _, dep in ipairs(parents_of(j)) do
      if not in_batch[dep] and not marked(redis.pcall('HGET', tkey(dep), 'h')) then
        error({err = 'OMNIQ_NOTFOUND ' .. dep})
      end
    end
  end
  in_batch[id] = true
end

-- The events' keys are checked too, before anything is written.
local events = expected and events_batch(3 + C[13])

-- Pass 2: store, deciding each state from the parents and the eta. (The header every
-- task of a bulk shares, made once.)
local H = c1 and p1 and md1 and rt1 and dt1 and header(c1 == 0 and NOW or c1, p1, md1, rt1, dt1)
local seq = redis.call('INCRBY', P .. ':seq', n) - n
local out = {}
local stored_as = {}  -- j -> the state task j was stored in, when this call stored it
local touched = {}  -- queues that got a task
local replies = {}  -- state -> its msgpack string, made once
-- The usual bulk: new tasks with distinct ids (the client says so), one queue and one
-- header, no eta, expiry or parents. Each is pending, so it is stored without a decision
-- or a table entry of its own: the loop below does the same in general.
local usual = plain and C[16] and q1 and H and not (e1 or es or x1 or xs)
if usual then
  local by_seq, by_rank = ZADDS[qkey(q1, STATE_INDEX.pending)] or {}, ZADDS[qkey(q1, 'ready')] or {}
  ZADDS[qkey(q1, STATE_INDEX.pending)], ZADDS[qkey(q1, 'ready')] = by_seq, by_rank
  local pending = mp_bin('pending')
  local m = #by_seq
  for j = 1, n do
    local id = id1 or ids[j]
    seq = seq + 1
    local sq = int(seq)
    redis.call('HSET', keys[j], 'h', H, 'd', next_body(len1 or lens[j]), 'q', q1, 'sq', sq, 's', 'pending')
    by_seq[m + 1], by_seq[m + 2] = sq, id
    by_rank[m + 1], by_rank[m + 2] = ready_score(p1, seq), id
    m = m + 2
    stored_as[j] = 'pending'
    out[j] = pending
  end
  touched[q1], WAKE[q1] = true, true
end
for j = 1, usual and 0 or n do
  local id, k = id1 or ids[j], keys[j]
  local body = next_body(len1 or lens[j])
  if existed[id] then
    out[j] = row(load(id))
  else
    existed[id] = true  -- a repeat later in the batch answers with this one
    seq = seq + 1
    local q, p, e, x = q1 or qs[j], p1 or ps[j], e1 or (es and es[j]), x1 or (xs and xs[j])
    local rt, dt, c, deps = rt1 or rts[j], dt1 or dts[j], c1 or cs[j], parents_of(j)
    if c == 0 then c = NOW end
    local sq = int(seq)
    local failed, waiting = nil, NONE
    local rf = run_flags and run_flags[j]
    if #deps > 0 then
      waiting = {}
      for _, dep in ipairs(deps) do
        local ds = redis.call('HGET', tkey(dep), 's')
        if ds ~= 'succeeded' then
          if not TERMINAL[ds] then waiting[#waiting + 1] = dep
          elseif not rf then failed = failed or {dep, ds} end
        end
      end
    end
    local state = 'pending'
    if failed then state = 'cancelled'
    elseif #waiting > 0 then state = 'waiting'
    elseif e and e > NOW then state = 'scheduled' end
    stored_as[j] = state
    -- (no attempts yet, and an eta, expiry or parents only when given: each field less
    -- is two arguments less to convert and store, per task)
    if e or x or #waiting > 0 then
      redis.call('HSET', k, 'h', H or header(c, p, md1 or mds[j], rt, dt), 'd', body, 'q', q, 'sq', sq,
                 'e', e and num(e) or '', 'x', x and num(x) or '', 'w', int(#waiting), 's', state)
    else
      redis.call('HSET', k, 'h', H or header(c, p, md1 or mds[j], rt, dt), 'd', body, 'q', q, 'sq', sq,
                 's', state)
    end
    for _, dep in ipairs(deps) do  -- every child, waiting or not: dependents() lists it
      redis.call('SADD', P .. ':deps:' .. dep, id)
    end
    if failed then
      local f = {id = id, q = q, sq = seq, sqs = sq, p = p, e = e, x = x, rt = rt, dt = dt}
      local err = dependency_failure(failed[1], failed[2])
      finish(f, 'cancelled', err)
      out[j] = mp_array(2) .. mp_bin(state) .. mp_bin(err)
    else
      zadd(qkey(q, STATE_INDEX[state]), sq, id)  -- set_state() of a task that had none
      if state == 'waiting' then
        if rf then redis.call('HSET', k, 'rf', '1') end
        for _, dep in ipairs(waiting) do redis.call('HSET', tkey(dep), 'hd', 1) end
        if x then zadd(TTL_KEY, num(x), id) end
      else
        index_ready(id, q, p, seq, e, x)
      end
      local reply = replies[state]
      if not reply then reply = mp_bin(state); replies[state] = reply end
      out[j] = reply
    end
    touched[q] = true
  end
end
for q, _ in pairs(touched) do redis.call('SADD', P .. ':queues', q) end
commit()
local held = '\144'  -- msgpack: no positions
if expected then
  local want1, wants = split(expected)
  local keep = function(j) return stored_as[j] == (want1 or wants[j]) end
  if usual and want1 == 'pending' then keep = nil end  -- (every task was stored pending)
  -- (an event is written only for a task this call stored, which it does once per id)
  local positions = append_events(events, keep, id1, ids, true)
  if #positions > 0 then held = cmsgpack.pack(positions) end
end
if chain then redis.call('SET', chain[1], int(chain[2]), 'PX', 60000) end
return mp_array(3) .. mp_bin(num(NOW)) .. rows(out) .. held
