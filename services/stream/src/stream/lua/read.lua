-- The flush's read, inside its WATCH: the stored checkpoints, which candidate ids an earlier batch
-- counted, and the users' sessions (see stream/state.py).
--
-- KEYS: the batch's checkpoint keys.
-- ARGV[1]: msgpack {seen = {{key =, members = {id, ...}}, ...},
--                   sessions = {{key =, members = {user, ...}}, ...}}   (stream.writes.Plan)
-- Returns msgpack {checkpoints = {value or false, ...} (per KEYS),
--                  seen = {"0110..." per seen group: 1 = counted},
--                  sessions = {{session or false, ...} per sessions group}}.
local request = cmsgpack.unpack(ARGV[1])
local call = redis.call
local out = {checkpoints = {}, seen = {}, sessions = {}}

-- At most 1,000 members a call: Lua's unpack has a bounded stack. Each reply value goes through
-- the table convert (into[k] = convert[v]) if given, else is kept as it is.
local function chunked(cmd, key, members, convert)
  local into, k, n, i = {}, 0, #members, 1
  while i <= n do
    local j = math.min(i + 999, n)
    for _, v in ipairs(call(cmd, key, unpack(members, i, j))) do
      k = k + 1
      into[k] = convert and convert[v] or v
    end
    i = j + 1
  end
  return into
end

local FLAG = {[0] = '0', [1] = '1'}  -- SMISMEMBER's integers as the characters of a string
for i, key in ipairs(KEYS) do out.checkpoints[i] = call('GET', key) end
for i, group in ipairs(request.seen) do
  out.seen[i] = table.concat(chunked('SMISMEMBER', group.key, group.members, FLAG))
end
for i, group in ipairs(request.sessions) do
  out.sessions[i] = chunked('HMGET', group.key, group.members)
end
return cmsgpack.pack(out)
