#!/usr/bin/env bash
# The CDS Hooks order-sign benchmark of docs/performance.md: `isoguard serve` on a fresh SQLite
# store with one clinic, one prescriber and a patient who is ready for a prescription, then wrk
# posts order-sign with a full prefetch (patient, weight, medications) at a paced 1,000
# requests/s (bench/http/order_sign.lua) and prints the rate and the latency percentiles.
#   bench/http/order_sign.sh ISOGUARD_BINARY WORK_DIR [SECONDS] [CONNECTIONS] [RATE]
set -euo pipefail
isoguard=$(realpath "$1")
mkdir -p "$2"
work=$(cd "$2" && pwd)
seconds=${3:-20}
connections=${4:-10}
rate=${5:-1000}
port=${ISOGUARD_BENCH_PORT:-18091}
here=$(cd "$(dirname "$0")" && pwd)
db="sqlite:$work/order-sign.db"
rm -f "$work"/order-sign.db*
a() { "$isoguard" admin --db "$db" "$@"; }
a create-org --id clinic --kind clinic --jurisdiction US >/dev/null
a create-user --id dr --org clinic --role prescriber > "$work/dr.json"
token=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' "$work/dr.json")
"$isoguard" serve --db "$db" --listen "127.0.0.1:$port" --quiet > "$work/serve.out" 2> "$work/serve.err" &
server=$!
trap 'kill -TERM $server; wait $server || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
api() { curl -sf -X POST "http://127.0.0.1:$port$1" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$2" >/dev/null; }
now=$(date -u +%FT%TZ)
api /v1/patients '{"patient_id":"p-1","birth_date":"1995-03-02","jurisdiction":"US","category":"cannot_get_pregnant"}'
api /v1/patients/p-1/events '{"events":[
  {"type":"visit","at":"'"$now"'","counseled":true},
  {"type":"lab","at":"'"$now"'","test":"TG","value":120,"unit":"mg/dL"},
  {"type":"lab","at":"'"$now"'","test":"ALT","value":22,"unit":"U/L"},
  {"type":"phq9","at":"'"$now"'","items":[0,0,0,0,0,0,0,0,0]}]}'
cat > "$work/order-sign.json" <<JSON
{"hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","hook":"order-sign",
 "context":{"userId":"Practitioner/dr","patientId":"p-1","draftOrders":{"resourceType":"Bundle","entry":[
  {"resource":{"resourceType":"MedicationRequest","id":"draft-1","status":"draft","intent":"order",
   "medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"6064"}]},
   "subject":{"reference":"Patient/p-1"},
   "dosageInstruction":[{"timing":{"repeat":{"frequency":1,"period":1,"periodUnit":"d"}},"doseAndRate":[{"doseQuantity":{"value":60,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"}}]},
                        {"timing":{"repeat":{"frequency":1,"period":1,"periodUnit":"d"}},"doseAndRate":[{"doseQuantity":{"value":60,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"}}]}],
   "dispenseRequest":{"numberOfRepeatsAllowed":0,"expectedSupplyDuration":{"value":30,"unit":"days","system":"http://unitsofmeasure.org","code":"d"}}}}]}},
 "prefetch":{"patient":{"resourceType":"Patient","id":"p-1"},
  "weight":{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"Observation","status":"final",
   "code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},"subject":{"reference":"Patient/p-1"},
   "effectiveDateTime":"$now","valueQuantity":{"value":62,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}}}]},
  "medications":{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"MedicationRequest","status":"active","intent":"order",
   "medicationCodeableConcept":{"text":"Doxycycline 100 mg"},"subject":{"reference":"Patient/p-1"},"authoredOn":"$now"}}]}}}
JSON
# One call first: it must answer cards (the dose and the interaction).
curl -sf -X POST "http://127.0.0.1:$port/cds-services/isoguard-order-sign" -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' --data-binary @"$work/order-sign.json" | grep -o '"code":"[A-Z_]*"' | sort -u
BODY_FILE="$work/order-sign.json" TOKEN="$token" RATE="$rate" CONNECTIONS="$connections" \
  wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$here/order_sign.lua" "http://127.0.0.1:$port"
