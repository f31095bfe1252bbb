-- cleanup(older_than): ARGV P, older_than ms (floor), older_than exact, index bucket width
-- ms. Drops the entries before older_than ms (every event in them is older), at most
-- LIMIT a call, then the ones appended late (an id at or after older_than ms, a timestamp
-- before), and the index buckets that only name dropped entries. Returns {events
-- dropped, 1 when entries before older_than ms remain (call again), else 0}.
local P, older_ms, older_than, width = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local stream, count_key, late_key, buckets_key = P .. ':ev', P .. ':ev:n', P .. ':ev:late', P .. ':ev:tx'
local LIMIT = 1000
local deleted = 0
local function drop_count()
  if deleted > 0 then redis.call('DECRBY', count_key, deleted) end
end
if older_ms > 0 then
  local chunk = redis.call('XRANGE', stream, '-', string.format('%d', older_ms - 1), 'COUNT', LIMIT)
  for _, entry in ipairs(chunk) do deleted = deleted + events_in(entry_field(entry, 'e')) end
  if #chunk > 0 then redis.call('XTRIM', stream, 'MINID', next_id(chunk[#chunk][1])) end
  if #chunk == LIMIT then
    drop_count()
    return {deleted, 1}
  end
end
local late = tonumber(redis.call('GET', late_key) or '0')
if late > 0 then
  local stale = {}
  local window = redis.call('XRANGE', stream, string.format('%d', older_ms), string.format('%d', older_ms + late))
  for _, entry in ipairs(window) do
    if tonumber(entry_field(entry, 'ts')) < older_than then
      stale[#stale + 1] = entry[1]
      deleted = deleted + events_in(entry_field(entry, 'e'))
    end
  end
  for i = 1, #stale, 1000 do redis.call('XDEL', stream, unpack(stale, i, math.min(i + 999, #stale))) end
end
local last_stale = math.floor(older_ms / width) - 1
local buckets = redis.call('ZRANGEBYSCORE', buckets_key, '-inf', last_stale)
for _, b in ipairs(buckets) do redis.call('UNLINK', buckets_key .. ':' .. b) end
if #buckets > 0 then redis.call('ZREMRANGEBYSCORE', buckets_key, '-inf', last_stale) end
drop_count()
return {deleted, 0}
