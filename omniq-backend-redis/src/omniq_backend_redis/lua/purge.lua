-- ARGV: P, queue, state, limit, the purge's queue filter ('' for none), '1' when it
-- purges waiting tasks too. Deletes up to limit tasks of that queue and state.
-- The waiting dependents of a task purged before it succeeded are first cancelled as
-- those of a cancelled parent are, naming the purge (omniq.lifecycle.purge_failure):
-- its deletion would otherwise leave their count of parents to wait for (w) above zero
-- for ever. One so cancelled that the purge's filter matched (it was waiting) is
-- deleted here too: its state changed, so no later batch would find it.
local q = ARGV[2]
local skey = qkey(q, 's:' .. ARGV[3])
local ids = redis.call('ZRANGE', skey, 0, tonumber(ARGV[4]) - 1)
local cancelled = {}
if ARGV[3] ~= 'succeeded' then
  for _, id in ipairs(ids) do
    local f = load(id)
    if f and f.hd then
      local err = cmsgpack.pack({type = 'DependencyFailedError', module = 'omniq.errors',
                                 message = "parent task '" .. id .. "' was purged"})
      cancel_dependents(f, 'cancelled', err, cancelled)
    end
  end
  commit()
end
local function delete(id, tq)
  redis.call('ZREM', qkey(tq, 'ready'), id)
  redis.call('ZREM', qkey(tq, 'delayed'), id)
  redis.call('ZREM', RUNNING_KEY, id)
  redis.call('ZREM', TTL_KEY, id)
  redis.call('ZREM', DONE_KEY, id)
  redis.call('DEL', tkey(id), P .. ':deps:' .. id)
end
local batch = {}
for _, id in ipairs(ids) do
  batch[id] = true
  delete(id, q)
end
if #ids > 0 then redis.call('ZREM', skey, unpack(ids)) end
local extra = 0
if ARGV[6] == '1' then
  for _, c in ipairs(cancelled) do
    if ARGV[5] == '' or c.q == ARGV[5] then
      delete(c.id, c.q)
      redis.call('ZREM', qkey(c.q, 's:cancelled'), c.id)
      if not batch[c.id] then extra = extra + 1 end
    end
  end
end
return #ids + extra
