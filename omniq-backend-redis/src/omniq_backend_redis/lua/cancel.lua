-- ARGV: P, id. Returns 1 cancelled, 0 already finished, -1 no such task.
local f = load(ARGV[2])
if f == nil then return -1 end
if TERMINAL[f.s] then return 0 end
conclude(f, 'cancelled', nil)
commit()
return 1
