-- wrk script: POST /v1/authorizations for the (patient, prescription) pairs of PAIRS_FILE, each
-- wrk thread taking every Nth pair, so that every request is a fresh decision until the list
-- runs out (then the same pharmacy gets its existing authorization back). TOKEN: a pharmacist.
local pairs_file = os.getenv("PAIRS_FILE")
local token = os.getenv("TOKEN")
local list = {}
for line in io.lines(pairs_file) do
  local patient, rx = line:match("^(%S+)%s+(%S+)$")
  if patient then list[#list + 1] = {patient, rx} end
end

local threads = {}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  stride = tonumber(os.getenv("THREADS") or "2")
  next_index = id
  statuses = {}
end

function request()
  local p = list[((next_index - 1) % #list) + 1]
  next_index = next_index + stride
  local body = '{"patient_id":"' .. p[1] .. '","prescription_id":"' .. p[2] .. '"}'
  return wrk.format("POST", "/v1/authorizations",
                    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"},
                    body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("pairs: %d\n", #list))
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for code, n in pairs(s) do total[code] = (total[code] or 0) + n end
  end
  for code, n in pairs(total) do io.write(string.format("status %d: %d\n", code, n)) end
end
