-- ARGV: P, lease seconds, then pairs of id, token. Returns the ids still held.
local deadline = fmt(NOW + tonumber(ARGV[2]))
local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if held(load(id), ARGV[i + 1]) then
    redis.call('HSET', tkey(id), 'ld', deadline)
    redis.call('ZADD', RUNNING_KEY, deadline, id)
    out[#out + 1] = id
  end
end
return out
