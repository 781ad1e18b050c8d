-- The flush's write, inside its MULTI/EXEC: one batch's write set and its checkpoints, all or
-- nothing (see stream/state.py). Each key is read and written once per 1,000 members, not called
-- once per member: a batch of 30,000 events is ~20,000 hash fields in ~1,000 keys.
--
-- KEYS[1]: the alerts list, KEYS[2]: the outbox stream.
-- ARGV[1]: msgpack map, the fields of stream.writes.WriteSet by name, plus alerts_kept (length of
-- the alerts list) and alerts_topic. Returns the rules of the alerts that fired.
local w = cmsgpack.unpack(ARGV[1])
local alerts, outbox = KEYS[1], KEYS[2]
local kept, alerts_topic = w.alerts_kept - 1, w.alerts_topic
local call, fired = redis.call, {}

-- cmd key m1 m2 ..., at most 1,000 members a call: Lua's unpack has a bounded stack.
local function chunked(cmd, key, members)
  local n, i = #members, 1
  while i <= n do
    local j = math.min(i + 999, n)
    call(cmd, key, unpack(members, i, j))
    i = j + 1
  end
end

-- The alert JSON (the shape stream.risk documents), to the API list and the outbox.
local function fire(rule, user, window_start, window_end, threshold, count)
  local alert = '{"alert_id":' .. cjson.encode(rule .. ':' .. user .. ':' .. window_start)
    .. ',"rule":"' .. rule .. '","user_id":' .. cjson.encode(user)
    .. ',"window_start":' .. window_start .. ',"window_end":' .. window_end
    .. ',"threshold":' .. threshold .. ',"count":' .. count .. '}'
  call('LPUSH', alerts, alert)
  call('LTRIM', alerts, 0, kept)
  call('XADD', outbox, '*', 't', alerts_topic, 'k', user, 'v', alert, 'r', rule)
  fired[#fired + 1] = rule
end

-- deltas = {member, n, member, n, ...}: one read and one write per 999 members. Returns the new
-- values, in the order of the members.
local function increment(e, read, write, score_first)
  local key, d, values = e.key, e.deltas, {}
  local n, i = #d, 1
  while i <= n do
    local j = math.min(i + 1997, n)
    local names = {}
    for k = i, j, 2 do names[#names + 1] = d[k] end
    local now, args = call(read, key, unpack(names)), {}
    for k = 1, #names do
      local v = (tonumber(now[k]) or 0) + d[i + 2 * k - 1]
      values[#values + 1] = v
      if score_first then  -- ZADD takes the score first
        args[2 * k - 1], args[2 * k] = v, names[k]
      else
        args[2 * k - 1], args[2 * k] = names[k], v
      end
    end
    call(write, key, unpack(args))
    i = j + 1
  end
  call('EXPIRE', key, e.ttl)
  return values
end

for _, e in ipairs(w.hashes) do increment(e, 'HMGET', 'HSET', false) end
for _, e in ipairs(w.sorted_sets) do increment(e, 'ZMSCORE', 'ZADD', true) end
for _, e in ipairs(w.hyperloglogs) do chunked('PFADD', e.key, e.members) call('EXPIRE', e.key, e.ttl) end
for _, e in ipairs(w.seen) do chunked('SADD', e.key, e.members) call('EXPIRE', e.key, e.ttl) end
for _, e in ipairs(w.sessions) do chunked('HSET', e.key, e.members) call('EXPIRE', e.key, e.ttl) end
for _, c in ipairs(w.checkpoints) do call('SET', c.key, c.value) end
if w.newest.ts > tonumber(call('GET', w.newest.key) or '0') then call('SET', w.newest.key, w.newest.ts) end

-- entries grouped by entry[field] (a key), in order of first appearance: {{key =, at = {i, ...}}, ...}
local function by_key(entries, field)
  local groups, index = {}, {}
  for i, e in ipairs(entries) do
    local key = e[field]
    local g = index[key]
    if not g then
      g = {key = key, at = {}}
      index[key] = g
      groups[#groups + 1] = g
    end
    g.at[#g.at + 1] = i
  end
  return groups
end

-- Risk counters fire when they cross the threshold in this batch: once per user and window. Each
-- user is in one entry per window (key), each product once in an entry. Counters are raised a key
-- at a time with increment (HMGET + HSET), not an HINCRBY each.
local velocity = w.order_velocity
local counts, ordered = velocity.counts, {}  -- ordered[i]: entry i's counter after this batch
for _, g in ipairs(by_key(counts, 'key')) do
  local d = {}
  for _, i in ipairs(g.at) do d[#d + 1] = counts[i].user d[#d + 1] = counts[i].n end
  local e = {key = g.key, deltas = d, ttl = counts[g.at[1]].ttl}
  for k, v in ipairs(increment(e, 'HMGET', 'HSET', false)) do ordered[g.at[k]] = v end
end
for i, c in ipairs(counts) do
  local v = ordered[i]
  if v - c.n <= velocity.threshold and v > velocity.threshold then
    fire(velocity.rule, c.user, c.window_start, c.window_end, velocity.threshold, v)
  end
end
local spree = w.cart_spree
local adds, added = spree.adds, {}  -- added[i]: products new to entry i's user and window
for _, g in ipairs(by_key(adds, 'pairs_key')) do
  local fields, owner = {}, {}  -- as HSETNX pairs_key user|product 1, every product of every entry
  for _, i in ipairs(g.at) do
    added[i] = 0
    for _, product in ipairs(adds[i].products) do
      fields[#fields + 1] = adds[i].user .. '|' .. product
      owner[#fields] = i
    end
  end
  local n, p = #fields, 1
  while p <= n do
    local q = math.min(p + 998, n)
    local now, new = call('HMGET', g.key, unpack(fields, p, q)), {}
    for k = p, q do
      if not now[k - p + 1] then
        added[owner[k]] = added[owner[k]] + 1
        new[#new + 1] = fields[k]
        new[#new + 1] = 1
      end
    end
    if #new > 0 then call('HSET', g.key, unpack(new)) end
    p = q + 1
  end
  call('EXPIRE', g.key, adds[g.at[1]].ttl)
end
local grown, grown_by = {}, {}  -- the entries with new products, and how many
for i = 1, #adds do
  if added[i] > 0 then
    grown[#grown + 1] = adds[i]
    grown_by[#grown] = added[i]
  end
end
local totals = {}  -- totals[entry]: its user's distinct products in the window after this batch
for _, g in ipairs(by_key(grown, 'counts_key')) do
  local d = {}
  for _, j in ipairs(g.at) do d[#d + 1] = grown[j].user d[#d + 1] = grown_by[j] end
  local e = {key = g.key, deltas = d, ttl = grown[g.at[1]].ttl}
  for k, v in ipairs(increment(e, 'HMGET', 'HSET', false)) do totals[grown[g.at[k]]] = v end
end
for i, a in ipairs(adds) do
  local v, n = totals[a], added[i]
  if n > 0 and v - n <= spree.threshold and v > spree.threshold then
    fire(spree.rule, a.user, a.window_start, a.window_end, spree.threshold, v)
  end
end

for _, m in ipairs(w.dead_letters) do
  call('XADD', outbox, '*', 't', m.topic, 'k', m.key, 'v', m.value, 'r', m.reason)
end
return fired
