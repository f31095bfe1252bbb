-- ARGV: P, id, token. Hands the task back without counting the attempt.
local f = load(ARGV[2])
if not held(f, ARGV[3]) then return 0 end
zrem(RUNNING_KEY, f.id)
to_ready(f, 'pending', {lo = false, lt = false, ld = false, a = math.max(f.a - 1, 0)})
commit()
return 1
