-- ARGV: P, then per schedule: id, expected encoded schedule, new encoded schedule,
-- due score ('' when paused). Each is written only if it still holds the expected value,
-- so of several schedulers exactly one wins each firing. Returns 1/0 per schedule.
local key, due = P .. ':sched', P .. ':sched:due'
local out = {}
for i = 2, #ARGV, 4 do
  local id = ARGV[i]
  if redis.call('HGET', key, id) == ARGV[i + 1] then
    redis.call('HSET', key, id, ARGV[i + 2])
    if ARGV[i + 3] == '' then redis.call('ZREM', due, id) else redis.call('ZADD', due, ARGV[i + 3], id) end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
