-- What every task-queue script needs first: the key prefix P (ARGV[1]), task keys,
-- number formatting and the ready score. enqueue_one.lua runs on this alone; the other
-- scripts run prelude.lua after it (finish_one.lua too runs on this alone).
local P = ARGV[1]
local function fmt(x) return string.format('%.17g', x) end
-- An integer (enqueue order, ready score) as a string, without float formatting.
local function int(v) return string.format('%d', v) end
local function tkey(id) return P .. ':t:' .. id end
-- A ready set's score: priority (0-9, highest first), then enqueue order.
local function ready_score(p, sq)
  if p < 0 then p = 0 elseif p > 9 then p = 9 end
  local score = (9 - p) * 1e13 + sq
  if score == math.floor(score) then return int(score) end
  return fmt(score)
end
-- The index buckets (of enqueue_one.lua's and finish_one.lua's events) up to the one
-- before the index's ttl, freed when a new bucket starts (UNLINK: off Redis' main
-- thread): at most one bucket width later than events_lib's append_events would.
local function free_stale_buckets(buckets, ms, ttl, width)
  local stale = math.floor((ms - ttl) / width) - 1
  if stale < 0 then return end
  local gone = redis.call('ZRANGEBYSCORE', buckets, '-inf', stale)
  for _, old in ipairs(gone) do redis.call('UNLINK', buckets .. ':' .. old) end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', buckets, '-inf', stale) end
end
