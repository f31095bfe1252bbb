-- ARGV: P, task id. The stream entries holding the task's events, oldest first, as XRANGE
-- answers them (an entry may hold other tasks' events too: the caller picks the task's):
-- their ids come from each bucket of the per-task index (see events_lib.lua); an id the
-- stream has trimmed since is skipped.
local P, task_id = ARGV[1], ARGV[2]
local stream, buckets_key = P .. ':ev', P .. ':ev:tx'
local out = {}
for _, b in ipairs(redis.call('ZRANGE', buckets_key, 0, -1)) do
  local ids = redis.call('HGET', buckets_key .. ':' .. b, task_id)
  if ids then
    for id in string.gmatch(ids, '%S+') do
      local hit = redis.call('XRANGE', stream, id, id)
      if #hit > 0 then out[#out + 1] = hit[1] end
    end
  end
end
return out
