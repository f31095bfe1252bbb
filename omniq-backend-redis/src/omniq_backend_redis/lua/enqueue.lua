-- ARGV: P, n, then per task: id, encoded task, queue, priority, eta, expires_at,
-- delivery limit, result ttl, dead ttl, created_at, number of parents, parent ids...
-- Returns msgpack: per task ['new', created_at, state, error] or ['old', row].
local items = {}
local i = 3
for j = 1, tonumber(ARGV[2]) do
  local nd = tonumber(ARGV[i + 10])
  local it = {id = ARGV[i], d = ARGV[i + 1], q = ARGV[i + 2], p = ARGV[i + 3], e = ARGV[i + 4],
              x = ARGV[i + 5], md = ARGV[i + 6], rt = ARGV[i + 7], dt = ARGV[i + 8], c = ARGV[i + 9],
              deps = {}}
  for k = 1, nd do it.deps[k] = ARGV[i + 10 + k] end
  i = i + 11 + nd
  items[j] = it
end

-- Pass 1: refuse foreign keys and unknown parents before writing anything.
local function check(key, want)
  local ty = redis.call('TYPE', key)['ok']
  if ty ~= 'none' and ty ~= want then error({err = 'OMNIQ_FOREIGN ' .. key .. ' holds a ' .. ty}) end
  return ty ~= 'none'
end
local in_batch, checked = {}, {}
for _, it in ipairs(items) do
  local k = tkey(it.id)
  local exists = check(k, 'hash')
  if exists and redis.call('HGET', k, 'm') ~= MARK then
    error({err = 'OMNIQ_FOREIGN ' .. k .. ' is a hash without the OmniQ marker'})
  end
  if not checked[it.q] then
    for _, what in ipairs({'ready', 'delayed', 's:pending', 's:waiting', 's:scheduled'}) do
      check(qkey(it.q, what), 'zset')
    end
    checked[it.q] = true
  end
  if not exists and not in_batch[it.id] then
    for _, dep in ipairs(it.deps) do
      if not in_batch[dep] and redis.pcall('HGET', tkey(dep), 'm') ~= MARK then
        error({err = 'OMNIQ_NOTFOUND ' .. dep})
      end
    end
  end
  in_batch[it.id] = true
end

-- Pass 2: store, deciding each state from the parents and the eta.
local seq = redis.call('INCRBY', P .. ':seq', #items) - #items
local out = {}
local queues = {}
for j, it in ipairs(items) do
  local k = tkey(it.id)
  if redis.call('EXISTS', k) == 1 then
    out[j] = mp_array(2) .. mp_bin('old') .. row(load(it.id))
  else
    seq = seq + 1
    local c = it.c
    if tonumber(c) == 0 then c = fmt(NOW) end
    local f = {id = it.id, q = it.q, sq = seq, p = tonumber(it.p), e = tonumber(it.e), x = tonumber(it.x),
               rt = tonumber(it.rt), dt = tonumber(it.dt)}
    local failed, waiting = nil, {}
    for _, dep in ipairs(it.deps) do
      local ds = redis.call('HGET', tkey(dep), 's')
      if ds ~= 'succeeded' then
        if TERMINAL[ds] then failed = failed or {dep, ds} else waiting[#waiting + 1] = dep end
      end
    end
    local state = 'pending'
    if failed then state = 'cancelled'
    elseif #waiting > 0 then state = 'waiting'
    elseif f.e and f.e > NOW then state = 'scheduled' end
    redis.call('HSET', k, 'm', MARK, 'd', it.d, 'c', c, 'q', it.q, 'p', it.p, 'sq', seq, 'a', 0,
               'md', it.md, 'rt', it.rt, 'dt', it.dt, 'e', it.e, 'x', it.x, 'w', #waiting, 's', state)
    local err = false
    if failed then
      err = error_info('DependencyError', 'dependency ' .. failed[1] .. ' ended ' .. failed[2])
      finish(f, 'cancelled', err)
    elseif state == 'waiting' then
      for _, dep in ipairs(waiting) do
        redis.call('SADD', P .. ':deps:' .. dep, it.id)
        redis.call('HSET', tkey(dep), 'hd', 1)
      end
      set_state(f, 'waiting')
      if f.x then zadd(TTL_KEY, fmt(f.x), f.id) end
    else
      set_state(f, state)
      index_ready(f)
    end
    queues[it.q] = true
    out[j] = mp_array(4) .. mp_bin('new') .. mp_bin(c) .. mp_bin(state) .. mp_bin(err)
  end
end
for q, _ in pairs(queues) do redis.call('SADD', P .. ':queues', q) end
commit()
return rows(out)
