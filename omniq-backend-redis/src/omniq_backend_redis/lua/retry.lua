-- ARGV: P, id, token, eta, encoded error ('' for none). Returns 1, or 0 if not held.
local f = load(ARGV[2])
if not held(f, ARGV[3]) then return 0 end
zrem(RUNNING_KEY, f.id)
f.e = tonumber(ARGV[4])
local values = {lo = false, lt = false, ld = false, e = ARGV[4]}
if ARGV[5] ~= '' then values.er = ARGV[5] end
to_ready(f, 'retrying', values)
commit()
return 1
