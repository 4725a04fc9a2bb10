// Projections: each patient's current state, folded from the stream. Every backend keeps one
// state row per patient, written in the transaction of the append that makes the stream, and
// can rebuild every row from the log. A backend may let the row fall a few entries behind the
// stream (SQLite rewrites it once 16 entries stand behind it, so that an append does not re-seal
// a whole long record; PostgreSQL rewrites it with every append); a read then folds the newer
// entries into it, in the same read transaction, so a state read is never behind the log.
//
// A state is the stream as a record of the contract format: the latest patient entry (without
// its "type") and the events in version order, exactly as stored. Kept as its two parts so that
// an append extends it without reading the stream again; sealed under the patient's key like
// the entries, so that erasing the patient makes it unreadable too.
//
// Thread safety: free functions on values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "store/entry_codec.h"

namespace isoguard::store {

struct StateText {
  std::string patient;      // the record's "patient" object; empty before the first entry
  std::string events;       // the events' JSON objects in version order, joined by ","
  int64_t event_count = 0;  // how many objects `events` holds
};

// Folds one stored entry (its type and its JSON as stored, in version order) into the state:
// a patient entry replaces the patient object (its "type" removed), an event is appended.
// kInternal when a patient entry is not a JSON object.
Status FoldEntry(StateText& state, std::string_view type, std::string_view stored_json);

// Whether `adding` more events fit the record of `state` (the record format's limit on events:
// a stream past it could no longer be read as a record). kBadInput naming "entries" otherwise.
Status CheckRecordRoom(const StateText& state, size_t adding, const RecordLimits& limits);

// The ids of a ReadVersions call: at most kMaxVersionsPerRead, each at most kMaxPatientIdBytes.
// kBadInput naming "patient_ids" otherwise.
Status CheckVersionsRequest(const std::vector<std::string>& patient_ids);

// The record: {"patient":{...},"events":[...]}. kNotFound when the state has no patient yet.
Result<std::string> StateRecordJson(const StateText& state);

// A state sealed for storage under the patient's key (XChaCha20-Poly1305). Its format byte and
// associated data ("isoguard.state.v1", the patient id, the version) differ from an entry's, so
// a state never opens as an entry nor an entry as a state, nor one patient's or version's
// state as another's.
std::string SealState(const PatientKey& key, std::string_view patient_id, int64_t version,
                      const StateText& state);
// kInternal when the blob does not open with this key, patient id and version, or is not a state.
Result<StateText> OpenState(const PatientKey& key, std::string_view patient_id, int64_t version,
                            std::string_view sealed);

}  // namespace isoguard::store
