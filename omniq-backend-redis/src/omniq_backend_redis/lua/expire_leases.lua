-- ARGV: P, limit. Lapsed leases go back to their queue, or to dead at the delivery limit.
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', RUNNING_KEY, '-inf', fmt(NOW), 'LIMIT', 0, tonumber(ARGV[2]))) do
  redis.call('ZREM', RUNNING_KEY, id)
  local f = load(id)
  if f and f.s == 'running' then
    if f.a >= f.md then
      conclude(f, 'dead', error_info('DeliveryLimitError',
        'lease lapsed after ' .. f.a .. ' deliveries (limit ' .. f.md .. '): its worker keeps dying'))
    else
      redis.call('HDEL', tkey(id), 'lo', 'lt', 'ld')
      to_ready(f, 'pending')
    end
    out[#out + 1] = row(id)
  end
end
wake()
return out
