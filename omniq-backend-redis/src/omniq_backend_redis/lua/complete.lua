-- ARGV: P, n, then per item: id, token, state, encoded error ('' for none).
-- Returns 1 per item completed, 0 where the lease was no longer held.
local out = {}
local i = 3
for j = 1, tonumber(ARGV[2]) do
  local f = load(ARGV[i], true)
  if held(f, ARGV[i + 1]) then
    local err = ARGV[i + 3]
    if err == '' then err = nil end
    conclude(f, ARGV[i + 2], err)
    out[j] = 1
  else
    out[j] = 0
  end
  i = i + 4
end
commit()
return out
