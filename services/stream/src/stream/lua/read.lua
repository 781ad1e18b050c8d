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

-- At most 1,000 members a call: Lua's unpack has a bounded stack.
local function chunked(cmd, key, members, into)
  local n, i = #members, 1
  while i <= n do
    local j = math.min(i + 999, n)
    for _, v in ipairs(call(cmd, key, unpack(members, i, j))) do into[#into + 1] = v end
    i = j + 1
  end
  return into
end

for i, key in ipairs(KEYS) do out.checkpoints[i] = call('GET', key) end
for i, group in ipairs(request.seen) do
  out.seen[i] = table.concat(chunked('SMISMEMBER', group.key, group.members, {}))
end
for i, group in ipairs(request.sessions) do
  out.sessions[i] = chunked('HMGET', group.key, group.members, {})
end
return cmsgpack.pack(out)
