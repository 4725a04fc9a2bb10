// The SQLite backend of the EventStore (event_store.h): the embedded default, one database
// file in WAL mode with synchronous=FULL (an acknowledged append survives power loss),
// foreign keys on and STRICT tables.
//
// Writes: every Append and ErasePatient is queued and applied by one writer thread, which
// commits whatever has queued up in one transaction (group commit: one fsync for the batch),
// each request inside its own savepoint so that a failing one is rolled back alone. A caller
// returns only after the commit that holds its request. The queue is bounded; callers wait for
// room. Reads (ReadStream, ReadState, ReadAll, Verify, Backup) use a small pool of reader
// connections, each read in one transaction (a consistent snapshot); WAL lets them run beside
// the writer.
//
// Projections: each patient has one state row (projection.h), a snapshot of the stream folded
// up to the row's version. Appends fold their entries into the state in their own savepoint
// and rewrite the row once 16 entries stand behind it (an eighth of the stream for a long one,
// at most 128): rewriting the whole sealed state at every append made an append's cost grow
// with its stream. ReadState reads the row and folds in the entries after it, each checked, in
// one read transaction, so a read never sees a state behind the log. RebuildProjections
// recomputes the rows from the log in batches of patients, each batch one write transaction
// of the writer (appends interleave between batches); a row is correct when it matches the log
// folded up to its own version.
//
// Bulk import: PrepareRecord turns a record of the contract format into the first append of a
// new stream on the calling thread -- the record checked once with the engine's parser, its
// entries sealed and hashed, its state folded and sealed -- so that the writer only inserts
// rows. AppendPrepared submits many at once, to be committed in large transactions. During an
// import (BulkImportScope) the writer uses a rollback journal instead of the WAL when the file
// is its alone, so that each page is written once rather than to the WAL and again by the
// checkpoint; the file is back in WAL when the scope ends, or at the next open after a crash.
//
// Rows: a stream has an integer id (streams.id) that keys its entries, so that the entries'
// index inserts of new streams land at the right edge of their B-trees; what an append's entries
// share (time, actor, idempotency key) is one `commits` row. The view entry_rows joins them back
// into the columns that EntryHash hashes, identical on both backends.
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
#include <string_view>
#include <vector>

#include "store/event_store.h"

namespace isoguard::store {

// The schema version this build creates and understands.
//   1: streams, entries, patient_keys, appends (idempotency).
//   2: audit (erasures), and the rule that a key is deleted only with its erasure recorded.
//   3: patient_state (projections), built for the existing streams by the migration.
//   4: integer stream ids (streams.id) keying entries; one `commits` row per append holding
//      what its entries share (recorded_at, actor, idempotency key), replacing `appends`; the
//      view entry_rows gives an entry's columns as version 3 stored them.
inline constexpr int kSqliteSchemaVersion = 4;
// PRAGMA application_id of an isoguard database: "ISOG".
inline constexpr int kSqliteApplicationId = 0x49534F47;

struct SqliteOptions {
  StoreOptions store;
  int busy_timeout_ms = 10000;        // waiting for another process's write lock
  size_t max_queued_requests = 1024;  // appends and erasures waiting for the writer
  size_t max_batch_requests = 1024;   // requests committed in one transaction
  size_t max_batch_entries = 20000;   // entries in one transaction (a larger request goes alone)
  size_t max_readers = 16;            // reader connections; more readers wait for one
  // SQLite's page cache per connection (PRAGMA cache_size) and memory-mapped reads
  // (PRAGMA mmap_size): reads of a large store then copy pages from the OS cache rather than
  // issue a read call each.
  int64_t cache_size_kib = 64 * 1024;
  int64_t mmap_size_bytes = int64_t{16} << 30;
  size_t max_rebuild_patients = 128;  // patients rebuilt in one write transaction
};

// The first append of a new stream, prepared by SqliteEventStore::PrepareRecord: checked,
// sealed, hashed and its state folded, waiting only to be inserted. Move-only.
class PreparedAppend {
 public:
  struct Data;
  PreparedAppend();
  explicit PreparedAppend(std::unique_ptr<Data> data);
  ~PreparedAppend();
  PreparedAppend(PreparedAppend&&) noexcept;
  PreparedAppend& operator=(PreparedAppend&&) noexcept;

  const std::string& patient_id() const;  // empty once moved from
  size_t entry_count() const;
  bool valid() const { return data_ != nullptr; }  // false once moved from
  Data& data() const { return *data_; }

 private:
  std::unique_ptr<Data> data_;
};

// What PrepareRecord makes of a record: the stream's actor and the idempotency key, which is
// `idempotency_key_prefix` followed by the patient id ("import:" -> "import:p-17").
struct RecordAppendOptions {
  Actor actor;
  std::string idempotency_key_prefix;
  ParseOptions parse;
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

  // Brings the backup at `backup_path` (a database file written by Backup) back as the
  // database at `path`: kBadInput (field "db") when `path` already holds data, (field
  // "backup") when the backup is missing or not an isoguard database. The copy is written
  // beside `path` and renamed into place once complete and synced, so a failed restore leaves
  // nothing behind. The caller then opens the store (running migrations) and verifies it.
  static Status Restore(const std::string& backup_path, const std::string& path,
                        const SqliteOptions& options);

  // A record of the contract format (one line of an import) as the first append of its
  // patient's stream: expected version 0, the patient entry (the record's patient object with
  // "type": "patient") then the events in file order. The record is checked once, exactly as
  // Append would check those entries (errors name the record's fields, "events[3].kg", as the
  // record parser does); the store's limits apply as to Append. Work of the calling thread
  // only: thread-safe, and needs no store.
  static Result<PreparedAppend> PrepareRecord(std::string_view record_json,
                                              const RecordAppendOptions& options);
  // Appends prepared streams; results in order, each as Append's. Each is all-or-nothing on
  // its own (one failing does not fail the others), and all are durable when this returns. A
  // stream that exists already is replayed when the idempotency key is the same, else a
  // kConflict as for Append with expected version 0.
  std::vector<Result<AppendResult>> AppendPrepared(std::vector<PreparedAppend>& appends);

  // Bulk import mode, for `isoguard import`: while the scope lives the writer uses a rollback
  // journal (journal_mode=PERSIST) instead of the WAL, so that each page is written once
  // rather than to the WAL and again by the checkpoint (PERSIST rather than TRUNCATE: the
  // journal's header is zeroed at each commit instead of the file being cut, 3% faster on the
  // 1,000,000-patient import; the journal is deleted when the file goes back to WAL. No
  // erasure passes through it: the importing process erases nothing, and another process
  // opening the file puts it back in WAL first). synchronous=FULL stays: every commit
  // is as durable as in WAL mode, and a crash leaves a hot journal that the next open rolls
  // back before it puts the file in WAL again. SQLite leaves WAL only when no other connection
  // has the file open: the scope closes the store's idle reader connections, and when a read
  // is in progress or another connection (another process) has the file, the store simply
  // stays in WAL. Reads during the scope work but wait for the writer's commits (and it for
  // them). The destructor puts the file back in WAL. One scope at a time.
  class BulkImportScope {
   public:
    explicit BulkImportScope(SqliteEventStore& store);
    ~BulkImportScope();
    BulkImportScope(const BulkImportScope&) = delete;
    BulkImportScope& operator=(const BulkImportScope&) = delete;
    // Whether the writer left WAL for the scope.
    bool rollback_journal() const { return rollback_journal_; }

   private:
    SqliteEventStore& store_;
    bool rollback_journal_ = false;
  };

  // The streams in the order they began (the position of each one's first entry), those
  // that began after `after_position`, at most min(limit, kMaxReadAllEntries): what export
  // walks, without reading the entries' payloads.
  struct StreamStart {
    int64_t position = 0;
    std::string patient_id;
  };
  Result<std::vector<StreamStart>> ListStreams(int64_t after_position, size_t limit);

  Result<AppendResult> Append(const AppendRequest& request) override;
  Result<Stream> ReadStream(const std::string& patient_id) override;
  Result<std::vector<StoredEntry>> ReadAll(int64_t after, size_t limit) override;
  Result<PatientState> ReadState(const std::string& patient_id) override;
  Result<std::vector<StreamVersion>> ReadVersions(
      const std::vector<std::string>& patient_ids) override;
  Result<RebuildReport> RebuildProjections() override;
  Result<VerifyReport> Verify() override;
  Status ErasePatient(const std::string& patient_id, const Actor& actor) override;
  Status Backup(const std::string& path) override;

  struct Impl;

 private:
  explicit SqliteEventStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace isoguard::store
