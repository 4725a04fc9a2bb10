// What a PreparedAppend holds (sqlite_event_store.h): the rows of a new stream, sealed and
// hashed, and its sealed state, made by PrepareRecord on the caller's thread and inserted by
// the writer. Private to the SQLite backend.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/entry_codec.h"
#include "store/event_store.h"
#include "store/sqlite/sqlite_event_store.h"

namespace isoguard::store {

// One entry: every column but the position (the writer's) and those shared by the append.
struct PreparedRow {
  int64_t version = 0;
  std::string event_id;
  std::string type;
  std::string payload;
  Hash prev_hash{};
  Hash hash{};
};

struct PreparedAppend::Data {
  std::string patient_id;
  Actor actor;
  std::string idempotency_key;
  int64_t recorded_at_ms = 0;
  PatientKey key;
  std::vector<PreparedRow> rows;  // versions 1..N, chained from zeros
  std::string sealed_state;       // SealState of the whole stream, at version N
};

}  // namespace isoguard::store
