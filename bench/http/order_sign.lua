-- wrk script: the CDS Hooks order-sign service with a full prefetch, at a fixed rate. BODY_FILE
-- is the request (as an EHR sends it), TOKEN the prescriber's API token, RATE the total
-- requests per second wanted over all connections (default 1000): each connection waits
-- connections/RATE seconds before each request, so that the load is paced rather than
-- as fast as possible (Debian's wrk has no -R).
local body_file = os.getenv("BODY_FILE")
local token = os.getenv("TOKEN")
local rate = tonumber(os.getenv("RATE") or "1000")
local body = io.open(body_file):read("*a")

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  connections = tonumber(os.getenv("CONNECTIONS") or "10")
  wait_ms = connections * 1000 / rate
  statuses = {}
end

function delay()
  return wait_ms
end

function request()
  return wrk.format("POST", "/cds-services/isoguard-order-sign",
                    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"},
                    body)
end

function response(status, headers, response_body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for code, n in pairs(s) do total[code] = (total[code] or 0) + n end
  end
  for code, n in pairs(total) do io.write(string.format("status %d: %d\n", code, n)) end
  io.write(string.format("rate: %.0f req/s\n", summary.requests / (summary.duration / 1e6)))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("p%g: %.2f ms\n", p, latency:percentile(p) / 1000))
  end
end
