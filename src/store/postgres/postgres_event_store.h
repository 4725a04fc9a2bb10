// The PostgreSQL backend of the EventStore (event_store.h), through libpq: the same rows as the
// SQLite backend (entry_codec.h makes them byte for byte the same payloads and hashes) in a
// schema of their own, `isoguard`, so that the store can share a database with other
// applications.
//
// Writes: every Append and ErasePatient is queued and applied by one writer thread on one
// connection, which takes whatever has queued up and applies it in one transaction (group
// commit: one WAL flush for the batch), each request inside its own savepoint so that a failing
// one is rolled back alone. The round trips are per batch, not per request: the lookups of the
// batch's requests go in one pipeline (libpq's pipeline mode), the writes (one statement per
// request) in another. A caller returns only after the commit that holds its request;
// synchronous_commit stays on (the server's default), so an acknowledged append is on disk.
// The queue is bounded; callers wait for room.
//
// The global position: every write transaction first locks the single row of `log_head` and
// takes the next positions from it. Writers of any number of processes therefore commit one
// after the other, and positions are gap-free and increasing in commit order: a reader whose
// snapshot holds position P holds every position before it, which a sequence could not promise
// (a transaction that took a smaller number may commit later). ReadAll(after, limit) relies on
// it. The cost is one writer transaction at a time per database, which group commit amortises;
// docs/scaling.md says what replaces it when the log is distributed.
//
// Reads: a small pool of reader connections. A read of one stream, one state or one page of
// the log is a single statement (one snapshot); Verify runs in a REPEATABLE READ READ ONLY
// transaction and walks the log through a cursor.
//
// Schema: versioned migrations run on open in one transaction, under an advisory lock (several
// processes may open the store at once); isoguard.schema_version holds the version. A schema
// newer than kPostgresSchemaVersion is refused; an `isoguard` schema without that table is
// someone else's and refused too. Every table has patient_id, and every query but ReadAll's,
// Verify's and the rebuild's list of patients is by patient_id: the distribution key.
//
// Connections: a connection that was lost is re-established on the next request (the request
// that saw it fail gets kUnavailable when nothing was written, kInternal when its commit's
// outcome is unknown -- an append with an idempotency key may then be made again); with a
// multi-host URL and target_session_attrs=read-write libpq finds the new primary after a
// failover (tests/faults/postgres_failover_test.cpp). Error messages carry libpq's text but
// never the URL's password.
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
//   1: log_head, streams, entries, patient_keys, appends (idempotency); immutability triggers.
//   2: audit (erasures), and the rule that a key is deleted only with its erasure recorded.
//   3: patient_state (projections), filled from the log when an older store is upgraded.
inline constexpr int kPostgresSchemaVersion = 3;

struct PostgresOptions {
  StoreOptions store;
  size_t max_queued_requests = 1024;  // appends and erasures waiting for the writer
  size_t max_batch_requests = 1024;   // requests committed in one transaction
  size_t max_batch_entries = 20000;   // entries in one transaction (a larger request goes alone)
  size_t max_readers = 8;             // reader connections; more readers wait for one
  int connect_timeout_s = 10;         // unless the URL sets connect_timeout
};

class PostgresEventStore final : public EventStore {
 public:
  // Connects to the database `url` names ("postgresql://..." or "postgres://...", any libpq
  // URI) and migrates it to kPostgresSchemaVersion. kBadInput for a newer schema or an
  // `isoguard` schema that is not an event store; kInternal when the server cannot be reached.
  static Result<std::unique_ptr<PostgresEventStore>> Open(const std::string& url,
                                                          const PostgresOptions& options = {});
  // Loads `backup_path` (pg_dump's custom format, as Backup writes it) with pg_restore into the
  // database `url` names, which must not hold an `isoguard` schema yet (kBadInput otherwise),
  // in one transaction. Does not open or verify the store (RestoreEventStore does).
  static Status Restore(const std::string& backup_path, const std::string& url);

  ~PostgresEventStore() override;
  PostgresEventStore(const PostgresEventStore&) = delete;
  PostgresEventStore& operator=(const PostgresEventStore&) = delete;

  Result<AppendResult> Append(const AppendRequest& request) override;
  Result<Stream> ReadStream(const std::string& patient_id) override;
  Result<std::vector<StoredEntry>> ReadAll(int64_t after, size_t limit) override;
  Result<PatientState> ReadState(const std::string& patient_id) override;
  Result<std::vector<StreamVersion>> ReadVersions(
      const std::vector<std::string>& patient_ids) override;
  Result<RebuildReport> RebuildProjections() override;
  Result<VerifyReport> Verify() override;
  Status ErasePatient(const std::string& patient_id, const Actor& actor) override;
  // pg_dump --format=custom of the isoguard schema: one consistent snapshot, writers go on.
  Status Backup(const std::string& path) override;

  struct Impl;

 private:
  explicit PostgresEventStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The URL with its password (in the user-info part or a password= parameter) replaced by
// "***", for messages and logs.
std::string RedactedPostgresUrl(const std::string& url);

}  // namespace isoguard::store
