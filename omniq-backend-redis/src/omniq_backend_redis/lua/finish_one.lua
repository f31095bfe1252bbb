-- finish.lua for one task without dependents: its completion, its result and its own
-- events, in one atomic step, on keys.lua alone (no prelude, no events_lib: about half the
-- redis.calls and none of their set-up). It writes what finish.lua writes for such a task
-- and keeps its fencing: a task not held under the token (a late or stale finish) is
-- refused with nothing written, and a foreign result key is an error either way.
-- Whatever it does not take on goes back to the caller with nothing written, which then
-- runs finish.lua: a task with dependents, events in two index buckets, an event older
-- than the stream's last entry, no stream, a stream at its cap, a foreign event key.
-- As in enqueue_one.lua, the event checks are writes (INCRBY of the count, ZADD of the
-- bucket list, HGET of the bucket under pcall, XADD NOMKSTREAM with the entry's ms), taken
-- back by refuse(); the caller sends events in time order, so only the first XADD can be
-- late.
-- ARGV: P, id, token, state, encoded error ('' for none), result storage prefix, marked
-- result value ('' for none), its expiry as unix ms ('' for none), then the event
-- storage's prefix ('' when no events), cap ('' for none), index ttl ms, bucket width ms,
-- then per event: entry ms, exact timestamp, queue, type, encoded TaskEvent.
-- Returns 1 completed, 0 refused (the lease was lost), -1 not taken (nothing written).
local id, token, state, err, RP, value = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local rkey = RP .. ':r:' .. id
if value ~= '' then
  local ty = redis.call('TYPE', rkey)['ok']
  if ty ~= 'none' and (ty ~= 'string' or redis.call('GETRANGE', rkey, 0, 3) ~= 'OQR1') then
    error({err = 'OMNIQ_FOREIGN ' .. rkey .. ' holds a ' .. ty .. ' OmniQ did not write'})
  end
end
local k = tkey(id)
local v = redis.pcall('HMGET', k, 'h', 'q', 's', 'sq', 'x', 'lt', 'hd')
if v.err or not v[1] or string.sub(v[1], 1, 4) ~= 'OQT2' or v[3] ~= 'running'
    or v[6] ~= token then
  return 0
end
if v[7] and v[7] ~= '' then return -1 end
local q, sq = v[2], v[4]

local undo = {}
local function refuse()
  for i = #undo, 1, -1 do
    local u = undo[i]
    if u[1] == 'DECR' then
      if u[3] == u[4] then redis.call('DEL', u[2]) else redis.call('DECRBY', u[2], u[4]) end
    else
      redis.call('ZREM', u[2], u[3])
    end
  end
  return -1
end

local E, n = ARGV[9], (#ARGV - 12) / 5
local ms, b, bkey, buckets, new_bucket, old
if E ~= '' and n > 0 then
  local width = tonumber(ARGV[12])
  ms = tonumber(ARGV[13])
  b = int(math.floor(ms / width))
  if int(math.floor(tonumber(ARGV[8 + 5 * n]) / width)) ~= b then return -1 end
  local count = E .. ':ev:n'
  local c = redis.pcall('INCRBY', count, n)
  if type(c) ~= 'number' then return -1 end
  undo[1] = {'DECR', count, c, n}
  if ARGV[10] ~= '' and c > tonumber(ARGV[10]) then return refuse() end
  bkey, buckets = E .. ':ev:tx:' .. b, E .. ':ev:tx'
  new_bucket = redis.pcall('ZADD', buckets, b, b)
  if type(new_bucket) ~= 'number' then return refuse() end
  if new_bucket == 1 then undo[#undo + 1] = {'ZREM', buckets, b} end
  old = redis.pcall('HGET', bkey, id)  -- (WRONGTYPE if foreign)
  if type(old) == 'table' and old.err then return refuse() end
  local ids = {}
  for i = 13, #ARGV, 5 do
    local entry = redis.pcall('XADD', E .. ':ev', 'NOMKSTREAM', ARGV[i] .. '-*', 'ts', ARGV[i + 1],
                              'q', ARGV[i + 2], 'y', ARGV[i + 3], 'e', '\145' .. ARGV[i + 4])
    if type(entry) ~= 'string' then
      -- (only the first can fail: the caller's events are in time order)
      for _, added in ipairs(ids) do redis.call('XDEL', E .. ':ev', added) end
      return refuse()
    end
    ids[#ids + 1] = entry
  end
  local joined = table.concat(ids, ' ')
  redis.call('HSET', bkey, id, old and (old .. ' ' .. joined) or joined)
end

-- The completion: what prelude.lua's finish() writes for a held task.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = v[1]
local _, _, _, rt, dt = struct.unpack('>ddddd', h, 5)
local qp = P .. ':q:' .. q .. ':s:'
redis.call('ZREM', P .. ':running', id)
redis.call('ZREM', qp .. 'running', id)
redis.call('ZADD', qp .. state, sq, id)
if v[5] and v[5] ~= '' then redis.call('ZREM', P .. ':ttl', id) end
if err ~= '' then
  redis.call('HSET', k, 's', state, 'fa', fmt(now), 'lo', '', 'lt', '', 'ld', '', 'er', err)
else
  redis.call('HSET', k, 's', state, 'fa', fmt(now), 'lo', '', 'lt', '', 'ld', '')
end
redis.call('ZADD', P .. ':done', int(math.ceil(now + (state == 'dead' and dt or rt))), id)
if value ~= '' then
  if ARGV[8] == '' then
    redis.call('SET', rkey, value)
  else
    redis.call('SET', rkey, value, 'PXAT', ARGV[8])
  end
  local note = id
  if #value <= 512 then note = id .. ' ' .. value end
  redis.call('PUBLISH', RP .. ':rn', note)
end

if new_bucket == 1 then
  free_stale_buckets(buckets, ms, tonumber(ARGV[11]), tonumber(ARGV[12]))
end
return 1
