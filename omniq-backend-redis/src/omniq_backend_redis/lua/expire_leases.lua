-- ARGV: P, limit. Lapsed leases go back to their queue, or to dead at the delivery
-- limit. Returns the rows of the tasks moved (msgpack).
-- P:running scores are whole ms (from 1e11 on); 0.1.0 wrote seconds (below 1e11 until
-- the year 5138), which still lapse here after an upgrade.
local limit = tonumber(ARGV[2])
local lapsed = redis.call('ZRANGEBYSCORE', RUNNING_KEY, '-inf', fmt(NOW), 'LIMIT', 0, limit)
if #lapsed < limit then
  local ms = redis.call('ZRANGEBYSCORE', RUNNING_KEY, '1e11', int(NOW_MS),
                        'LIMIT', 0, limit - #lapsed)
  for _, id in ipairs(ms) do lapsed[#lapsed + 1] = id end
end
local out = {}
for _, id in ipairs(lapsed) do
  local f = load(id)
  if f and f.s == 'running' then
    if f.a >= f.md then
      -- the type and text of omniq.lifecycle.lapse_error()
      conclude(f, 'dead', error_info('LeaseExpired',
        'lease lapsed on attempt ' .. f.a .. ' of ' .. f.md
        .. ': its worker keeps dying or hanging'))
    else
      unlease(f, 'pending')
    end
    out[#out + 1] = row_id(f)
  else
    zrem(RUNNING_KEY, id)
  end
end
commit()
return rows(out)
