-- ARGV: P, id, token, eta, encoded error ('' for none). Returns 1, or 0 if not held.
local f = load(ARGV[2])
if not held(f, ARGV[3]) then return 0 end
f.e = tonumber(ARGV[4])
if ARGV[5] ~= '' then
  f.er = ARGV[5]
  unlease(f, 'retrying', 'e', ARGV[4], 'er', ARGV[5])
else
  unlease(f, 'retrying', 'e', ARGV[4])
end
commit()
return 1
