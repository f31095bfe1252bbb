-- Reading a batch sent as msgpack columns plus its encoded items end to end (see
-- codec.column and codec.blobs), shared by enqueue.lua and events_lib.lua.
-- A column as (the value every item shares, nil) or (nil, the array of values), read
-- per item as `one or many[j]` (no call per field).
local function split(column)
  if type(column) == 'table' then return nil, column end
  return column, nil
end
-- The items end to end from ARGV[at] on (cut between items every 64 MB or so: Redis
-- refuses a larger argument): a function that cuts the next item of the given length.
local function items_from(at)
  local blob, pos = ARGV[at], 1
  return function(len)
    if pos > #blob then at, pos = at + 1, 1; blob = ARGV[at] end
    local item = string.sub(blob, pos, pos + len - 1)
    pos = pos + len
    return item
  end
end
