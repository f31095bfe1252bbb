-- ARGV: P, id, token. Hands the task back without counting the attempt.
local f = load(ARGV[2])
if not held(f, ARGV[3]) then return 0 end
f.a = math.max(f.a - 1, 0)
unlease(f, 'pending', 'a', int(f.a))
commit()
return 1
