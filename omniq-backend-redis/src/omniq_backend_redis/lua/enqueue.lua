-- ARGV: P, a msgpack array with per task {id, length of its encoded task, queue,
-- priority, eta, expires_at, delivery limit, result ttl, dead ttl, created_at, {parent
-- ids}} (nil for none), and the encoded tasks end to end (cmsgpack has no binary type).
-- Two blobs instead of a dozen arguments per task: Redis and the client each handle a
-- few bulk strings, and cmsgpack.unpack builds the tables in C.
-- Returns msgpack {now, per task: state (new, no error) | {state, error} (new, cancelled)
-- | row (existed already)}; a new task's created_at is its own, or now when it gave 0.
local items = cmsgpack.unpack(ARGV[2])
local bodies = ARGV[3]
local keys = {}
for j, it in ipairs(items) do keys[j] = tkey(it[1]) end

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
for j, it in ipairs(items) do
  local id, k = it[1], keys[j]
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
  local q = it[3]
  if not checked[q] then
    for _, what in ipairs({'ready', 'delayed', 's:pending', 's:waiting', 's:scheduled'}) do
      check(qkey(q, what), 'zset')
    end
    checked[q] = true
  end
  if not exists and not in_batch[id] then
    for _, dep in ipairs(it[11]) do
      if not in_batch[dep] and redis.pcall('HGET', tkey(dep), 'm') ~= MARK then
        error({err = 'OMNIQ_NOTFOUND ' .. dep})
      end
    end
  end
  in_batch[id] = true
end

-- Pass 2: store, deciding each state from the parents and the eta.
local seq = redis.call('INCRBY', P .. ':seq', #items) - #items
local out = {}
local queues = {}
local replies = {}  -- state -> its msgpack string, made once
local NONE = {}
local pos = 1
for j, it in ipairs(items) do
  local id, k = it[1], keys[j]
  local body = string.sub(bodies, pos, pos + it[2] - 1)
  pos = pos + it[2]
  if existed[id] then
    out[j] = row(load(id))
  else
    existed[id] = true  -- a repeat later in the batch answers with this one
    seq = seq + 1
    local q, c, e, x, deps = it[3], it[10], it[5], it[6], it[11]
    if c == 0 then c = NOW end
    local sq = int(seq)
    local f = {id = id, q = q, sq = seq, sqs = sq, p = it[4], e = e, x = x, rt = it[8], dt = it[9]}
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
    redis.call('HSET', k, 'm', MARK, 'd', body, 'c', num(c), 'q', q, 'p', num(it[4]), 'sq', sq,
               'a', '0', 'md', num(it[7]), 'rt', num(it[8]), 'dt', num(it[9]), 'e', e and num(e) or '',
               'x', x and num(x) or '', 'w', int(#waiting), 's', state)
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
    queues[q] = true
  end
end
for q, _ in pairs(queues) do redis.call('SADD', P .. ':queues', q) end
commit()
return mp_array(2) .. mp_bin(num(NOW)) .. rows(out)
