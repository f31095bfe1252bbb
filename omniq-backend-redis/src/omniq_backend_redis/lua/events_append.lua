-- ARGV: P, MAXLEN cap ('' for none), per-task index ttl ms, then per event: timestamp ms,
-- exact timestamp, task id, queue, type, encoded TaskEvent.
-- Entry ids follow event time (<ms>-*) but must grow, so an event older than the
-- stream's last entry gets that entry's ms; P:ev:late keeps the largest such lag, which
-- query() and cleanup() widen their id ranges by.
local P, cap, ttl = ARGV[1], ARGV[2], ARGV[3]
local stream, late_key = P .. ':ev', P .. ':ev:late'
local last = 0
local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)')) end
local late = tonumber(redis.call('GET', late_key) or '0')
local late_before = late
for i = 4, #ARGV, 6 do
  local ms = tonumber(ARGV[i])
  if ms < last then
    late = math.max(late, last - ms)
    ms = last
  end
  local id
  local fields = {'ts', ARGV[i + 1], 't', ARGV[i + 2], 'q', ARGV[i + 3], 'y', ARGV[i + 4], 'e', ARGV[i + 5]}
  if cap == '' then
    id = redis.call('XADD', stream, string.format('%d-*', ms), unpack(fields))
  else
    id = redis.call('XADD', stream, 'MAXLEN', '~', cap, string.format('%d-*', ms), unpack(fields))
  end
  last = ms
  local index = P .. ':ev:t:' .. ARGV[i + 2]
  redis.call('RPUSH', index, id)
  redis.call('PEXPIRE', index, ttl)
end
if late > late_before then redis.call('SET', late_key, string.format('%d', late)) end
return 1
