-- Signed-in reads for wrk: every request carries the next reader's token, as a RealWorld front-end
-- sends it once signed in ("Authorization: Token <jwt>"), so the server checks a different user's
-- token and lays a different user's favourites and follows over its cached answer each time.
--
-- The bench prepends one line that names the token file (one token a line):
--   tokens_file = "/tmp/…/tokens.txt"
-- Method and path are wrk's own (the URL on the command line). Each wrk thread builds one request a
-- token in init(), then request() only hands the next one out; threads start at different tokens.

local requests = {}
local next_one = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("offset", (threads - 1) * 7919)
end

function init(args)
  assert(tokens_file, "tokens_file is not set")
  for token in io.lines(tokens_file) do
    if #token > 0 then
      requests[#requests + 1] = wrk.format(nil, nil, {["Authorization"] = "Token " .. token})
    end
  end
  assert(#requests > 0, "no tokens in " .. tokens_file)
  next_one = (offset or 0) % #requests
end

function request()
  next_one = next_one % #requests + 1
  return requests[next_one]
end
