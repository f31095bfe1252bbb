-- ARGV: P, limit. Expires tasks not started before expires_at and deletes finished
-- tasks past their retention. Returns {msgpack rows of the expired, deleted count}.
local limit = tonumber(ARGV[2])
local expired = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', TTL_KEY, '-inf', fmt(NOW), 'LIMIT', 0, limit)) do
  local f = load(id)
  if f and (READY[f.s] or f.s == 'waiting') then
    conclude(f, 'expired', nil)
    expired[#expired + 1] = row_id(f)
  else
    zrem(TTL_KEY, id)
  end
end
commit()
local gone = redis.call('ZRANGEBYSCORE', DONE_KEY, '-inf', fmt(NOW), 'LIMIT', 0, limit)
for _, id in ipairs(gone) do
  local f = load(id)
  if f then
    redis.call('ZREM', qkey(f.q, 's:' .. f.s), id)
    redis.call('DEL', tkey(id))
  end
  redis.call('DEL', P .. ':deps:' .. id)
end
if #gone > 0 then redis.call('ZREM', DONE_KEY, unpack(gone)) end
return {rows(expired), #gone}
