-- ARGV: P, queue, state, limit. Deletes up to limit tasks of that queue and state.
-- The waiting dependents of a task purged before it succeeded are first cancelled as
-- those of a cancelled parent are, naming the purge (omniq.lifecycle.purge_failure):
-- its deletion would otherwise leave their count of parents to wait for (w) above zero
-- for ever.
local q = ARGV[2]
local skey = qkey(q, 's:' .. ARGV[3])
local ids = redis.call('ZRANGE', skey, 0, tonumber(ARGV[4]) - 1)
if ARGV[3] ~= 'succeeded' then
  for _, id in ipairs(ids) do
    local f = load(id)
    if f and f.hd then cancel_dependents(f, 'cancelled', purge_failure(id)) end
  end
  commit()
end
for _, id in ipairs(ids) do
  redis.call('ZREM', qkey(q, 'ready'), id)
  redis.call('ZREM', qkey(q, 'delayed'), id)
  redis.call('ZREM', RUNNING_KEY, id)
  redis.call('ZREM', TTL_KEY, id)
  redis.call('ZREM', DONE_KEY, id)
  -- a waiting task of this batch that a parent of this batch just cancelled
  if ARGV[3] == 'waiting' then redis.call('ZREM', qkey(q, 's:cancelled'), id) end
  redis.call('DEL', tkey(id), P .. ':deps:' .. id)
end
if #ids > 0 then redis.call('ZREM', skey, unpack(ids)) end
return #ids
