-- finish_many with the result (and event) storage on this connection: the completions,
-- then the results and events of the tasks completed (and of tasks not in the batch),
-- in one atomic step: nothing of a refused completion is ever written.
-- ARGV: P, n, per item: id, token, state, encoded error ('' for none); then the result
-- storage's prefix, m, per result: task id, value (marker + encoded TaskResult), expiry
-- as unix ms ('' for none); then, when there are events, the arguments of an append
-- (events_lib.lua) to the end. Returns 1 per item completed, 0 where the lease was lost.
-- Each result written is published on RP:rn (its id, and its value when small).
-- Foreign keys are refused before anything is written, as results_set.lua and
-- events_append.lua do.
local n = tonumber(ARGV[2])
local r = 3 + 4 * n
local RP, m = ARGV[r], tonumber(ARGV[r + 1])
local e = r + 2 + 3 * m
local events = ARGV[e] and events_batch(e)
local MARK = 'OQR1'
-- The result's notification: its task id, then (when small) ' ' and the value written,
-- so a waiter has it without reading it back.
local function note(id, v) if #v <= 512 then return id .. ' ' .. v end return id end
local rkeys = {}  -- ARGV index of a result's task id -> its key (built once)
for i = r + 2, e - 1, 3 do
  local key = RP .. ':r:' .. ARGV[i]
  rkeys[i] = key
  local ty = redis.call('TYPE', key)['ok']
  if ty ~= 'none' and (ty ~= 'string' or redis.call('GETRANGE', key, 0, 3) ~= MARK) then
    error({err = 'OMNIQ_FOREIGN ' .. key .. ' holds a ' .. ty .. ' OmniQ did not write'})
  end
end
local out, refused = {}, {}
local i = 3
for j = 1, n do
  local f = load(ARGV[i], true)
  if held(f, ARGV[i + 1]) then
    local err = ARGV[i + 3]
    if err == '' then err = nil end
    conclude(f, ARGV[i + 2], err)
    out[j] = 1
  else
    out[j] = 0
    refused[ARGV[i]] = true
  end
  i = i + 4
end
commit()
for k = r + 2, e - 1, 3 do
  local id = ARGV[k]
  if not refused[id] then
    local key = rkeys[k]
    if ARGV[k + 2] == '' then
      redis.call('SET', key, ARGV[k + 1])
    else
      redis.call('SET', key, ARGV[k + 1], 'PXAT', ARGV[k + 2])
    end
    redis.call('PUBLISH', RP .. ':rn', note(id, ARGV[k + 1]))
  end
end
if events then
  local t1, ts = split(events.C[4])
  append_events(events, function(j) return not refused[t1 or ts[j]] end, nil, nil, false)
end
return out
