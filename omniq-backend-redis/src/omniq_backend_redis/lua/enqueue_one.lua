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
-- The settings are constants the backend writes between keys.lua and this script (one
-- script per task queue and event storage, see queue.py's one_settings): P; E, the event
-- storage's prefix ('' when events are off); cap ('' for none); ttl and width, the index
-- ttl and bucket width in ms (see events_lib.lua); and the keys COUNT (E:ev:n), BUCKETS
-- (E:ev:tx), STREAM (E:ev), SEQ (P:seq) and QUEUES (P:queues). An argument costs the
-- server ~1,000 instructions and a key built here ~700: ~171,000 -> ~158,000 a call.
-- ARGV: the task's id, queue, header (see prelude.lua), encoded Task, priority, eta (''
-- for none), expires_at ('' for none), then the event's expected state, entry ms, exact
-- timestamp, type and encoded TaskEvent.
-- Returns the state the task was stored in, or 0: not taken, nothing written.
-- What was written is kept in locals, not a table per write, keys are built once, and
-- numbers go to redis.call as strings formatted once (it formats a number with %.17g on
-- every call): ~179,000 -> ~170,000 instructions of the server per call (callgrind).
local id, q, e, x = ARGV[1], ARGV[2], ARGV[6], ARGV[7]
local k = P .. ':t:' .. id
if redis.call('EXISTS', k) == 1 then return 0 end
local state, eta = 'pending', tonumber(e)
if eta then
  local t = redis.call('TIME')
  if eta > tonumber(t[1]) + tonumber(t[2]) / 1000000 then state = 'scheduled' end
end
if E ~= '' and state ~= ARGV[8] then return 0 end

-- What was written so far, undone by refuse() in reverse order (each of these keys is a
-- counter or a set that held none of what the script adds to it).
local count, n, buckets, b, seq_key, seq, index_key, in_index, run_key, in_run
local function undo_count(key, v)
  if v == 1 then redis.call('DEL', key) else redis.call('DECRBY', key, 1) end
end
local function refuse()
  if in_run then redis.call('ZREM', run_key, id) end
  if in_index then redis.call('ZREM', index_key, id) end
  if seq then undo_count(seq_key, seq) end
  if b then redis.call('ZREM', buckets, b) end
  if n then undo_count(count, n) end
  return 0
end

local ms, bkey, new_bucket
if E ~= '' then
  count = COUNT
  local c = redis.pcall('INCRBY', count, 1)
  if type(c) ~= 'number' then return 0 end
  n = c
  if cap ~= '' and n > tonumber(cap) then return refuse() end
  ms = tonumber(ARGV[9])
  local bs = string.format('%d', math.floor(ms / width))
  buckets = BUCKETS
  bkey = buckets .. ':' .. bs
  new_bucket = redis.pcall('ZADD', buckets, bs, bs)
  if type(new_bucket) ~= 'number' then return refuse() end
  if new_bucket == 1 then
    -- A bucket not listed yet: look at its key once (a listed one is ours).
    b = bs
    local ty = redis.call('TYPE', bkey)['ok']
    if ty ~= 'none' and ty ~= 'hash' then return refuse() end
  end
end

seq_key = SEQ
local s = redis.call('INCRBY', seq_key, 1)
seq = s
local sq = string.format('%d', s)
local qp = P .. ':q:' .. q
local score
if state == 'pending' then
  index_key, run_key, score = qp .. ':s:pending', qp .. ':ready', ready_score(tonumber(ARGV[5]), s)
else
  index_key, run_key, score = qp .. ':s:' .. state, qp .. ':delayed', e
end
local added = redis.pcall('ZADD', index_key, sq, id)
if type(added) ~= 'number' then return refuse() end
in_index = added == 1
added = redis.pcall('ZADD', run_key, score, id)
if type(added) ~= 'number' then return refuse() end
in_run = added == 1

if E ~= '' then
  -- The last check: a missing stream, a foreign key or an id below the stream's last one
  -- refuses it, and nothing is added.
  local stream = redis.pcall('XADD', STREAM, 'NOMKSTREAM', ARGV[9] .. '-*', 'ts', ARGV[10],
                             'q', q, 'y', ARGV[11], 'e', '\145' .. ARGV[12])
  if type(stream) ~= 'string' then return refuse() end
  -- (what events_lib.lua's append_events does for one event of its own entry)
  added = redis.pcall('HSETNX', bkey, id, stream)
  if added == 0 then
    redis.call('HSET', bkey, id, redis.call('HGET', bkey, id) .. ' ' .. stream)
  elseif added ~= 1 then
    redis.call('XDEL', STREAM, stream)
    return refuse()
  end
end

if eta or x ~= '' then
  redis.call('HSET', k, 'h', ARGV[3], 'd', ARGV[4], 'q', q, 'sq', sq, 'e', e, 'x', x, 'w', '0', 's', state)
else
  redis.call('HSET', k, 'h', ARGV[3], 'd', ARGV[4], 'q', q, 'sq', sq, 's', state)
end
if x ~= '' then redis.call('ZADD', P .. ':ttl', x, id) end
redis.call('SADD', QUEUES, q)
redis.call('PUBLISH', P .. ':w:' .. q, '1')

if new_bucket == 1 then free_stale_buckets(buckets, ms, ttl, width) end
return state
