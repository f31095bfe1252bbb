-- ARGV: P, then a msgpack array of columns {n, ids, lengths of the encoded tasks, queues,
-- priorities, etas, expires_ats, delivery limits, result ttls, dead ttls, created_ats,
-- lists of parent ids}, then the encoded tasks end to end (cmsgpack has no binary type).
-- A column is one value that every task shares (a bulk's tasks share most) or an array
-- with one value per task; nil is none, and the parents column is nil when no task has
-- any. One unpack of a few arrays instead of a dozen arguments (or a table) per task.
-- Returns msgpack {now, per task: state (new, no error) | {state, error} (new, cancelled)
-- | row (existed already)}; a new task's created_at is its own, or now when it gave 0.
local C = cmsgpack.unpack(ARGV[2])
-- A column as (the value every task shares, nil) or (nil, the array of values), read
-- per task as `one or many[j]` (no call per field; eta and expiry may be nil in both).
local function split(column)
  if type(column) == 'table' then return nil, column end
  return column, nil
end
local n, parents = C[1], C[12]
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
-- The encoded tasks end to end, from ARGV[3] on (cut between items every 64 MB or
-- so: Redis refuses a larger argument).
local blob_at, blob, blob_pos = 3, ARGV[3], 1
local function next_body(len)
  if blob_pos > #blob then blob_at, blob_pos = blob_at + 1, 1; blob = ARGV[blob_at] end
  local body = string.sub(blob, blob_pos, blob_pos + len - 1)
  blob_pos = blob_pos + len
  return body
end
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
      if redis.call('HGET', k, 'm') ~= MARK then
        error({err = 'OMNIQ_FOREIGN ' .. k .. ' is a hash without the OmniQ marker'})
      end
      existed[id] = true
    end
  end
  check_queue(q1 or qs[j])
  if not exists and not in_batch[id] then
    for _, dep in ipairs(parents_of(j)) do
      if not in_batch[dep] and redis.pcall('HGET', tkey(dep), 'm') ~= MARK then
        error({err = 'OMNIQ_NOTFOUND ' .. dep})
      end
    end
  end
  in_batch[id] = true
end

-- Pass 2: store, deciding each state from the parents and the eta.
local seq = redis.call('INCRBY', P .. ':seq', n) - n
local out = {}
local touched = {}  -- queues that got a task
local replies = {}  -- state -> its msgpack string, made once
for j = 1, n do
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
    local f = {id = id, q = q, sq = seq, sqs = sq, p = p, e = e, x = x, rt = rt, dt = dt}
    local failed, waiting = nil, NONE
    if #deps > 0 then
      waiting = {}
      for _, dep in ipairs(deps) do
        local ds = redis.call('HGET', tkey(dep), 's')
        if ds ~= 'succeeded' then
          if TERMINAL[ds] then failed = failed or {dep, ds} else waiting[#waiting + 1] = dep end
        end
      end
    end
    local state = 'pending'
    if failed then state = 'cancelled'
    elseif #waiting > 0 then state = 'waiting'
    elseif e and e > NOW then state = 'scheduled' end
    -- (no attempts yet, and an eta, expiry or parents only when given: each field less
    -- is an argument less to convert and store, per task)
    if e or x or #waiting > 0 then
      redis.call('HSET', k, 'm', MARK, 'd', body, 'c', num(c), 'q', q, 'p', num(p), 'sq', sq,
                 'md', num(md1 or mds[j]), 'rt', num(rt), 'dt', num(dt), 'e', e and num(e) or '',
                 'x', x and num(x) or '', 'w', int(#waiting), 's', state)
    else
      redis.call('HSET', k, 'm', MARK, 'd', body, 'c', num(c), 'q', q, 'p', num(p), 'sq', sq,
                 'md', num(md1 or mds[j]), 'rt', num(rt), 'dt', num(dt), 's', state)
    end
    if failed then
      local err = error_info('DependencyError', 'dependency ' .. failed[1] .. ' ended ' .. failed[2])
      finish(f, 'cancelled', err)
      out[j] = mp_array(2) .. mp_bin(state) .. mp_bin(err)
    else
      if state == 'waiting' then
        for _, dep in ipairs(waiting) do
          redis.call('SADD', P .. ':deps:' .. dep, id)
          redis.call('HSET', tkey(dep), 'hd', 1)
        end
        set_state(f, 'waiting')
        if x then zadd(TTL_KEY, fmt(x), id) end
      else
        set_state(f, state)
        index_ready(f)
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
return mp_array(2) .. mp_bin(num(NOW)) .. rows(out)
