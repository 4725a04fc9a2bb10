// The SQLite backend of the EventStore (event_store.h): the embedded default, one database
// file in WAL mode with synchronous=FULL (an acknowledged append survives power loss),
// foreign keys on and STRICT tables.
//
// Writes: every Append and ErasePatient is queued and applied by one writer thread, which
// commits whatever has queued up in one transaction (group commit: one fsync for the batch),
// each request inside its own savepoint so that a failing one is rolled back alone. A caller
// returns only after the commit that holds its request. The queue is bounded; callers wait for
// room. Reads (ReadStream, ReadAll, Verify, Backup) use a small pool of reader connections,
// each read in one transaction (a consistent snapshot); WAL lets them run beside the writer.
//
// Schema: versioned migrations run on open inside one transaction; PRAGMA user_version holds
// the version and application_id marks the file as isoguard's. A database whose version is
// newer than kSqliteSchemaVersion is refused, as is a file that holds other tables. Several
// processes may open the same file: the writers serialise on SQLite's write lock (the busy
// timeout bounds the wait) and every check is made inside the write transaction.
//
// Erasure: the key row is deleted with secure_delete on (its bytes are overwritten, not just
// unlinked) and the WAL is then checkpointed and truncated, so that no copy of the key is left
// in the database file or its WAL (a reader holding an old snapshot delays the truncation to
// a later batch). The audit row is written first; a trigger refuses any other key deletion.
//
// Thread safety: every method may be called from any number of threads at once. The
// destructor waits for queued requests to be committed; no call may be in progress or begin
// once it has started.
#pragma once

#include <memory>
#include <string>

#include "store/event_store.h"

namespace isoguard::store {

// The schema version this build creates and understands.
//   1: streams, entries, patient_keys, appends (idempotency).
//   2: audit (erasures), and the rule that a key is deleted only with its erasure recorded.
inline constexpr int kSqliteSchemaVersion = 2;
// PRAGMA application_id of an isoguard database: "ISOG".
inline constexpr int kSqliteApplicationId = 0x49534F47;

struct SqliteOptions {
  StoreOptions store;
  int busy_timeout_ms = 10000;        // waiting for another process's write lock
  size_t max_queued_requests = 1024;  // appends and erasures waiting for the writer
  size_t max_batch_requests = 1024;   // requests committed in one transaction
  size_t max_batch_entries = 20000;   // entries in one transaction (a larger request goes alone)
  size_t max_readers = 16;            // reader connections; more readers wait for one
};

class SqliteEventStore final : public EventStore {
 public:
  // Opens (creating if need be) the database at `path` and migrates it to
  // kSqliteSchemaVersion. kBadInput for a newer schema or a file that is not isoguard's.
  static Result<std::unique_ptr<SqliteEventStore>> Open(const std::string& path,
                                                        const SqliteOptions& options = {});
  ~SqliteEventStore() override;
  SqliteEventStore(const SqliteEventStore&) = delete;
  SqliteEventStore& operator=(const SqliteEventStore&) = delete;

  Result<AppendResult> Append(const AppendRequest& request) override;
  Result<Stream> ReadStream(const std::string& patient_id) override;
  Result<std::vector<StoredEntry>> ReadAll(int64_t after, size_t limit) override;
  Result<VerifyReport> Verify() override;
  Status ErasePatient(const std::string& patient_id, const Actor& actor) override;
  Status Backup(const std::string& path) override;

  struct Impl;

 private:
  explicit SqliteEventStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace isoguard::store
