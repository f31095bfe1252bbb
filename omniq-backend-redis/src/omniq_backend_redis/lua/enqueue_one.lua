-- One new task without parents, with its enqueued event: what delay() sends. It runs on
-- keys.lua alone (no prelude, no batch columns: a dozen redis.calls), and stores what
-- enqueue.lua stores for such a task: the same hash fields, indexes, wake-up and event
-- entry. Whatever it does not take on goes back, before anything is written, to the
-- caller, which then runs enqueue.lua: a task id that exists, a foreign key, an event
-- older than the stream's last entry, an empty stream (the count is reset there), a
-- stream at its cap (enqueue.lua trims), a state other than the one the event says.
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
local qp = P .. ':q:' .. q .. ':'
local index_key, run_key = qp .. 's:' .. state, qp .. (state == 'pending' and 'ready' or 'delayed')
for _, key in ipairs({index_key, run_key}) do
  local ty = redis.call('TYPE', key)['ok']
  if ty ~= 'none' and ty ~= 'zset' then return 0 end
end

local stream, ms, bkey, b
if E ~= '' then
  if state ~= ARGV[13] then return 0 end
  stream = E .. ':ev'
  local len = redis.pcall('XLEN', stream)
  if type(len) ~= 'number' or len == 0 then return 0 end
  local n = redis.call('GET', E .. ':ev:n')
  if n and not tonumber(n) then return 0 end
  if cap ~= '' and tonumber(n or '0') >= tonumber(cap) then return 0 end
  ms = tonumber(ARGV[14])
  b = int(math.floor(ms / width))
  bkey = E .. ':ev:tx:' .. b
  local ty = redis.call('TYPE', bkey)['ok']
  if ty ~= 'none' and ty ~= 'hash' then return 0 end
  -- The first write: an id below the stream's last one is refused, and nothing is written.
  stream = redis.pcall('XADD', stream, ARGV[14] .. '-*', 'ts', ARGV[15], 'q', q, 'y', ARGV[16],
                       'e', '\145' .. ARGV[17])
  if type(stream) ~= 'string' then return 0 end
end

local seq = redis.call('INCRBY', P .. ':seq', 1)
local sq = int(seq)
if eta or x ~= '' then
  redis.call('HSET', k, 'h', H, 'd', body, 'q', q, 'sq', sq, 'e', e, 'x', x, 'w', '0', 's', state)
else
  redis.call('HSET', k, 'h', H, 'd', body, 'q', q, 'sq', sq, 's', state)
end
redis.call('ZADD', index_key, sq, id)
redis.call('ZADD', run_key, state == 'pending' and ready_score(tonumber(ARGV[10]), seq) or e, id)
if x ~= '' then redis.call('ZADD', P .. ':ttl', x, id) end
redis.call('SADD', P .. ':queues', q)
redis.call('PUBLISH', P .. ':w:' .. q, '1')

if E ~= '' then
  -- (what events_lib.lua's append_events does for one event of its own entry)
  if redis.call('HSETNX', bkey, id, stream) == 0 then
    redis.call('HSET', bkey, id, redis.call('HGET', bkey, id) .. ' ' .. stream)
  end
  local buckets = E .. ':ev:tx'
  redis.call('ZADD', buckets, b, b)
  redis.call('INCRBY', E .. ':ev:n', 1)
  local stale = math.floor((ms - ttl) / width) - 1
  if stale >= 0 then
    local gone = redis.call('ZRANGEBYSCORE', buckets, '-inf', stale)
    for _, old in ipairs(gone) do redis.call('UNLINK', buckets .. ':' .. old) end
    if #gone > 0 then redis.call('ZREMRANGEBYSCORE', buckets, '-inf', stale) end
  end
end
return state
