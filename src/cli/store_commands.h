// The event store commands: `isoguard import`, `export` and `verify` (README, "Event store").
//
// import: each NDJSON line is a record in the contract format; it becomes one stream, its
//   patient entry followed by its events in file order, written in one append with expected
//   version 0 and the idempotency key "import:<patient id>". A re-run (after a crash, say)
//   therefore writes only what is missing: a record already imported is replayed by the store
//   and counted as already present. Into SQLite, each record is checked once by the record
//   parser and sealed on a worker thread (SqliteEventStore::PrepareRecord), and groups of
//   records are appended at once (AppendPrepared), so that the writer only inserts and commits
//   large transactions; into another store, several appends are in flight at once so that the
//   store's group commit shares fsyncs between them.
// export: every stream back as a record, one line per patient, in the order of the streams'
//   first entries in the log (their global position), so that the output streams without
//   holding the store in memory. From SQLite, each record is the patient's state (ReadState,
//   one row); from another store, the stream read whole.
// verify: EventStore::Verify as a JSON report.
//
// Thread safety: each function may run beside others with different options.
#pragma once

#include <iosfwd>
#include <string>

#include "domain/record_parser.h"

namespace isoguard {

inline constexpr const char* kDefaultDb = "isoguard.db";

struct ImportOptions {
  std::string path;  // the NDJSON file
  std::string db = kDefaultDb;
  // Validate every line first and write nothing if any is bad.
  bool atomic = false;
  // How records are checked (the CLI names the rulebook's programs); the store checks the same.
  ParseOptions parse;
  unsigned threads = 16;  // appends in flight at once
  bool progress = false;  // a progress line on `err` (the CLI sets it when stderr is a TTY)
};

// Exit code: 0 when every line was imported or already present, 2 when a line failed (each is
// reported on `err` with its line number) or the file cannot be read, 1 when the store cannot
// be opened for an internal reason.
int RunImport(const ImportOptions& options, std::ostream& err);

// Writes every stream as an NDJSON record. Exit code 0, or 1/2 when the store fails or is
// missing. An erased patient's stream cannot be read back: it is named on `err` and skipped.
int RunExport(const std::string& db, std::ostream& out, std::ostream& err);

// Prints {"entries_checked", "streams_checked", "ok", "first_problem"}. Exit code 0 when the
// store is clean, 1 when a problem was found (or the walk failed), 2 when there is no store.
int RunVerify(const std::string& db, std::ostream& out, std::ostream& err);

}  // namespace isoguard
