-- What wait_for_work looks at before it sleeps, in one call. ARGV: P, then queue names.
-- Returns 'r' when a queue has ready work, '' when none has delayed work either, else
-- the seconds (server clock) until the earliest delayed task is due.
local P = ARGV[1]
local first
for i = 2, #ARGV do
  local q = P .. ':q:' .. ARGV[i]
  if redis.call('ZCARD', q .. ':ready') > 0 then return 'r' end
  local head = redis.call('ZRANGE', q .. ':delayed', 0, 0, 'WITHSCORES')
  if head[2] then
    local eta = tonumber(head[2])
    if first == nil or eta < first then first = eta end
  end
end
if first == nil then return '' end
local t = redis.call('TIME')
return string.format('%.6f', first - (tonumber(t[1]) + tonumber(t[2]) / 1e6))
