-- ARGV: P, worker id, lease seconds, limit, token base, queue names...
-- Returns the rows of the reserved tasks (msgpack), highest priority first, then FIFO;
-- when it drained the queues (fewer than the limit), {rows, when}: when is what
-- wait_check.lua would say now ('' for no delayed task, else the seconds until the
-- earliest is due), so the worker's wait that follows needs no check of its own.
local worker, limit, base = ARGV[2], tonumber(ARGV[4]), ARGV[5]
local deadline, score = lease_deadline(tonumber(ARGV[3]))
local started = num(NOW)
local queues = {}
for i = 6, #ARGV do queues[#queues + 1] = ARGV[i] end

promote_due(queues)

-- Up to `want` ready ids, best first, taken out of their ready sets.
local function pop(want)
  if #queues == 1 then
    local r = redis.call('ZPOPMIN', qkey(queues[1], 'ready'), want)
    local ids = {}
    for i = 1, #r, 2 do ids[#ids + 1] = r[i] end
    return ids
  end
  local cands = {}
  for _, q in ipairs(queues) do
    local r = redis.call('ZRANGE', qkey(q, 'ready'), 0, want - 1, 'WITHSCORES')
    for i = 1, #r, 2 do cands[#cands + 1] = {tonumber(r[i + 1]), r[i], q} end
  end
  table.sort(cands, function(a, b) return a[1] < b[1] end)
  local ids = {}
  for i = 1, math.min(#cands, want) do
    ids[i] = cands[i][2]
    redis.call('ZREM', qkey(cands[i][3], 'ready'), ids[i])
  end
  return ids
end

local out, drained = {}, false
while #out < limit and not drained do
  local want = limit - #out
  local ids = pop(want)
  drained = #ids < want  -- (fewer than asked: every ready set is empty now)
  for _, id in ipairs(ids) do
    local f = load(id, false, true)
    -- An expired task leaves the ready set; cleanup() marks it expired.
    if f and READY[f.s] and not (f.x and f.x <= NOW) then
      out[#out + 1] = lease(f, worker, base .. '.' .. (#out + 1), deadline, score, started)
    end
  end
end
commit()
if #out == limit then return rows(out) end
local first
for _, q in ipairs(queues) do
  local head = redis.call('ZRANGE', qkey(q, 'delayed'), 0, 0, 'WITHSCORES')
  if head[2] and (first == nil or tonumber(head[2]) < first) then first = tonumber(head[2]) end
end
return {rows(out), first and string.format('%.6f', first - NOW) or ''}
