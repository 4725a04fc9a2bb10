-- wrk script: read-only requests of a pharmacist, for comparison with authorize.lua under the
-- same settings. ROUTE=me: GET /v1/me (the token and an audit record, no patient data);
-- ROUTE=pharmacy-view: GET /v1/patients/{id}/pharmacy-view for the patients of PAIRS_FILE in
-- turn (the record read, parsed and evaluated, nothing written but the audit record).
local route = os.getenv("ROUTE")
local token = os.getenv("TOKEN")
local patients = {}
for line in io.lines(os.getenv("PAIRS_FILE")) do
  local patient = line:match("^(%S+)")
  if patient then patients[#patients + 1] = patient end
end

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  stride = tonumber(os.getenv("THREADS") or "2")
  next_index = id
end

function request()
  local path = "/v1/me"
  if route == "pharmacy-view" then
    path = "/v1/patients/" .. patients[((next_index - 1) % #patients) + 1] .. "/pharmacy-view"
    next_index = next_index + stride
  end
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end
