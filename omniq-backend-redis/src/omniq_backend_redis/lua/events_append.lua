-- ARGV: P, MAXLEN cap ('' for none), per-task index ttl ms, a msgpack array of columns
-- {n, timestamps ms, exact timestamps (strings), task ids, queues, types, lengths of the
-- encoded TaskEvents, guard}, each one value every event shares or an array with one per
-- event, then the encoded TaskEvents end to end (cmsgpack has no binary type).
-- The guard is nil, or {task key prefix, marker, states, created_ats}: then an event is
-- written only if its task's hash (<prefix>:t:<task id>) holds that marker, state and
-- created_at and the event's queue, i.e. the task was stored as the event says.
-- Returns the positions (1-based) of the events the guard held back.
-- Entry ids follow event time (<ms>-*) but must grow, so an event older than the
-- stream's last entry gets that entry's ms; P:ev:late keeps the largest such lag, which
-- query() and cleanup() widen their id ranges by.
local P, cap, ttl = ARGV[1], ARGV[2], ARGV[3]
local C = cmsgpack.unpack(ARGV[4])
-- The encoded events end to end, from ARGV[5] on (cut between items every 64 MB or
-- so: Redis refuses a larger argument).
local blob_at, blob, blob_pos = 5, ARGV[5], 1
local function next_body(len)
  if blob_pos > #blob then blob_at, blob_pos = blob_at + 1, 1; blob = ARGV[blob_at] end
  local body = string.sub(blob, blob_pos, blob_pos + len - 1)
  blob_pos = blob_pos + len
  return body
end
-- A column as (the value every event shares, nil) or (nil, the array of values), read
-- per event as `one or many[j]`.
local function split(column)
  if type(column) == 'table' then return nil, column end
  return column, nil
end
local ms1, mss = split(C[2])
local ts1, tss = split(C[3])
local t1, ts = split(C[4])
local q1, qs = split(C[5])
local y1, ys = split(C[6])
local len1, lens = split(C[7])
local stream, late_key = P .. ':ev', P .. ':ev:late'
local guard = C[8]
local g_prefix, g_state1, g_states, g_created1, g_createds
local g_mark
if guard then
  g_prefix, g_mark = guard[1] .. ':t:', guard[2]
  g_state1, g_states = split(guard[3])
  g_created1, g_createds = split(guard[4])
end
local function stored_as_said(j, task_id, q)
  local v = redis.call('HMGET', g_prefix .. task_id, 'm', 's', 'c', 'q')
  local created = g_created1 or g_createds[j]
  return v[1] == g_mark and v[2] == (g_state1 or g_states[j]) and v[4] == q
    and v[3] == string.format('%.17g', created)
end
local held = {}
local last = 0
local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)')) end
local late = tonumber(redis.call('GET', late_key) or '0')
local late_before = late
local id_ms, id_pattern = nil, nil  -- the '<ms>-*' of the last event, made once per ms
for j = 1, C[1] do
  local ms, task_id, len = ms1 or mss[j], t1 or ts[j], len1 or lens[j]
  local body = next_body(len)
  local q = q1 or qs[j]
  if guard and not stored_as_said(j, task_id, q) then
    held[#held + 1] = j
  else
    if ms < last then
      late = math.max(late, last - ms)
      ms = last
    end
    if ms ~= id_ms then id_ms, id_pattern = ms, string.format('%d-*', ms) end
    local stamp, y = ts1 or tss[j], y1 or ys[j]
    local id
    if cap == '' then
      id = redis.call('XADD', stream, id_pattern, 'ts', stamp, 't', task_id, 'q', q, 'y', y, 'e', body)
    else
      id = redis.call('XADD', stream, 'MAXLEN', '~', cap, id_pattern,
                      'ts', stamp, 't', task_id, 'q', q, 'y', y, 'e', body)
    end
    last = ms
    local index = P .. ':ev:t:' .. task_id
    redis.call('RPUSH', index, id)
    redis.call('PEXPIRE', index, ttl)
  end
end
if late > late_before then redis.call('SET', late_key, string.format('%d', late)) end
return held
