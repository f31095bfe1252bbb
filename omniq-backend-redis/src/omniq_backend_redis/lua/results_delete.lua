-- ARGV: P, task id. Deletes the result if OmniQ wrote it; 1 deleted, 0 none.
local key, MARK = ARGV[1] .. ':r:' .. ARGV[2], 'OQR1'
local ty = redis.call('TYPE', key)['ok']
if ty == 'none' then return 0 end
if ty ~= 'string' or redis.call('GETRANGE', key, 0, 3) ~= MARK then
  error({err = 'OMNIQ_FOREIGN ' .. key .. ' holds a ' .. ty .. ' OmniQ did not write'})
end
return redis.call('DEL', key)
