// Helpers shared by the service's translation units. Private to src/service.
#pragma once

#include <boost/json/object.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "core/time.h"
#include "domain/record.h"

namespace isoguard::service::detail {

// A random id: `prefix` then `chars` characters of Crockford's base32.
std::string RandomId(std::string_view prefix, size_t chars);
// The string member `key` of `o`, or "" when absent or not a string.
std::string Str(const boost::json::object& o, std::string_view key);
Result<boost::json::object> ParseObject(std::string_view text, std::string_view what);
// Store errors name "entries[i].x": renamed to the caller's "<prefix>[i-offset].x", or to
// "x" when `prefix` is empty.
Error RenameEntryField(Error e, std::string_view prefix, size_t offset);

// The authorizations of a patient's stream, read from its record (the contract JSON, where
// the service's authorization events keep their pharmacy and pharmacist).
struct StreamAuthorization {
  std::string id;
  std::string event_id;
  std::string prescription_id;
  std::string pharmacy_id;
  std::string pharmacist_id;
  Instant at{};
  Instant dispense_by{};
};

struct AuthorizationScan {
  std::vector<StreamAuthorization> authorizations;  // in the record's order
  std::set<std::string, std::less<>> reversed;      // authorization ids
  std::set<std::string, std::less<>> dispensed;     // authorization ids
  std::set<std::string, std::less<>> dispensed_prescriptions;
  std::set<std::string, std::less<>> withdrawn;  // event ids named by entered_in_error
  // Each prescription_cancel: its own event id and the prescription it names.
  std::vector<std::pair<std::string, std::string>> cancels;

  bool IsClosed(const StreamAuthorization& a) const;
  const StreamAuthorization* Find(std::string_view id) const;
  // The authorization of the prescription that is neither reversed nor dispensed.
  const StreamAuthorization* OpenFor(std::string_view prescription) const;
  // The prescription's authorizations that ended without a dispense (reversed or withdrawn):
  // the count that keys the next authorization's idempotency.
  int ReversalsFor(std::string_view prescription) const;
  // Cancelled (by a cancel not itself withdrawn) or entered in error: never to be dispensed.
  bool PrescriptionVoid(std::string_view prescription) const;
};

AuthorizationScan ScanAuthorizations(std::string_view record_json);
// The same from the parsed record, without the pharmacy and pharmacist of each authorization
// (fields the record format does not read): the fast path of a decision.
AuthorizationScan ScanAuthorizations(const Record& record);

// The service's halt: true when the latest pregnancy test at or before `now` is positive, or
// when any positive test is recorded with a later time (a collection time ahead of the
// service's clock halts as well; a later negative does not lift an earlier positive). Tests
// withdrawn by a correction at or before `now`, and invalid results, do not count.
bool PregnancyHalt(const Record& record, Instant now);

}  // namespace isoguard::service::detail
