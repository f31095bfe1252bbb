-- Appending events to the stream, shared by events_append.lua (append_many) and
-- enqueue.lua (tasks and their events in one script).
-- append_events(o, keep, task_id1, task_ids, distinct) reads its arguments from ARGV[o]
-- on: P, MAXLEN cap ('' for none), per-task index ttl ms, index bucket width ms, a
-- msgpack array of columns {n, timestamps ms, exact timestamps (strings), task ids,
-- queues, types, lengths of the encoded TaskEvents}, each one value every event shares
-- or an array with one per event, then the encoded TaskEvents end to end (see
-- batch.lua). keep(j), if given, says whether to write event j. A nil task-id column
-- means the ids are the caller's (task_id1 or task_ids[j]), as when enqueue.lua writes
-- its own tasks' events; `distinct` says no two events written have the same task.
-- Returns the positions (1-based) of the events held back.
-- Entry ids follow event time (<ms>-*) but must grow, so an event older than the
-- stream's last entry gets that entry's ms; P:ev:late keeps the largest such lag, which
-- query() and cleanup() widen their id ranges by.
-- The per-task index: hash P:ev:tx:<b> (b = entry ms // bucket width) maps a task id to
-- its entry ids in that bucket, space-separated; sorted set P:ev:tx lists the buckets
-- (score b). A bucket whose newest possible entry is older than the ttl is UNLINKed (freed
-- off the main thread). One HMGET and one HSET per bucket and call, not a key per task.
local function append_events(o, keep, task_id1, task_ids, distinct)
  local P, cap, ttl, width = ARGV[o], ARGV[o + 1], tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3])
  local C = cmsgpack.unpack(ARGV[o + 4])
  local next_body = items_from(o + 5)
  local ms1, mss = split(C[2])
  local ts1, tss = split(C[3])
  local t1, ts = split(C[4])
  if C[4] == nil then t1, ts = task_id1, task_ids end
  local q1, qs = split(C[5])
  local y1, ys = split(C[6])
  local len1, lens = split(C[7])
  local stream, late_key = P .. ':ev', P .. ':ev:late'
  local buckets_key = P .. ':ev:tx'
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
      ids[k] = ids[k] .. ' ' .. id
    else
      k = #order + 1
      order[k], ids[k] = task_id, id
      if not distinct then at[task_id] = k end
    end
  end
  local held = {}
  local last = 0
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)')) end
  -- Refuse a foreign bucket key before writing anything (an event's entry ms is its own
  -- or the newest before it, so the buckets follow the running maximum).
  do
    local newest, prev = last, nil
    for j = 1, ms1 and 1 or C[1] do
      newest = math.max(newest, ms1 or mss[j])
      local b = math.floor(newest / width)
      if b ~= prev then
        local key = buckets_key .. ':' .. b
        local ty = redis.call('TYPE', key)['ok']
        if ty ~= 'none' and ty ~= 'hash' then error({err = 'OMNIQ_FOREIGN ' .. key .. ' holds a ' .. ty}) end
        prev = b
      end
    end
  end
  local late = tonumber(redis.call('GET', late_key) or '0')
  local late_before = late
  local id_ms, id_pattern = nil, nil  -- the '<ms>-*' of the last event, made once per ms
  for j = 1, C[1] do
    local ms, task_id, len = ms1 or mss[j], t1 or ts[j], len1 or lens[j]
    local body = next_body(len)
    local q = q1 or qs[j]
    if keep and not keep(j) then
      held[#held + 1] = j
    else
      if ms < last then
        late = math.max(late, last - ms)
        ms = last
      end
      if ms ~= id_ms then id_ms, id_pattern = ms, string.format('%d-*', ms) end
      local stamp, y = ts1 or tss[j], y1 or ys[j]
      local id = redis.call('XADD', stream, id_pattern, 'ts', stamp, 't', task_id, 'q', q, 'y', y, 'e', body)
      last = ms
      index(ms, task_id, id)
    end
  end
  flush()
  -- (one trim per call, not a MAXLEN per entry: the same approximate cap, fewer arguments)
  if cap ~= '' then redis.call('XTRIM', stream, 'MAXLEN', '~', cap) end
  -- Drop the buckets whose every entry is older than the ttl.
  local stale = math.floor((last - ttl) / width) - 1
  if stale >= 0 then
    for _, b in ipairs(redis.call('ZRANGEBYSCORE', buckets_key, '-inf', stale)) do
      redis.call('UNLINK', buckets_key .. ':' .. b)
    end
    redis.call('ZREMRANGEBYSCORE', buckets_key, '-inf', stale)
  end
  if late > late_before then redis.call('SET', late_key, string.format('%d', late)) end
  return held
end
