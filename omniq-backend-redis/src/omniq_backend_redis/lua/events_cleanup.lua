-- cleanup(older_than): ARGV P, older_than ms (floor), older_than exact, index bucket width
-- ms. Drops the entries before older_than ms (every event in them is older), then the
-- ones appended late (an id at or after older_than ms, a timestamp before), and the index
-- buckets that only name dropped entries. Returns how many events it dropped.
local K = event_keys(ARGV[1])
local older_ms, older_than, width = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local deleted = redis.call('XTRIM', K.stream, 'MINID', string.format('%d', older_ms))
if deleted > 0 then deleted = deleted + forget_dropped_groups(K) end
local late = tonumber(redis.call('GET', K.late) or '0')
if late > 0 then
  local stale, groups = {}, {}
  local window = redis.call('XRANGE', K.stream, string.format('%d', older_ms), string.format('%d', older_ms + late))
  for _, entry in ipairs(window) do
    if tonumber(entry_field(entry, 'ts')) < older_than then
      local k = events_in(entry_field(entry, 'e'))
      stale[#stale + 1] = entry[1]
      if k > 1 then groups[#groups + 1] = entry[1] .. ' ' .. k end
      deleted = deleted + k
    end
  end
  for i = 1, #stale, 1000 do redis.call('XDEL', K.stream, unpack(stale, i, math.min(i + 999, #stale))) end
  for i = 1, #groups, 1000 do redis.call('ZREM', K.groups, unpack(groups, i, math.min(i + 999, #groups))) end
end
drop_buckets(K, math.floor(older_ms / width) - 1)
if redis.call('XLEN', K.stream) == 0 then
  redis.call('DEL', K.count, K.groups)
elseif deleted > 0 then
  redis.call('DECRBY', K.count, deleted)
end
return deleted
