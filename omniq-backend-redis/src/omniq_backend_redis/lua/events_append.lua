-- ARGV: P, MAXLEN cap ('' for none), per-task index ttl ms, a msgpack array with per
-- event {timestamp ms, exact timestamp (a string), task id, queue, type, length of the
-- encoded TaskEvent}, and the encoded TaskEvents end to end (cmsgpack has no binary type).
-- Entry ids follow event time (<ms>-*) but must grow, so an event older than the
-- stream's last entry gets that entry's ms; P:ev:late keeps the largest such lag, which
-- query() and cleanup() widen their id ranges by.
local P, cap, ttl = ARGV[1], ARGV[2], ARGV[3]
local events, bodies = cmsgpack.unpack(ARGV[4]), ARGV[5]
local stream, late_key = P .. ':ev', P .. ':ev:late'
local last = 0
local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)')) end
local late = tonumber(redis.call('GET', late_key) or '0')
local late_before = late
local pos = 1
local id_ms, id_pattern = nil, nil  -- the '<ms>-*' of the last event, made once per ms
for _, ev in ipairs(events) do
  local ms = ev[1]
  if ms < last then
    late = math.max(late, last - ms)
    ms = last
  end
  if ms ~= id_ms then id_ms, id_pattern = ms, string.format('%d-*', ms) end
  local body = string.sub(bodies, pos, pos + ev[6] - 1)
  pos = pos + ev[6]
  local id
  if cap == '' then
    id = redis.call('XADD', stream, id_pattern, 'ts', ev[2], 't', ev[3], 'q', ev[4], 'y', ev[5], 'e', body)
  else
    id = redis.call('XADD', stream, 'MAXLEN', '~', cap, id_pattern,
                    'ts', ev[2], 't', ev[3], 'q', ev[4], 'y', ev[5], 'e', body)
  end
  last = ms
  local index = P .. ':ev:t:' .. ev[3]
  redis.call('RPUSH', index, id)
  redis.call('PEXPIRE', index, ttl)
end
if late > late_before then redis.call('SET', late_key, string.format('%d', late)) end
return 1
