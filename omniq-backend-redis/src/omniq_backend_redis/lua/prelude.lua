-- Prelude of every OmniQ task-queue script. ARGV[1] is the key prefix P.
-- Keys: P:t:<id> task hash; P:q:<queue>:ready (score: priority, then enqueue order),
-- P:q:<queue>:delayed (score: eta), P:q:<queue>:s:<state> (score: enqueue order),
-- P:running (lease deadline, whole ms: see lease_deadline), P:ttl (expires_at of tasks
-- not started), P:done (when a finished task may be deleted, whole seconds: see done_at),
-- P:deps:<id> (ids of the tasks that depend on <id>, kept until <id> is deleted:
-- dependents() reads it), P:queues, P:seq.
-- Task hash fields: h header (the marker MARK, then created_at, priority, delivery limit
-- and retention when finished/dead as big-endian doubles: what never changes, in one
-- field), d encoded Task, q queue, sq enqueue order, s state, a attempts, e eta, x
-- expires_at, w parents not yet succeeded (not yet ended, with rf), rf runs on a parent's
-- failure (on_parent_failure = run), hd has dependents, lo/lt/ld lease owner,
-- token and deadline, sa started_at, fa finished_at, er encoded ErrorInfo. An empty or
-- missing field means none (attempts: 0). A hash whose h does not start with MARK is not
-- ours (or of another layout). (P, fmt, int, tkey and ready_score come from keys.lua.)
local MARK = 'OQT2'
local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- Now in whole ms, rounded down: a P:running score at or below it has lapsed.
local NOW_MS = math.floor(NOW * 1000)
local READY = {pending = true, scheduled = true, retrying = true}
local TERMINAL = {succeeded = true, failed = true, cancelled = true, expired = true, dead = true}
local RUNNING_KEY = P .. ':running'
local TTL_KEY = P .. ':ttl'
local DONE_KEY = P .. ':done'
local WAKE = {}

-- redis.call formats a Lua number argument with %.17g on every call, which costs more
-- than a small command itself: give it strings, each distinct value formatted once.
local NUMS = {}
local function num(v)
  local s = NUMS[v]
  if not s then s = fmt(v); NUMS[v] = s end
  return s
end
-- A finished task's P:done score `keep` seconds from now: whole seconds, rounded up (it
-- may be deleted a fraction of a second late, never early), one string per retention.
local DONE_AT = {}
local function done_at(keep)
  local s = DONE_AT[keep]
  if not s then s = int(math.ceil(NOW + keep)); DONE_AT[keep] = s end
  return s
end
-- A lease's deadline `seconds` from now: the hash's ld (seconds, what the client reads)
-- and its P:running score, in whole milliseconds rounded up (so it never lapses early):
-- an integer string is cheaper to write and for the server to parse than a float's.
-- Versions before this one scored P:running in seconds: expire_leases.lua reads both.
local function lease_deadline(seconds)
  local at = NOW + seconds
  return fmt(at), int(math.ceil(at * 1000))
end
-- Queue keys are asked for once per task in a batch: build each string once.
local QKEYS = {}
local function qkey(q, what)
  local keys = QKEYS[q]
  if not keys then keys = {}; QKEYS[q] = keys end
  local k = keys[what]
  if not k then k = P .. ':q:' .. q .. ':' .. what; keys[what] = k end
  return k
end
-- state -> 's:<state>', the suffix of its index key (literal: built by a loop of
-- concatenations, this table cost ~20,000 instructions of every script run)
local STATE_INDEX = {pending = 's:pending', scheduled = 's:scheduled', waiting = 's:waiting',
                     running = 's:running', retrying = 's:retrying', succeeded = 's:succeeded',
                     failed = 's:failed', cancelled = 's:cancelled', expired = 's:expired',
                     dead = 's:dead'}

-- Sorted-set writes are gathered per key and sent in one command each by commit().
-- (A script moves each task at most once, so the order of members does not matter.)
local ZADDS, ZREMS = {}, {}
local function zadd(key, score, member)
  local t = ZADDS[key]
  if not t then t = {}; ZADDS[key] = t end
  t[#t + 1] = score
  t[#t + 1] = member
end
local function zrem(key, member)
  local t = ZREMS[key]
  if not t then t = {}; ZREMS[key] = t end
  t[#t + 1] = member
end

-- Whether a header (field h) is one of ours.
local function marked(h) return h and string.sub(h, 1, 4) == MARK end
-- The header of a task: MARK, then its fields that never change; and back.
local function header(c, p, md, rt, dt) return MARK .. struct.pack('>ddddd', c, p, md, rt, dt) end
local function read_header(h)  -- created_at, priority, delivery limit, retentions
  local c, p, md, rt, dt = struct.unpack('>ddddd', h, 5)
  return c, p, md, rt, dt
end

-- The task's fields (numbers parsed; an empty or missing one false or nil), or nil for a
-- missing or foreign task: one HMGET, one table constructor (key: the hash's). `ending`: only the fields
-- that ending a held task reads (complete, finish), not its body, attempts, eta, lease
-- owner and deadline, times or error (those are then nil, attempts too). `leasing`: what
-- a reserve reads, not the lease fields and started_at (lease() writes them) nor hd.
local function load(id, ending, leasing)
  local key, v = tkey(id), nil
  if leasing then
    v = redis.pcall('HMGET', key, 'h', 'q', 's', 'sq', 'x', 'e', 'a', 'd', 'fa', 'er')
    if v.err or not marked(v[1]) then return nil end
    local c, p, md, rt, dt = read_header(v[1])
    return {id = id, key = key, c = c, p = p, md = md, rt = rt, dt = dt,
            q = v[2] ~= '' and v[2], s = v[3] ~= '' and v[3], sq = tonumber(v[4]), sqs = v[4],
            x = tonumber(v[5]), e = tonumber(v[6]), a = tonumber(v[7]) or 0,
            d = v[8] ~= '' and v[8], fa = v[9] ~= '' and v[9], er = v[10] ~= '' and v[10]}
  elseif ending then
    v = redis.pcall('HMGET', key, 'h', 'q', 's', 'sq', 'x', 'lt', 'hd')
  else
    v = redis.pcall('HMGET', key, 'h', 'q', 's', 'sq', 'x', 'lt', 'hd',
                    'e', 'a', 'd', 'lo', 'ld', 'sa', 'fa', 'er')
  end
  if v.err or not marked(v[1]) then return nil end
  local c, p, md, rt, dt = read_header(v[1])
  local a = v[9]
  return {id = id, key = key, c = c, p = p, md = md, rt = rt, dt = dt,
          q = v[2] ~= '' and v[2], s = v[3] ~= '' and v[3], sq = tonumber(v[4]), sqs = v[4],
          x = tonumber(v[5]), lt = v[6] ~= '' and v[6], hd = v[7] ~= '' and v[7],
          e = tonumber(v[8]), a = a ~= nil and (tonumber(a) or 0) or nil,
          d = v[10] ~= '' and v[10], lo = v[11] ~= '' and v[11], ld = v[12] ~= '' and v[12],
          sa = v[13] ~= '' and v[13], fa = v[14] ~= '' and v[14], er = v[15] ~= '' and v[15]}
end

-- The msgpack header of a bin holding s (a string; nil, false or '' for a nil), without
-- s: a row concatenates it with s itself, so the row is the only string built. Headers
-- of lengths under 256 are built once per call.
local BIN8 = {}
local function mp_head(s)
  if not s or s == '' then return '\192' end
  local n = #s
  if n >= 65536 then return '\198' .. struct.pack('>I4', n) end
  if n >= 256 then return '\197' .. struct.pack('>I2', n) end
  local h = BIN8[n]
  if not h then h = '\196' .. string.char(n); BIN8[n] = h end
  return h
end
-- What a script returns for a task (decoded by codec.decode_task): an array of its
-- d c s a e lo lt ld sa fa er, in one concatenation; c (created_at) as a msgpack float 64,
-- the double itself, which costs less than its 17 digits. `as`: the attempts as a
-- string, when the caller has it.
local ROW_HEAD = mp_array(11)
local function row(f, as)
  local d, s, lo, lt, ld, sa, fa, er = f.d, f.s, f.lo, f.lt, f.ld, f.sa, f.fa, f.er
  as = as or int(f.a)
  return ROW_HEAD .. mp_head(d) .. (d or '') .. '\203' .. struct.pack('>d', f.c)
    .. mp_head(s) .. (s or '') .. mp_head(as) .. as .. mp_bin(f.e)
    .. mp_head(lo) .. (lo or '') .. mp_head(lt) .. (lt or '') .. mp_head(ld) .. (ld or '')
    .. mp_head(sa) .. (sa or '') .. mp_head(fa) .. (fa or '') .. mp_head(er) .. (er or '')
end
-- A row with the task's id after it, for the replies that are not the hot path (so a
-- record whose d does not decode can still be named: see codec.decode_rows).
local ROW_ID_HEAD = mp_array(12)
local function row_id(f)
  return ROW_ID_HEAD .. string.sub(row(f), #ROW_HEAD + 1) .. mp_bin(f.id)
end
local function rows(list)
  return mp_array(#list) .. table.concat(list)
end

-- (f.sqs: the enqueue order already as a string, when the caller has it)
local function set_state(f, state)
  if f.s then zrem(qkey(f.q, STATE_INDEX[f.s]), f.id) end
  zadd(qkey(f.q, STATE_INDEX[state]), f.sqs or int(f.sq), f.id)
end

-- Send the gathered sorted-set writes and wake the queues that got work.
local function commit()
  for _, pending in ipairs({{'ZREM', ZREMS, 1}, {'ZADD', ZADDS, 2}}) do
    local step = 2000 * pending[3]  -- unpack() takes up to ~8000 values
    for key, args in pairs(pending[2]) do
      for i = 1, #args, step do
        redis.call(pending[1], key, unpack(args, i, math.min(i + step - 1, #args)))
      end
    end
  end
  ZADDS, ZREMS = {}, {}
  for q, _ in pairs(WAKE) do redis.call('PUBLISH', P .. ':w:' .. q, '1') end
end


-- Due delayed tasks of `queues` join their ready sets (what a reserve does first).
local function promote_due(queues)
  for _, q in ipairs(queues) do
    local dkey = qkey(q, 'delayed')
    local due = redis.call('ZRANGEBYSCORE', dkey, '-inf', num(NOW), 'LIMIT', 0, 1000)
    if #due > 0 then
      local rkey = qkey(q, 'ready')
      for _, id in ipairs(due) do
        local v = redis.call('HMGET', tkey(id), 'h', 'sq')
        if v[2] and marked(v[1]) then
          local _, p = read_header(v[1])
          redis.call('ZADD', rkey, ready_score(p, tonumber(v[2])), id)
        end
      end
      redis.call('ZREM', dkey, unpack(due))
    end
  end
end

-- Lease a ready task (already out of its ready set) to `worker`; its reply row.
-- (deadline and score: from lease_deadline)
local function lease(f, worker, token, deadline, score, started)
  set_state(f, 'running')
  local a = f.a + 1
  local as = int(a)
  redis.call('HSET', f.key, 's', 'running', 'a', as, 'lo', worker, 'lt', token,
             'ld', deadline, 'sa', started)
  f.s, f.a, f.lo, f.lt, f.ld, f.sa = 'running', a, worker, token, deadline, started
  zadd(RUNNING_KEY, score, f.id)
  if f.x then zrem(TTL_KEY, f.id) end
  return row(f, as)
end
