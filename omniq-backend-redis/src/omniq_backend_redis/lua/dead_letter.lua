-- ARGV: P, id, '1' if fenced by a token else '0', token, encoded error ('' for none).
local f = load(ARGV[2])
if f == nil then return 0 end
if ARGV[3] == '1' then
  if not held(f, ARGV[4]) then return 0 end
elseif TERMINAL[f.s] then
  return 0
end
local err = ARGV[5]
if err == '' then err = nil end
conclude(f, 'dead', err)
commit()
return 1
