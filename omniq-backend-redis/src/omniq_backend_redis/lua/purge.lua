-- ARGV: P, queue, state, limit. Deletes up to limit tasks of that queue and state.
local q = ARGV[2]
local skey = qkey(q, 's:' .. ARGV[3])
local ids = redis.call('ZRANGE', skey, 0, tonumber(ARGV[4]) - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', qkey(q, 'ready'), id)
  redis.call('ZREM', qkey(q, 'delayed'), id)
  redis.call('ZREM', RUNNING_KEY, id)
  redis.call('ZREM', TTL_KEY, id)
  redis.call('ZREM', DONE_KEY, id)
  redis.call('DEL', tkey(id), P .. ':deps:' .. id)
end
if #ids > 0 then redis.call('ZREM', skey, unpack(ids)) end
return #ids
