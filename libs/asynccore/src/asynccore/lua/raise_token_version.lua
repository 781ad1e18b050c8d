-- Raise a user's published token version, never lower it: two password changes published out of
-- order must leave the newer one standing.
-- KEYS[1]: the user's version key; ARGV[1]: JSON {"version": int, "ttl_ms": int}.
local args = cjson.decode(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if args.version > current then
  redis.call('SET', KEYS[1], args.version, 'PX', args.ttl_ms)
  return args.version
end
return current
