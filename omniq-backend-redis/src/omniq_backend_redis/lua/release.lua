-- ARGV: P, id, token. Hands the task back without counting the attempt.
local f = load(ARGV[2])
if not held(f, ARGV[3]) then return 0 end
local k = tkey(f.id)
redis.call('ZREM', RUNNING_KEY, f.id)
redis.call('HDEL', k, 'lo', 'lt', 'ld')
redis.call('HSET', k, 'a', math.max(f.a - 1, 0))
to_ready(f, 'pending')
wake()
return 1
