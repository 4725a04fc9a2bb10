// Parses a record in the contract's JSON format, checking every field and limit.
//
// A malformed record gives ErrorKind::kBadInput with the field at fault
// ("events[3].kg", "patient.birth_date") and a message that says what is wrong.
#pragma once

#include <functional>
#include <string_view>

#include "core/result.h"
#include "domain/record.h"

namespace boost::json {
class object;
}

namespace isoguard {

struct RecordLimits {
  size_t max_bytes = 10 * 1024 * 1024;  // 10 MiB
  size_t max_events = 10000;
  size_t max_string_chars = 1000;
  double max_kg = 500;
  double max_dose_mg = 200;
  size_t max_doses = 4;
  int32_t min_days_supply = 1;
  int32_t max_days_supply = 365;
  int32_t max_refills = 12;
};

struct ParseOptions {
  RecordLimits limits;
  // Whether `enrollment.program` names a known program; null accepts any.
  std::function<bool(std::string_view)> is_known_program;
};

Result<Record> ParseRecord(std::string_view json, const ParseOptions& options);
// The same from an already-parsed JSON object (used by batch and, later, the service).
Result<Record> ParseRecordObject(const boost::json::object& object, const ParseOptions& options);

// One part of a record in JSON text, checked exactly as ParseRecord checks it: the patient
// object (errors name "patient.birth_date"), or one event (`index` names it in errors:
// "events[3].kg"). For the event store, which validates a record one entry at a time; the
// checks across events (unique ids, a dispense naming a prescription) are the caller's.
Result<Patient> ParsePatientJson(std::string_view json, const RecordLimits& limits);
Result<Event> ParseEventJson(std::string_view json, size_t index, const ParseOptions& options);

}  // namespace isoguard
