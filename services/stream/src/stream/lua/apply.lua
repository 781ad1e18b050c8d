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
local call, fired, expiring = redis.call, {}, {}

-- cmd key m1 m2 ..., at most 1,000 members a call: Lua's unpack has a bounded stack.
local function chunked(cmd, key, members)
  local n, i = #members, 1
  while i <= n do
    local j = math.min(i + 999, n)
    call(cmd, key, unpack(members, i, j))
    i = j + 1
  end
end

local function expire_once(key, ttl)  -- risk keys recur across a batch's users: one EXPIRE each
  if not expiring[key] then call('EXPIRE', key, ttl) expiring[key] = true end
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

-- deltas = {member, n, member, n, ...}: one read and one write per 999 members.
local function increment(e, read, write, score_first)
  local key, d = e.key, e.deltas
  local n, i = #d, 1
  while i <= n do
    local j = math.min(i + 1997, n)
    local names = {}
    for k = i, j, 2 do names[#names + 1] = d[k] end
    local now, args = call(read, key, unpack(names)), {}
    for k = 1, #names do
      local v = (tonumber(now[k]) or 0) + d[i + 2 * k - 1]
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
end

for _, e in ipairs(w.hashes) do increment(e, 'HMGET', 'HSET', false) end
for _, e in ipairs(w.sorted_sets) do increment(e, 'ZMSCORE', 'ZADD', true) end
for _, e in ipairs(w.hyperloglogs) do chunked('PFADD', e.key, e.members) call('EXPIRE', e.key, e.ttl) end
for _, e in ipairs(w.seen) do chunked('SADD', e.key, e.members) call('EXPIRE', e.key, e.ttl) end
for _, e in ipairs(w.sessions) do chunked('HSET', e.key, e.members) call('EXPIRE', e.key, e.ttl) end
for _, c in ipairs(w.checkpoints) do call('SET', c.key, c.value) end
if w.newest.ts > tonumber(call('GET', w.newest.key) or '0') then call('SET', w.newest.key, w.newest.ts) end

-- Risk counters fire when they cross the threshold in this batch: once per user and window.
local velocity = w.order_velocity
for _, c in ipairs(velocity.counts) do
  local v = call('HINCRBY', c.key, c.user, c.n)
  expire_once(c.key, c.ttl)
  if v - c.n <= velocity.threshold and v > velocity.threshold then
    fire(velocity.rule, c.user, c.window_start, c.window_end, velocity.threshold, v)
  end
end
local spree = w.cart_spree
for _, a in ipairs(spree.adds) do
  local added = 0  -- products new to this user and window
  for _, product in ipairs(a.products) do added = added + call('HSETNX', a.pairs_key, a.user .. '|' .. product, 1) end
  expire_once(a.pairs_key, a.ttl)
  if added > 0 then
    local v = call('HINCRBY', a.counts_key, a.user, added)
    expire_once(a.counts_key, a.ttl)
    if v - added <= spree.threshold and v > spree.threshold then
      fire(spree.rule, a.user, a.window_start, a.window_end, spree.threshold, v)
    end
  end
end

for _, m in ipairs(w.dead_letters) do
  call('XADD', outbox, '*', 't', m.topic, 'k', m.key, 'v', m.value, 'r', m.reason)
end
return fired
