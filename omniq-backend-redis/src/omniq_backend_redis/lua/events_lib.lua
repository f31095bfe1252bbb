-- Appending events to the stream, shared by events_append.lua (append_many) and
-- enqueue.lua (tasks and their events in one script); counting and trimming them, shared
-- with events_cleanup.lua.
-- events_batch(o) reads the arguments of an append from ARGV[o] on: P, cap in events
-- ('' for none), per-task index ttl ms, index bucket width ms, a msgpack array of columns
-- {n, timestamps ms, exact timestamps (strings), task ids, queues, types, lengths of the
-- encoded TaskEvents}, each one value every event shares or an array with one per
-- event, then the encoded TaskEvents end to end (see batch.lua); it refuses a foreign
-- key before anything is written (enqueue.lua calls it before storing its tasks).
-- append_events(A, keep, task_id1, task_ids, distinct) writes the batch A. keep(j), if
-- given, says whether to write event j. A nil task-id column means the ids are the
-- caller's (task_id1 or task_ids[j]), as when enqueue.lua writes its own tasks' events;
-- `distinct` says no two events written have the same task. Returns the positions
-- (1-based) of the events held back.
-- An entry holds a group: consecutive events with the same timestamp, queue and type (a
-- bulk enqueue's, up to GROUP_MAX), as fields ts (exact timestamp), q, y and e (a msgpack
-- array of the encoded events). One XADD per group instead of one per event: the add is
-- what costs, not the bytes.
-- Entry ids follow event time (<ms>-*) but must grow, so an event older than the
-- stream's last entry gets that entry's ms; P:ev:late keeps the largest such lag, which
-- query() and cleanup() widen their id ranges by.
-- P:ev:n counts the events in the stream, for the cap; sorted set P:ev:g lists the
-- groups (member '<entry id> <events>', score the id's ms), so that what a trim dropped is
-- counted without reading it.
-- The per-task index: hash P:ev:tx:<b> (b = entry ms // bucket width) maps a task id to
-- its entry ids in that bucket, space-separated; sorted set P:ev:tx lists the buckets
-- (score b). A bucket whose newest possible entry is older than the ttl is UNLINKed (freed
-- off the main thread). One HMGET and one HSET per bucket and call, not a key per task.
local GROUP_MAX = 500

-- The keys of the event storage with prefix P.
local function event_keys(P)
  return {stream = P .. ':ev', late = P .. ':ev:late', count = P .. ':ev:n', groups = P .. ':ev:g',
          buckets = P .. ':ev:tx'}
end

-- How many events an entry's e holds (the length of the msgpack array).
local function events_in(e)
  local b = string.byte(e, 1)
  if b == 0xdc then return (struct.unpack('>I2', e, 2)) end
  if b == 0xdd then return (struct.unpack('>I4', e, 2)) end
  return b - 0x90
end

local function entry_field(entry, name)
  local flat = entry[2]
  for i = 1, #flat, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
end

local function id_before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  return am < bm or (am == bm and tonumber(as) < tonumber(bs))
end

-- After entries were dropped from the head: forget the groups before the stream's first
-- entry now, and return their events beyond the one each entry counts for.
local function forget_dropped_groups(K)
  local first = redis.call('XRANGE', K.stream, '-', '+', 'COUNT', 1)
  local head = first[1] and first[1][1]
  local gone, extra = {}, 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', K.groups, '-inf', head and string.match(head, '^%d+') or '+inf')) do
    local id, k = string.match(member, '^(%S+) (%d+)$')
    if not head or id_before(id, head) then
      gone[#gone + 1] = member
      extra = extra + tonumber(k) - 1
    end
  end
  for i = 1, #gone, 1000 do redis.call('ZREM', K.groups, unpack(gone, i, math.min(i + 999, #gone))) end
  return extra
end

-- Free the index buckets up to `last_stale` (UNLINK: off Redis' main thread).
local function drop_buckets(K, last_stale)
  local buckets = redis.call('ZRANGEBYSCORE', K.buckets, '-inf', last_stale)
  for _, b in ipairs(buckets) do redis.call('UNLINK', K.buckets .. ':' .. b) end
  if #buckets > 0 then redis.call('ZREMRANGEBYSCORE', K.buckets, '-inf', last_stale) end
end

-- `over` events over the cap: drop as many of the oldest entries, whole stream nodes at
-- a time (MAXLEN ~, so often none yet); a group among them takes all its events along.
local function trim(K, over)
  local keep = math.max(redis.call('XLEN', K.stream) - over, 0)
  local entries = redis.call('XTRIM', K.stream, 'MAXLEN', '~', keep)
  if entries > 0 then redis.call('DECRBY', K.count, entries + forget_dropped_groups(K)) end
end

local function number_at(key)
  local value = redis.call('GET', key)
  if value and not tonumber(value) then
    error({err = 'OMNIQ_FOREIGN ' .. key .. ' holds a string that is not a number'})
  end
  return tonumber(value or '0')
end

local function events_batch(o)
  local A = {o = o, cap = ARGV[o + 1], ttl = tonumber(ARGV[o + 2]), width = tonumber(ARGV[o + 3]),
             C = cmsgpack.unpack(ARGV[o + 4]), K = event_keys(ARGV[o])}
  local K = A.K
  A.last = 0
  local top = redis.call('XREVRANGE', K.stream, '+', '-', 'COUNT', 1)
  if #top > 0 then A.last = tonumber(string.match(top[1][1], '^(%d+)')) end
  A.empty = #top == 0
  -- A foreign bucket key (an event's entry ms is its own or the newest before it, so the
  -- buckets follow the running maximum).
  local C = A.C
  local ms1, mss = split(C[2])
  local newest, prev = A.last, nil
  for j = 1, ms1 and 1 or C[1] do
    newest = math.max(newest, ms1 or mss[j])
    local b = math.floor(newest / A.width)
    if b ~= prev then
      local key = K.buckets .. ':' .. b
      local ty = redis.call('TYPE', key)['ok']
      if ty ~= 'none' and ty ~= 'hash' then error({err = 'OMNIQ_FOREIGN ' .. key .. ' holds a ' .. ty}) end
      prev = b
    end
  end
  A.late = number_at(K.late)
  number_at(K.count)
  redis.call('ZCARD', K.groups)  -- (WRONGTYPE if foreign)
  return A
end

local function append_events(A, keep, task_id1, task_ids, distinct)
  local o, cap, ttl, width, C, K = A.o, A.cap, A.ttl, A.width, A.C, A.K
  local next_body = items_from(o + 5)
  local ms1, mss = split(C[2])
  local ts1, tss = split(C[3])
  local t1, ts = split(C[4])
  if C[4] == nil then t1, ts = task_id1, task_ids end
  local q1, qs = split(C[5])
  local y1, ys = split(C[6])
  local len1, lens = split(C[7])
  local stream, buckets_key = K.stream, K.buckets
  -- The bucket being filled: task ids in first-seen order, and their entry ids; `at`
  -- finds a task seen before in this call, unless the caller's ids are distinct.
  local bucket, order, ids, at = nil, {}, {}, {}
  local function flush()
    if #order == 0 then return end
    local key = buckets_key .. ':' .. bucket
    for i = 1, #order, 2000 do
      local hi = math.min(i + 1999, #order)
      local old = redis.call('HMGET', key, unpack(order, i, hi))
      local args, a = {}, 0
      for k = i, hi do
        local prev = old[k - i + 1]
        args[a + 1] = order[k]
        args[a + 2] = prev and (prev .. ' ' .. ids[k]) or ids[k]
        a = a + 2
      end
      redis.call('HSET', key, unpack(args))
    end
    redis.call('ZADD', buckets_key, bucket, bucket)
    order, ids, at = {}, {}, {}
  end
  local function index(ms, task_id, id)
    local b = math.floor(ms / width)
    if b ~= bucket then flush(); bucket = b end
    local k = not distinct and at[task_id]
    if k then
      -- (a task with two events in one group is indexed once for it)
      if ids[k] ~= id and string.sub(ids[k], -#id - 1) ~= ' ' .. id then ids[k] = ids[k] .. ' ' .. id end
    else
      k = #order + 1
      order[k], ids[k] = task_id, id
      if not distinct then at[task_id] = k end
    end
  end
  -- An empty stream holds no events, whatever a count left from a stream deleted behind
  -- our back says (obeyed, it would trim away every event appended from now on).
  if A.empty then redis.call('DEL', K.count, K.groups) end
  local held = {}
  local last, late = A.last, A.late
  local late_before = late
  local added = 0
  -- The group being gathered: its entry ms, shared fields, bodies and task ids.
  local g_ms, g_stamp, g_q, g_y, bodies, tasks = nil, nil, nil, nil, {}, {}
  local function add_group(whole)
    if #tasks == 0 then return end
    local e = mp_array(#tasks) .. (whole or table.concat(bodies))
    local id = redis.call('XADD', stream, string.format('%d-*', g_ms), 'ts', g_stamp, 'q', g_q, 'y', g_y, 'e', e)
    if #tasks > 1 then redis.call('ZADD', K.groups, g_ms, id .. ' ' .. #tasks) end
    for _, task_id in ipairs(tasks) do index(g_ms, task_id, id) end
    added = added + #tasks
    bodies, tasks = {}, {}
  end
  if not keep and ms1 and ts1 and q1 and y1 and C[1] <= GROUP_MAX and ARGV[o + 6] == nil then
    -- One group of every event (a bulk enqueue's batch): its bodies are the whole blob.
    if ms1 < last then late = math.max(late, last - ms1) end
    g_ms, g_stamp, g_q, g_y = math.max(ms1, last), ts1, q1, y1
    for j = 1, C[1] do tasks[j] = t1 or ts[j] end
    last = g_ms
    add_group(ARGV[o + 5])
  else
    for j = 1, C[1] do
      local ms, body = ms1 or mss[j], next_body(len1 or lens[j])
      if keep and not keep(j) then
        held[#held + 1] = j
      else
        if ms < last then
          late = math.max(late, last - ms)
          ms = last
        end
        last = ms
        local stamp, q, y = ts1 or tss[j], q1 or qs[j], y1 or ys[j]
        if ms ~= g_ms or stamp ~= g_stamp or q ~= g_q or y ~= g_y or #tasks == GROUP_MAX then
          add_group()
          g_ms, g_stamp, g_q, g_y = ms, stamp, q, y
        end
        bodies[#bodies + 1] = body
        tasks[#tasks + 1] = t1 or ts[j]
      end
    end
    add_group()
  end
  flush()
  if added > 0 then
    local count = redis.call('INCRBY', K.count, added)
    if cap ~= '' and count > tonumber(cap) then trim(K, count - tonumber(cap)) end
  end
  -- Drop the buckets whose every entry is older than the ttl.
  local stale = math.floor((last - ttl) / width) - 1
  if stale >= 0 then drop_buckets(K, stale) end
  if late > late_before then redis.call('SET', K.late, string.format('%d', late)) end
  return held
end
