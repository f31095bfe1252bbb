-- ARGV: P, id, token, eta, encoded error ('' for none). Returns 1, or 0 if not held.
local f = load(ARGV[2])
if not held(f, ARGV[3]) then return 0 end
local k = tkey(f.id)
redis.call('ZREM', RUNNING_KEY, f.id)
redis.call('HDEL', k, 'lo', 'lt', 'ld')
redis.call('HSET', k, 'e', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', k, 'er', ARGV[5]) end
f.e = tonumber(ARGV[4])
to_ready(f, 'retrying')
wake()
return 1
