-- Writing msgpack, so the client decodes a whole reply (or a group of events) in one C
-- call. Shared by the task-queue scripts and events_lib.lua.
local function mp_bin(s)
  if not s or s == '' then return '\192' end
  if type(s) == 'number' then s = string.format('%.17g', s) end
  local n = #s
  if n < 256 then return '\196' .. string.char(n) .. s end
  if n < 65536 then return '\197' .. struct.pack('>I2', n) .. s end
  return '\198' .. struct.pack('>I4', n) .. s
end
local function mp_array(n)
  if n < 16 then return string.char(144 + n) end
  if n < 65536 then return '\220' .. struct.pack('>I2', n) end
  return '\221' .. struct.pack('>I4', n)
end
