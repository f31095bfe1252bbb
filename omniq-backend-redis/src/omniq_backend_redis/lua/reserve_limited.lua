-- reserve.lua under global limits (omniq.limits): a ready task is leased only when its
-- rates and its task name's concurrency limit allow it now; the others stay in their
-- ready sets, untouched. Only workers whose app declares limits run this script.
-- Keys: P:limits (hash: rate key 'task:<name>' | 'queue:<queue>' -> when it next allows
-- a start), P:lim:run:<name> (set of the ids of that name's tasks reserved under its
-- concurrency limit; a member counts while its hash says running with an unexpired
-- lease, and goes once the task is no longer running).
-- ARGV: P, worker id, lease seconds, limit, token base, scan ahead, limits (msgpack
-- [task rates, queue rates, task concurrency], maps of name -> seconds or count), queues...
-- Returns {rows of the reserved tasks, seconds until the earliest rate that held a task
-- back allows one (or ''), 1 when a limit held a task back (else 0)}.
local worker, limit, base = ARGV[2], tonumber(ARGV[4]), ARGV[5]
local window = limit + tonumber(ARGV[6])
local declared = cmsgpack.unpack(ARGV[7])
local task_rates, queue_rates, caps = declared[1], declared[2], declared[3]
local by_name = next(task_rates) ~= nil or next(caps) ~= nil
local deadline, score = lease_deadline(tonumber(ARGV[3]))
local started = num(NOW)
local queues = {}
for i = 8, #ARGV do queues[#queues + 1] = ARGV[i] end
local LIMITS_KEY = P .. ':limits'

promote_due(queues)

local cands = {}
for _, q in ipairs(queues) do
  local r = redis.call('ZRANGE', qkey(q, 'ready'), 0, window - 1, 'WITHSCORES')
  for i = 1, #r, 2 do cands[#cands + 1] = {tonumber(r[i + 1]), r[i], q} end
end
table.sort(cands, function(a, b) return a[1] < b[1] end)

local next_at = {}  -- rate key -> when it next allows a start (read once per key)
local function rate_at(key)
  local at = next_at[key]
  if at == nil then
    at = tonumber(redis.call('HGET', LIMITS_KEY, key)) or -1
    next_at[key] = at
  end
  return at
end
local running = {}  -- task name -> its tasks running under an unexpired lease
local function running_of(name)
  local n = running[name]
  if n == nil then
    n = 0
    local skey = P .. ':lim:run:' .. name
    for _, id in ipairs(redis.call('SMEMBERS', skey)) do
      local v = redis.call('HMGET', tkey(id), 's', 'ld')
      if v[1] ~= 'running' then
        redis.call('SREM', skey, id)
      elseif tonumber(v[2]) and tonumber(v[2]) > NOW then
        n = n + 1
      end
    end
    running[name] = n
  end
  return n
end
-- A msgpack string at byte i of s: its value and the index after it (nil if not one).
local function mp_str(s, i)
  local b = string.byte(s, i)
  if not b then return nil end
  local n, at
  if b >= 160 and b <= 191 then n, at = b - 160, i + 1
  elseif b == 217 then n, at = string.byte(s, i + 1), i + 2
  elseif b == 218 then n, at = struct.unpack('>I2', s, i + 1), i + 3
  else return nil end
  return string.sub(s, at, at + n - 1), at + n
end
-- The task's name from its encoded record, without decoding the rest (the payload):
-- msgspec writes a Task as a map whose first two entries are id and name. nil when it
-- does not read so (the worker dead-letters that record's stand-in: no limit applies).
local function name_of(d)
  local b = string.byte(d or '', 1)
  local i
  if b and b >= 128 and b <= 143 then i = 2 elseif b == 222 then i = 4 else return nil end
  for _ = 1, 2 do
    local key, value
    key, i = mp_str(d, i)
    if not key then return nil end
    value, i = mp_str(d, i)
    if not value then return nil end
    if key == 'name' then return value end
  end
  return nil
end

local out = {}
local soonest, deferred = nil, false
for _, c in ipairs(cands) do
  if #out >= limit then break end
  local id, q = c[2], c[3]
  local f = load(id, false, true)
  if f and READY[f.s] and not (f.x and f.x <= NOW) then
    local name = by_name and name_of(f.d) or nil
    local keys = {}
    if name and task_rates[name] then keys[#keys + 1] = {'task:' .. name, task_rates[name]} end
    if queue_rates[q] then keys[#keys + 1] = {'queue:' .. q, queue_rates[q]} end
    local cap = name and caps[name]
    local wait = -1
    for _, k in ipairs(keys) do
      local at = rate_at(k[1])
      if at > wait then wait = at end
    end
    local ok = true
    if wait > NOW then
      ok, deferred = false, true
      if not soonest or wait < soonest then soonest = wait end
    elseif cap and running_of(name) >= cap then
      ok, deferred = false, true
    end
    if ok then
      for _, k in ipairs(keys) do
        next_at[k[1]] = NOW + k[2]
        redis.call('HSET', LIMITS_KEY, k[1], fmt(NOW + k[2]))
      end
      if cap then
        running[name] = running[name] + 1
        redis.call('SADD', P .. ':lim:run:' .. name, id)
      end
      zrem(qkey(q, 'ready'), id)
      out[#out + 1] = lease(f, worker, base .. '.' .. (#out + 1), deadline, score, started)
    end
  else
    -- An expired task leaves the ready set; cleanup() marks it expired.
    zrem(qkey(q, 'ready'), id)
  end
end
commit()
local retry = ''
if soonest then retry = fmt(soonest - NOW) end
return {rows(out), retry, deferred and 1 or 0}
