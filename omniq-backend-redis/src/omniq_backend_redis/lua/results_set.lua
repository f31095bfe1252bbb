-- ARGV: P, then per result: task id, value (marker + encoded TaskResult), expiry as unix
-- ms ('' for none). Refuses (changing nothing) if any key holds a value OmniQ did not
-- write; publishes each task id on P:rn for waiters, followed by ' ' and the value when
-- that is at most 512 bytes (a waiter then needs no read).
local P, MARK = ARGV[1], 'OQR1'
for i = 2, #ARGV, 3 do
  local key = P .. ':r:' .. ARGV[i]
  local ty = redis.call('TYPE', key)['ok']
  if ty ~= 'none' and (ty ~= 'string' or redis.call('GETRANGE', key, 0, 3) ~= MARK) then
    error({err = 'OMNIQ_FOREIGN ' .. key .. ' holds a ' .. ty .. ' OmniQ did not write'})
  end
end
for i = 2, #ARGV, 3 do
  local key = P .. ':r:' .. ARGV[i]
  if ARGV[i + 2] == '' then
    redis.call('SET', key, ARGV[i + 1])
  else
    redis.call('SET', key, ARGV[i + 1], 'PXAT', ARGV[i + 2])
  end
  local v = ARGV[i + 1]
  redis.call('PUBLISH', P .. ':rn', #v <= 512 and (ARGV[i] .. ' ' .. v) or ARGV[i])
end
return 1
