-- ARGV: P, lease seconds, then pairs of id, token. Returns the ids still held.
local deadline, score = lease_deadline(tonumber(ARGV[2]))
local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local v = redis.pcall('HMGET', tkey(id), 'h', 's', 'lt')
  if not v.err and marked(v[1]) and v[2] == 'running' and v[3] == ARGV[i + 1] then
    redis.call('HSET', tkey(id), 'ld', deadline)
    zadd(RUNNING_KEY, score, id)
    out[#out + 1] = id
  end
end
commit()
return out
