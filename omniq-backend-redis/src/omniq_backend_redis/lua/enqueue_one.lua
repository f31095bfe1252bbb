-- One new task without parents, with its enqueued event: what delay() sends. It runs on
-- keys.lua alone (no prelude, no batch columns: 11 redis.calls), and stores what
-- enqueue.lua stores for such a task: the same hash fields, indexes, wake-up and event
-- entry. Whatever it does not take on goes back to the caller, with nothing written,
-- which then runs enqueue.lua: a task id that exists, a foreign key, an event older than
-- the stream's last entry, no stream (its count is reset there), a stream at its cap
-- (enqueue.lua trims), a state other than the one the event says.
-- The checks are the writes themselves where they can be (a write to a foreign key
-- fails, under pcall; the count's INCRBY says the cap; XADD NOMKSTREAM says the stream
-- is there and the event not late): what a refusal finds written is taken back
-- (refuse()). XADD, which XDEL does not wholly take back (the stream's last id stays),
-- is the last check but one: the index bucket after it fails only if replaced behind
-- our back (a listed bucket is ours, and a new one is looked at before).
-- ARGV: P, then the event storage's prefix ('' when events are off), cap ('' for none),
-- index ttl ms and bucket width ms (see events_lib.lua), then the task's id, queue,
-- header (see prelude.lua), encoded Task, priority, eta ('' for none), expires_at ('' for
-- none), then the event's expected state, entry ms, exact timestamp, type and encoded
-- TaskEvent.
-- Returns the state the task was stored in, or 0: not taken, nothing written.
local E, cap, ttl, width = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local id, q, H, body, e, x = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[11], ARGV[12]
local k = tkey(id)
if redis.call('EXISTS', k) == 1 then return 0 end
local state, eta = 'pending', tonumber(e)
if eta then
  local t = redis.call('TIME')
  if eta > tonumber(t[1]) + tonumber(t[2]) / 1000000 then state = 'scheduled' end
end
if E ~= '' and state ~= ARGV[13] then return 0 end

-- What was written so far, undone by refuse() (each of these keys is a counter or a set
-- that held none of what the script adds to it).
local undo = {}
local function refuse()
  for i = #undo, 1, -1 do
    local u = undo[i]
    if u[1] == 'DECR' then
      if u[3] == 1 then redis.call('DEL', u[2]) else redis.call('DECRBY', u[2], 1) end
    else
      redis.call('ZREM', u[2], u[3])
    end
  end
  return 0
end

local ms, b, bkey, buckets, new_bucket
if E ~= '' then
  local count = E .. ':ev:n'
  local n = redis.pcall('INCRBY', count, 1)
  if type(n) ~= 'number' then return 0 end
  undo[1] = {'DECR', count, n}
  if cap ~= '' and n > tonumber(cap) then return refuse() end
  ms = tonumber(ARGV[14])
  b = int(math.floor(ms / width))
  bkey, buckets = E .. ':ev:tx:' .. b, E .. ':ev:tx'
  new_bucket = redis.pcall('ZADD', buckets, b, b)
  if type(new_bucket) ~= 'number' then return refuse() end
  if new_bucket == 1 then
    -- A bucket not listed yet: look at its key once (a listed one is ours).
    undo[#undo + 1] = {'ZREM', buckets, b}
    local ty = redis.call('TYPE', bkey)['ok']
    if ty ~= 'none' and ty ~= 'hash' then return refuse() end
  end
end

local seq = redis.call('INCRBY', P .. ':seq', 1)
undo[#undo + 1] = {'DECR', P .. ':seq', seq}
local sq = int(seq)
local qp = P .. ':q:' .. q .. ':'
local index_key, run_key = qp .. 's:' .. state, qp .. (state == 'pending' and 'ready' or 'delayed')
local score = state == 'pending' and ready_score(tonumber(ARGV[10]), seq) or e
local function zadd(key, at)
  local added = redis.pcall('ZADD', key, at, id)
  if added == 1 then undo[#undo + 1] = {'ZREM', key, id} end
  return type(added) == 'number'
end
if not (zadd(index_key, sq) and zadd(run_key, score)) then return refuse() end

local stream
if E ~= '' then
  -- The last check: a missing stream, a foreign key or an id below the stream's last one
  -- refuses it, and nothing is added.
  stream = redis.pcall('XADD', E .. ':ev', 'NOMKSTREAM', ARGV[14] .. '-*', 'ts', ARGV[15], 'q', q,
                       'y', ARGV[16], 'e', '\145' .. ARGV[17])
  if type(stream) ~= 'string' then return refuse() end
  -- (what events_lib.lua's append_events does for one event of its own entry)
  local added = redis.pcall('HSETNX', bkey, id, stream)
  if added == 0 then
    redis.call('HSET', bkey, id, redis.call('HGET', bkey, id) .. ' ' .. stream)
  elseif added ~= 1 then
    redis.call('XDEL', E .. ':ev', stream)
    return refuse()
  end
end

if eta or x ~= '' then
  redis.call('HSET', k, 'h', H, 'd', body, 'q', q, 'sq', sq, 'e', e, 'x', x, 'w', '0', 's', state)
else
  redis.call('HSET', k, 'h', H, 'd', body, 'q', q, 'sq', sq, 's', state)
end
if x ~= '' then redis.call('ZADD', P .. ':ttl', x, id) end
redis.call('SADD', P .. ':queues', q)
redis.call('PUBLISH', P .. ':w:' .. q, '1')

if new_bucket == 1 then free_stale_buckets(buckets, ms, ttl, width) end
return state
