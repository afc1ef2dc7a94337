-- wrk script: replays pre-signed generic webhooks, one unique event per request.
-- The request file (one "timestamp<TAB>signature<TAB>body" per line) is written by
-- bench.py; thread k of n sends lines k, k+n, k+2n, ... so no two requests repeat.
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("BENCH_REQUESTS")
  local n = tonumber(os.getenv("BENCH_THREADS"))
  reqs = {}
  local i = 0
  for line in io.lines(path) do
    if i % n == id then
      local ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", "/v1/webhooks/generic", {
        ["Content-Type"] = "application/json",
        ["X-Timestamp"] = ts,
        ["X-Signature"] = sig,
      }, body)
    end
    i = i + 1
  end
  idx = 0
end

function request()
  idx = idx + 1
  if idx > #reqs then idx = 1 end
  return reqs[idx]
end
