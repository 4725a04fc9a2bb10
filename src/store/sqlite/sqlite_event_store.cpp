#include "store/sqlite/sqlite_event_store.h"

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "store/detail/group_commit.h"
#include "store/entry_codec.h"
#include "store/projection.h"
#include "store/sqlite/busy_wait.h"
#include "store/sqlite/prepared_append.h"

namespace isoguard::store {
namespace {

// ===========================================================================================
// The schema, one migration per version. A migration never changes: a database at version N
// was made by exactly migrations 1..N, and a newer build upgrades it by running the rest.
// ===========================================================================================

// Version 1: the log. Every query is by patient_id (the future distribution key): a stream is
// found by the unique (patient_id, version) key, which identifies an entry. The rows themselves
// are kept in `position` order (the rowid): the global log for ReadAll, and the cheapest order
// to write -- a batch's rows share the last page instead of dirtying one page per patient, which
// measured a third fewer WAL pages per commit than clustering the rows by (patient_id, version).
// A stream written in one append (an import) is contiguous either way. Entries cannot be
// updated or deleted (triggers), whatever a client of the file tries.
constexpr const char* kMigration1 = R"sql(
CREATE TABLE streams (
  patient_id TEXT NOT NULL PRIMARY KEY,
  created_at_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE entries (
  position INTEGER PRIMARY KEY,
  patient_id TEXT NOT NULL REFERENCES streams (patient_id),
  version INTEGER NOT NULL CHECK (version >= 1),
  event_id TEXT NOT NULL,
  type TEXT NOT NULL,
  payload BLOB NOT NULL,
  recorded_at_ms INTEGER NOT NULL,
  actor_id TEXT NOT NULL,
  actor_role TEXT NOT NULL,
  actor_source TEXT NOT NULL,
  idempotency_key TEXT,
  prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
  hash BLOB NOT NULL CHECK (length(hash) = 32),
  UNIQUE (patient_id, version),
  UNIQUE (patient_id, event_id)
) STRICT;

CREATE TRIGGER entries_are_never_updated BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'entries are immutable: append a correction instead'); END;
CREATE TRIGGER entries_are_never_deleted BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'entries are immutable: erase a patient by destroying the key'); END;

CREATE TABLE patient_keys (
  patient_id TEXT NOT NULL PRIMARY KEY REFERENCES streams (patient_id),
  key BLOB NOT NULL CHECK (length(key) = 32),
  created_at_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE appends (
  patient_id TEXT NOT NULL REFERENCES streams (patient_id),
  idempotency_key TEXT NOT NULL,
  first_version INTEGER NOT NULL,
  last_version INTEGER NOT NULL,
  PRIMARY KEY (patient_id, idempotency_key)
) STRICT, WITHOUT ROWID;
)sql";

// Version 2: erasures are audited. The key row is the only thing ever deleted (crypto-
// shredding: deleting it is what makes the payloads unreadable), and only with its erasure
// recorded first.
constexpr const char* kMigration2 = R"sql(
CREATE TABLE audit (
  id INTEGER PRIMARY KEY,
  action TEXT NOT NULL CHECK (action IN ('erasure')),
  patient_id TEXT NOT NULL REFERENCES streams (patient_id),
  actor_id TEXT NOT NULL,
  actor_role TEXT NOT NULL,
  actor_source TEXT NOT NULL,
  at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_by_patient ON audit (patient_id);

CREATE TRIGGER audit_is_never_updated BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
CREATE TRIGGER audit_is_never_deleted BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;

CREATE TRIGGER keys_are_deleted_only_by_erasure BEFORE DELETE ON patient_keys
WHEN NOT EXISTS (SELECT 1 FROM audit WHERE audit.patient_id = OLD.patient_id
                                       AND audit.action = 'erasure')
BEGIN SELECT RAISE(ABORT, 'a patient key is deleted only by a recorded erasure'); END;
)sql";

// Version 3: projections. One row per patient: the stream folded into its current state
// (projection.h), sealed under the patient's key, as of `version` (whose entry is at
// `position`). Written in the transaction of every append; the migration builds the rows of
// the streams already in the file (BuildStates). A rowid table: the sealed state is a few
// kilobytes, too large for a WITHOUT ROWID row.
constexpr const char* kMigration3 = R"sql(
CREATE TABLE patient_state (
  patient_id TEXT NOT NULL PRIMARY KEY REFERENCES streams (patient_id),
  version INTEGER NOT NULL CHECK (version >= 1),
  position INTEGER NOT NULL,
  state BLOB NOT NULL
) STRICT;
)sql";

// Version 4: integer stream ids, and one row per append. The entries of a stream are keyed
// by its integer id rather than by the patient id's text: streams are created in order, so the
// (stream, version) and (stream, event_id) index inserts of an import land at the right edge of
// their B-trees instead of at places spread by the text; and what every entry of an append
// shares (when, by whom, the idempotency key) is written once, in `commits`, which replaces
// `appends` for the replay of an idempotency key. The bytes hashed do not change (EntryHash):
// `entry_rows` joins the three tables back into the columns of version 3, the row every read
// and check works with. The migration rebuilds streams and entries as SQLite documents
// (lang_altertable.html, "Making Other Kinds Of Table Schema Changes"): new tables, copy,
// drop, rename, with foreign keys off around the transaction (Migrate) and checked before it
// commits. patient_keys, patient_state and audit keep their patient ids, which now reference
// the UNIQUE streams.patient_id.
constexpr const char* kMigration4Tables = R"sql(
CREATE TABLE streams_v4 (
  id INTEGER PRIMARY KEY,
  patient_id TEXT NOT NULL UNIQUE,
  created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE commits (
  id INTEGER PRIMARY KEY,
  stream INTEGER NOT NULL REFERENCES streams (id),
  first_version INTEGER NOT NULL CHECK (first_version >= 1),
  last_version INTEGER NOT NULL CHECK (last_version >= first_version),
  recorded_at_ms INTEGER NOT NULL,
  actor_id TEXT NOT NULL,
  actor_role TEXT NOT NULL,
  actor_source TEXT NOT NULL,
  idempotency_key TEXT
) STRICT;
CREATE UNIQUE INDEX commits_by_idempotency_key ON commits (stream, idempotency_key)
WHERE idempotency_key IS NOT NULL;

CREATE TABLE entries_v4 (
  position INTEGER PRIMARY KEY,
  stream INTEGER NOT NULL REFERENCES streams (id),
  version INTEGER NOT NULL CHECK (version >= 1),
  event_id TEXT NOT NULL,
  type TEXT NOT NULL,
  payload BLOB NOT NULL,
  commit_id INTEGER NOT NULL REFERENCES commits (id),
  prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
  hash BLOB NOT NULL CHECK (length(hash) = 32),
  UNIQUE (stream, version),
  UNIQUE (stream, event_id)
) STRICT;

-- Streams numbered in the order they began.
INSERT INTO streams_v4 (patient_id, created_at_ms)
SELECT s.patient_id, s.created_at_ms FROM streams s
ORDER BY (SELECT min(e.position) FROM entries e WHERE e.patient_id = s.patient_id), s.patient_id;

-- One commit per keyed append, its metadata that of its first entry.
INSERT INTO commits (stream, first_version, last_version, recorded_at_ms, actor_id, actor_role,
                     actor_source, idempotency_key)
SELECT s.id, a.first_version, a.last_version, e.recorded_at_ms, e.actor_id, e.actor_role,
       e.actor_source, a.idempotency_key
FROM appends a JOIN streams_v4 s ON s.patient_id = a.patient_id
JOIN entries e ON e.patient_id = a.patient_id AND e.version = a.first_version
ORDER BY e.position;

-- Each entry's commit: the keyed append it belongs to when its own columns match it exactly.
CREATE TEMP TABLE entry_commit (position INTEGER PRIMARY KEY, commit_id INTEGER NOT NULL);
INSERT INTO temp.entry_commit (position, commit_id)
SELECT e.position, c.id
FROM entries e JOIN streams_v4 s ON s.patient_id = e.patient_id
JOIN commits c ON c.stream = s.id AND c.idempotency_key = e.idempotency_key
WHERE e.version BETWEEN c.first_version AND c.last_version
  AND c.recorded_at_ms = e.recorded_at_ms AND c.actor_id = e.actor_id
  AND c.actor_role = e.actor_role AND c.actor_source = e.actor_source;
)sql";

// Every other entry (unkeyed appends cannot be regrouped) gets a commit of its own, numbered
// after those made so far: ?1 stands for the largest commit id (MigrateTo4 writes it in).
constexpr const char* kMigration4OwnCommits = R"sql(
INSERT INTO temp.entry_commit (position, commit_id)
SELECT e.position, ?1 + e.position FROM entries e
WHERE e.position NOT IN (SELECT position FROM temp.entry_commit);
INSERT INTO commits (id, stream, first_version, last_version, recorded_at_ms, actor_id,
                     actor_role, actor_source, idempotency_key)
SELECT m.commit_id, s.id, e.version, e.version, e.recorded_at_ms, e.actor_id, e.actor_role,
       e.actor_source, e.idempotency_key
FROM temp.entry_commit m JOIN entries e ON e.position = m.position
JOIN streams_v4 s ON s.patient_id = e.patient_id
WHERE m.commit_id > ?1
ORDER BY m.position;
)sql";

constexpr const char* kMigration4Swap = R"sql(
INSERT INTO entries_v4 (position, stream, version, event_id, type, payload, commit_id,
                        prev_hash, hash)
SELECT e.position, s.id, e.version, e.event_id, e.type, e.payload, m.commit_id, e.prev_hash,
       e.hash
FROM entries e JOIN streams_v4 s ON s.patient_id = e.patient_id
JOIN temp.entry_commit m ON m.position = e.position
ORDER BY e.position;
DROP TABLE temp.entry_commit;

DROP TABLE appends;
DROP TABLE entries;
DROP TABLE streams;
ALTER TABLE streams_v4 RENAME TO streams;
ALTER TABLE entries_v4 RENAME TO entries;

CREATE TRIGGER entries_are_never_updated BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'entries are immutable: append a correction instead'); END;
CREATE TRIGGER entries_are_never_deleted BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'entries are immutable: erase a patient by destroying the key'); END;
CREATE TRIGGER commits_are_never_updated BEFORE UPDATE ON commits
BEGIN SELECT RAISE(ABORT, 'entries are immutable: append a correction instead'); END;
CREATE TRIGGER commits_are_never_deleted BEFORE DELETE ON commits
BEGIN SELECT RAISE(ABORT, 'entries are immutable: erase a patient by destroying the key'); END;

-- The columns of an entry as version 3 stored them (EntryHash hashes them), and the stream's id.
CREATE VIEW entry_rows AS
SELECT e.position AS position, s.patient_id AS patient_id, e.version AS version,
       e.event_id AS event_id, e.type AS type, e.payload AS payload,
       c.recorded_at_ms AS recorded_at_ms, c.actor_id AS actor_id, c.actor_role AS actor_role,
       c.actor_source AS actor_source, c.idempotency_key AS idempotency_key,
       e.prev_hash AS prev_hash, e.hash AS hash, e.stream AS stream
FROM entries e JOIN streams s ON s.id = e.stream JOIN commits c ON c.id = e.commit_id;
)sql";

// The migrations by version; version 4 is run in steps by MigrateTo4.
constexpr const char* kMigrations[] = {kMigration1, kMigration2, kMigration3, nullptr};
static_assert(std::size(kMigrations) == kSqliteSchemaVersion);

// An entry's columns, in the order ReadRow reads them: those of `entries` up to version 3, of
// the view `entry_rows` from version 4.
constexpr const char* kEntryColumns =
    "position, patient_id, version, event_id, type, payload, recorded_at_ms, actor_id, "
    "actor_role, actor_source, idempotency_key, prev_hash, hash";
// The columns of the `entries` table itself (version 4).
constexpr const char* kStoredColumns =
    "position, stream, version, event_id, type, payload, commit_id, prev_hash, hash";
constexpr int kStoredColumnCount = 9;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Shown(std::string_view s) {
  return "'" + std::string(s.substr(0, 60)) + (s.size() > 60 ? "...'" : "'");
}

// ===========================================================================================
// Thin RAII over the C API.
// ===========================================================================================

// True when the database's file system refuses writes now. SQLite reports a write to a file
// system that turned read-only under it (ext4 after a disk error) as a plain I/O error, its saved
// errno is not reliable, and statvfs need not say so either; opening the WAL file for writing
// does. (The WAL holds no POSIX locks, so closing it releases none of SQLite's.)
bool FileSystemRefusesWrites(sqlite3* db) {
  const char* file = sqlite3_db_filename(db, "main");
  if (file == nullptr || *file == '\0') return false;
  struct statvfs fs {};
  if (::statvfs(file, &fs) == 0 && (fs.f_flag & ST_RDONLY) != 0) return true;
  const int fd = ::open((std::string(file) + "-wal").c_str(), O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::close(fd);
    return false;
  }
  return errno == EROFS;
}

// What a failure says when it is the storage refusing writes (a full disk or a read-only file
// system): nothing otherwise. Such a failure is kUnavailable rather than kInternal -- the service
// answers 503 and the same write succeeds once space returns; reads go on meanwhile.
std::optional<std::string_view> StorageRefusal(sqlite3* db, int extended_code) {
  const int primary = extended_code & 0xff;
  const bool io = primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN;
  const int system_errno = sqlite3_system_errno(db);
  if (primary == SQLITE_FULL || (io && (system_errno == ENOSPC || system_errno == EDQUOT))) {
    return "the storage is full";
  }
  if (primary == SQLITE_READONLY || (io && system_errno == EROFS)) {
    return "the storage is read-only";
  }
  if (io && FileSystemRefusesWrites(db)) return "the storage is read-only";
  return std::nullopt;
}

Error SqliteError(sqlite3* db, std::string_view what) {
  const int code = sqlite3_extended_errcode(db);
  std::string message = std::string(what) + ": " + sqlite3_errmsg(db) + " (SQLite error " +
                        std::to_string(code) + ")";
  if (auto refusal = StorageRefusal(db, code)) {
    return Error::Unavailable(std::string(*refusal) + " (" + message + ")");
  }
  return Error::Internal(std::move(message));
}

// `error` behind `prefix`: a refusal of the storage stays kUnavailable, anything else is
// kInternal.
Error NothingWritten(std::string_view prefix, const Error& error) {
  std::string message = std::string(prefix) + error.message;
  if (error.kind == ErrorKind::kUnavailable) return Error::Unavailable(std::move(message));
  return Error::Internal(std::move(message));
}

class Connection {
 public:
  Connection() = default;
  ~Connection() {
    // close_v2: should a statement outlive the connection, the close completes when it is
    // finalized instead of failing.
    if (db_ != nullptr) sqlite3_close_v2(db_);
  }
  Connection(Connection&& other) noexcept
      : db_(std::exchange(other.db_, nullptr)), busy_(std::move(other.busy_)) {}
  Connection& operator=(Connection&& other) noexcept {
    std::swap(db_, other.db_);
    std::swap(busy_, other.busy_);
    return *this;
  }

  // How long a statement waits for another connection's lock (busy_wait.h: in small steps).
  void SetBusyTimeout(int ms) { busy_->Install(db_, ms); }

  static Result<Connection> Open(const std::string& path, bool create, int busy_timeout_ms) {
    Connection c;
    const int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) |
                      SQLITE_OPEN_NOMUTEX;  // each connection is used by one thread at a time
    const int rc = sqlite3_open_v2(path.c_str(), &c.db_, flags, nullptr);
    if (rc != SQLITE_OK) {
      std::string message = c.db_ != nullptr ? sqlite3_errmsg(c.db_) : sqlite3_errstr(rc);
      return Error::Internal("cannot open the database " + path + ": " + message);
    }
    sqlite3_extended_result_codes(c.db_, 1);
    c.SetBusyTimeout(busy_timeout_ms);
    return c;
  }

  sqlite3* get() const { return db_; }

  Status Exec(const char* sql) {
    char* message = nullptr;
    const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &message);
    if (rc == SQLITE_OK) return {};
    std::string text = message != nullptr ? message : sqlite3_errstr(rc);
    sqlite3_free(message);
    text = std::string("SQLite: ") + text + " (error " + std::to_string(rc) +
           ") in: " + std::string(std::string_view(sql).substr(0, 80));
    if (auto refusal = StorageRefusal(db_, rc)) {
      return Error::Unavailable(std::string(*refusal) + " (" + text + ")");
    }
    return Error::Internal(std::move(text));
  }

  // The single value of a pragma or query, as text.
  Result<std::string> QueryText(const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) != SQLITE_OK) {
      return SqliteError(db_, sql);
    }
    std::string out;
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW && sqlite3_column_text(stmt, 0) != nullptr) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqliteError(db_, sql);
    return out;
  }

 private:
  sqlite3* db_ = nullptr;
  // On the heap: SQLite keeps its address, which must survive moves of the Connection.
  std::unique_ptr<BusyWait> busy_ = std::make_unique<BusyWait>();
};

class Statement {
 public:
  Statement() = default;
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(Statement&& other) noexcept : stmt_(std::exchange(other.stmt_, nullptr)) {}
  Statement& operator=(Statement&& other) noexcept {
    std::swap(stmt_, other.stmt_);
    return *this;
  }

  Status Prepare(sqlite3* db, const std::string& sql) {
    sqlite3_finalize(stmt_);
    stmt_ = nullptr;
    if (sqlite3_prepare_v3(db, sql.c_str(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                           &stmt_, nullptr) != SQLITE_OK) {
      return SqliteError(db, "preparing " + sql.substr(0, 80));
    }
    return {};
  }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

// One use of a prepared statement: bind, step, read columns. Resetting it when done means it
// holds no snapshot or lock afterwards. Bound text and blobs are not copied: they must outlive
// the Use, which they do as locals of the caller.
class Use {
 public:
  explicit Use(const Statement& s) : s_(s.get()) {}
  ~Use() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;

  Use& Bind(int i, int64_t value) {
    sqlite3_bind_int64(s_, i, value);
    return *this;
  }
  Use& Bind(int i, std::string_view text) {
    sqlite3_bind_text64(s_, i, text.data(), text.size(), SQLITE_STATIC, SQLITE_UTF8);
    return *this;
  }
  Use& BindBlob(int i, std::string_view bytes) {
    sqlite3_bind_blob64(s_, i, bytes.data(), bytes.size(), SQLITE_STATIC);
    return *this;
  }
  Use& BindBlob(int i, const Hash& hash) {
    sqlite3_bind_blob64(s_, i, hash.data(), hash.size(), SQLITE_STATIC);
    return *this;
  }
  Use& BindNull(int i) {
    sqlite3_bind_null(s_, i);
    return *this;
  }

  int Step() { return sqlite3_step(s_); }

  int64_t Int(int col) const { return sqlite3_column_int64(s_, col); }
  bool IsNull(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
  std::string_view Text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
    return p == nullptr ? std::string_view()
                        : std::string_view(p, static_cast<size_t>(sqlite3_column_bytes(s_, col)));
  }
  std::string_view Blob(int col) const {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(s_, col));
    return p == nullptr ? std::string_view()
                        : std::string_view(p, static_cast<size_t>(sqlite3_column_bytes(s_, col)));
  }

 private:
  sqlite3_stmt* s_;
};

// A read transaction: one snapshot for every statement of a read. Read-only, so ending it with
// ROLLBACK loses nothing.
// `begin` and `rollback` are the connection's prepared BEGIN and ROLLBACK (a point read is a
// few tens of microseconds; compiling the two statements each time was a noticeable part).
class ReadTransaction {
 public:
  ReadTransaction(Connection& db, const Statement& begin, const Statement& rollback)
      : db_(db), begin_(begin), rollback_(rollback) {}
  ~ReadTransaction() {
    if (open_) {
      Use q(rollback_);
      (void)q.Step();
    }
  }
  ReadTransaction(const ReadTransaction&) = delete;
  ReadTransaction& operator=(const ReadTransaction&) = delete;
  Status Begin() {
    Use q(begin_);
    if (q.Step() != SQLITE_DONE) return SqliteError(db_.get(), "beginning a read");
    open_ = true;
    return {};
  }

 private:
  Connection& db_;
  const Statement& begin_;
  const Statement& rollback_;
  bool open_ = false;
};

Status ReadHash(const Use& q, int col, Hash& out) {
  const std::string_view bytes = q.Blob(col);
  if (bytes.size() != out.size()) {
    return Error::Internal("a stored hash is " + std::to_string(bytes.size()) + " bytes, not " +
                           std::to_string(out.size()));
  }
  std::memcpy(out.data(), bytes.data(), out.size());
  return {};
}

// Reads the columns of kEntryColumns, in that order.
Status ReadRow(const Use& q, EntryRow& row) {
  row.position = q.Int(0);
  row.patient_id = q.Text(1);
  row.version = q.Int(2);
  row.event_id = q.Text(3);
  row.type = q.Text(4);
  row.payload = q.Blob(5);
  row.recorded_at_ms = q.Int(6);
  row.actor.id = q.Text(7);
  row.actor.role = q.Text(8);
  row.actor.source = q.Text(9);
  row.idempotency_key = q.IsNull(10) ? std::string_view() : q.Text(10);
  if (auto st = ReadHash(q, 11, row.prev_hash); !st.ok()) return st;
  return ReadHash(q, 12, row.hash);
}

Result<std::optional<PatientKey>> ReadKey(const Statement& key_query, std::string_view patient_id,
                                          sqlite3* db) {
  Use q(key_query);
  q.Bind(1, patient_id);
  const int rc = q.Step();
  if (rc == SQLITE_DONE) return std::optional<PatientKey>();
  if (rc != SQLITE_ROW) return SqliteError(db, "reading a patient key");
  auto key = PatientKey::FromBytes(q.Blob(0));
  if (!key.ok()) {
    return Error::Internal("patient " + std::string(patient_id) + ": " + key.error().message);
  }
  return std::optional<PatientKey>(std::move(*key));
}

// Prepares a list of statements, stopping at the first failure.
Status PrepareAll(sqlite3* db, std::initializer_list<std::pair<Statement*, std::string>> list) {
  for (const auto& [statement, sql] : list) {
    if (auto st = statement->Prepare(db, sql); !st.ok()) return st;
  }
  return {};
}

// Folds one stream's rows, read in version order, into its state, checking each row as a read
// does: the chain, the payload's seal, the entry with the parser.
class StreamFold {
 public:
  Status Next(const EntryRow& row, const PatientKey& key, const ParseOptions& options) {
    if (auto st = chain_.Next(row); !st.ok()) return st;
    auto entry = DecodeEntry(row, &key, options);
    if (!entry.ok()) return entry.error();
    position_ = row.position;
    if (auto st = FoldEntry(state_, row.type, entry->json); !st.ok()) {
      return Error::Internal("patient " + row.patient_id + " version " +
                             std::to_string(row.version) + ": " + st.error().message);
    }
    return {};
  }
  int64_t version() const { return chain_.version(); }
  int64_t position() const { return position_; }
  const StateText& state() const { return state_; }

 private:
  ChainCheck chain_;
  int64_t position_ = 0;
  StateText state_;
};

// Two states hold the same record.
bool SameState(const StateText& a, const StateText& b) {
  return a.event_count == b.event_count && a.patient == b.patient && a.events == b.events;
}

// A state row is a snapshot: the stream folded up to the row's version. The entries after it
// are folded in when the state is read, each checked. Rewriting the whole sealed state at every
// append made an append's cost grow with its stream: 16 writers appending one event each ran
// at a third of their rate without projections (docs/performance.md). A new snapshot is
// written once SnapshotInterval entries stand behind the last: 16 for a stream of a clinic's
// usual length, an eighth of the stream for a long one (so that rewriting it costs each entry
// a bounded share), and never more than 128, which bounds what a read folds in (about 4 us an
// entry).
constexpr int64_t kSnapshotEvery = 16;
constexpr int64_t kMaxSnapshotInterval = 128;
int64_t SnapshotInterval(const StateText& state) {
  return std::clamp<int64_t>((state.event_count + 1) / 8, kSnapshotEvery, kMaxSnapshotInterval);
}

// Folds the entries after `version` (the tail behind a snapshot) into `state`: versions without
// gaps, each row's own hash checked, each payload opened and checked by the parser.
Status FoldTail(const Statement& tail_rows, sqlite3* db, std::string_view patient,
                const PatientKey& key, const ParseOptions& options, StateText& state,
                int64_t& version, int64_t& position) {
  Use q(tail_rows);
  q.Bind(1, patient).Bind(2, version);
  EntryRow row;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    if (auto st = ReadRow(q, row); !st.ok()) {
      return Error::Internal("patient " + std::string(patient) + ": " + st.error().message);
    }
    const std::string name =
        "patient " + row.patient_id + " version " + std::to_string(row.version);
    if (row.version != version + 1) {
      return Error::Internal(name + ": out of sequence (expected version " +
                             std::to_string(version + 1) + ")");
    }
    if (EntryHash(row) != row.hash) {
      return Error::Internal(name +
                             ": hash does not match the entry (it was changed after it "
                             "was written)");
    }
    auto entry = DecodeEntry(row, &key, options);
    if (!entry.ok()) return entry.error();
    if (auto st = FoldEntry(state, row.type, entry->json); !st.ok()) {
      return Error::Internal(name + ": " + st.error().message);
    }
    version = row.version;
    position = row.position;
  }
  if (rc != SQLITE_DONE) return SqliteError(db, "reading a stream's newest entries");
  return {};
}

// The state rows of every stream in the file, for the migration to version 3. An erased
// patient has none. A stream that does not read back (a damaged entry) gets none either: the
// migration must not make a damaged file unopenable. ReadState then reports the patient,
// Verify names the entry, and RebuildProjections writes the row once the stream is repaired.
Status BuildStates(Connection& db, const ParseOptions& read_options) {
  Statement rows, key_query, insert;
  if (auto st =
          PrepareAll(db.get(), {{&rows, "SELECT " + std::string(kEntryColumns) +
                                            " FROM entries ORDER BY patient_id, version"},
                                {&key_query, "SELECT key FROM patient_keys WHERE patient_id = ?1"},
                                {&insert,
                                 "INSERT INTO patient_state (patient_id, version, position, state) "
                                 "VALUES (?1, ?2, ?3, ?4)"}});
      !st.ok()) {
    return st;
  }
  std::string current;
  std::optional<PatientKey> key;
  std::optional<StreamFold> fold;  // empty: the current stream gets no row
  auto finish = [&]() -> Status {
    if (!fold.has_value() || !key.has_value() || fold->version() == 0) return {};
    const std::string sealed = SealState(*key, current, fold->version(), fold->state());
    Use q(insert);
    q.Bind(1, std::string_view(current)).Bind(2, fold->version()).Bind(3, fold->position());
    q.BindBlob(4, std::string_view(sealed));
    if (q.Step() != SQLITE_DONE) return SqliteError(db.get(), "writing a patient's state");
    return {};
  };
  Use q(rows);
  EntryRow row;
  bool first = true;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    if (auto st = ReadRow(q, row); !st.ok()) {
      fold.reset();
      continue;
    }
    if (first || row.patient_id != current) {
      if (auto st = finish(); !st.ok()) return st;
      first = false;
      current = row.patient_id;
      auto found = ReadKey(key_query, current, db.get());
      key = found.ok() ? std::move(*found) : std::nullopt;
      fold.emplace();
    }
    if (fold.has_value() && key.has_value() && !fold->Next(row, *key, read_options).ok()) {
      fold.reset();
    }
  }
  if (rc != SQLITE_DONE) return SqliteError(db.get(), "reading the log");
  return finish();
}

Status ConfigureWriter(Connection& db) {
  auto mode = db.QueryText("PRAGMA journal_mode = WAL");
  if (!mode.ok()) return mode.error();
  if (*mode != "wal") {
    return Error::Internal("the database could not be put in WAL mode (it is in " + *mode +
                           " mode)");
  }
  // FULL: the WAL is synced at every commit, so an acknowledged append survives power loss.
  // secure_delete: the one deletion, of an erased patient's key, overwrites the key's bytes.
  return db.Exec("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;");
}

// Version 4 in its steps (kMigration4Tables, kMigration4OwnCommits, kMigration4Swap).
Status MigrateTo4(Connection& db) {
  if (auto st = db.Exec(kMigration4Tables); !st.ok()) return st;
  auto last_commit = db.QueryText("SELECT coalesce(max(id), 0) FROM commits");
  if (!last_commit.ok()) return last_commit.error();
  std::string own_commits = kMigration4OwnCommits;
  for (size_t at; (at = own_commits.find("?1")) != std::string::npos;) {
    own_commits.replace(at, 2, std::to_string(std::strtoll(last_commit->c_str(), nullptr, 10)));
  }
  if (auto st = db.Exec(own_commits.c_str()); !st.ok()) return st;
  return db.Exec(kMigration4Swap);
}

// Runs the missing migrations in one transaction: a crash leaves the old version whole. Foreign
// keys are off meanwhile (the pragma cannot change inside a transaction), as SQLite's procedure
// for rebuilding a table asks; they are checked before the commit.
Status Migrate(Connection& db, const std::string& path, const ParseOptions& read_options) {
  if (auto st = db.Exec("PRAGMA foreign_keys = OFF"); !st.ok()) return st;
  if (auto st = db.Exec("BEGIN IMMEDIATE"); !st.ok()) {
    (void)db.Exec("PRAGMA foreign_keys = ON");
    return st;
  }
  auto fail = [&db](Error e) -> Status {
    (void)db.Exec("ROLLBACK");
    (void)db.Exec("PRAGMA foreign_keys = ON");
    return e;
  };
  auto version_text = db.QueryText("PRAGMA user_version");
  if (!version_text.ok()) return fail(version_text.error());
  auto app_text = db.QueryText("PRAGMA application_id");
  if (!app_text.ok()) return fail(app_text.error());
  auto tables_text = db.QueryText("SELECT count(*) FROM sqlite_schema");
  if (!tables_text.ok()) return fail(tables_text.error());
  const long version = std::strtol(version_text->c_str(), nullptr, 10);
  const long application_id = std::strtol(app_text->c_str(), nullptr, 10);
  const long objects = std::strtol(tables_text->c_str(), nullptr, 10);

  if (version > kSqliteSchemaVersion) {
    return fail(
        Error::BadInput("the database " + path + " has schema version " + std::to_string(version) +
                            ", newer than this build's " + std::to_string(kSqliteSchemaVersion) +
                            "; open it with the newer isoguard that wrote it (nothing was changed)",
                        "db"));
  }
  if ((application_id != 0 && application_id != kSqliteApplicationId) ||
      (version > 0 && application_id != kSqliteApplicationId) || (version == 0 && objects > 0)) {
    return fail(Error::BadInput(
        "the database " + path + " is not an isoguard event store (it holds other data)", "db"));
  }
  for (int v = static_cast<int>(version) + 1; v <= kSqliteSchemaVersion; ++v) {
    if (auto st = v == 4 ? MigrateTo4(db) : db.Exec(kMigrations[v - 1]); !st.ok()) {
      return fail(Error::Internal("migration to schema version " + std::to_string(v) +
                                  " failed: " + st.error().message));
    }
    if (v == 3) {
      if (auto st = BuildStates(db, read_options); !st.ok()) {
        return fail(Error::Internal("migration to schema version 3 failed: " + st.error().message));
      }
    }
    const std::string set = "PRAGMA user_version = " + std::to_string(v) +
                            "; PRAGMA application_id = " + std::to_string(kSqliteApplicationId);
    if (auto st = db.Exec(set.c_str()); !st.ok()) return fail(st.error());
  }
  if (version < kSqliteSchemaVersion) {
    auto violation = db.QueryText(
        "SELECT \"table\" || ' row ' || coalesce(rowid, '(without rowid)') "
        "FROM pragma_foreign_key_check LIMIT 1");
    if (!violation.ok()) return fail(violation.error());
    if (!violation->empty()) {
      return fail(Error::Internal("migration to schema version " +
                                  std::to_string(kSqliteSchemaVersion) +
                                  " failed: a foreign key does not hold (" + *violation + ")"));
    }
  }
  if (auto st = db.Exec("COMMIT"); !st.ok()) return fail(st.error());
  return db.Exec("PRAGMA foreign_keys = ON");
}

Status SyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0)
    return Error::Internal("cannot open " + path + " to sync it: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) return Error::Internal("cannot sync " + path + ": " + std::strerror(saved));
  return {};
}

}  // namespace

// ===========================================================================================
// The store.
// ===========================================================================================

// A batch of patients whose state rows RebuildProjections recomputes in one transaction.
struct RebuildBatch {
  std::vector<std::string> patients;
  bool remove_orphans = false;  // the last batch: rows with no stream behind them go
  RebuildReport report;
};

// One queued write: an append (checked by the caller, or prepared whole), an erasure or a batch
// of a rebuild. It lives on the caller's stack; the caller waits until `ticket.done` (guarded
// by the writer's queue) says the writer has committed or failed it.
struct WriteRequest {
  const AppendRequest* append = nullptr;
  std::vector<CheckedEntry> entries;
  PreparedAppend::Data* prepared = nullptr;
  std::string_view erase_patient;
  const Actor* erase_actor = nullptr;
  RebuildBatch* rebuild = nullptr;

  // An append's (checked or prepared) outcome; `status` is an erasure's or a rebuild's.
  Result<AppendResult> append_result = Error::Internal("the request was not applied");
  Status status;
  bool erased = false;  // a key was destroyed
  bool wrote = false;   // a prepared append wrote rows (it has no savepoint to roll back to)

  detail::GroupCommitTicket ticket;

  bool is_append() const { return append != nullptr || prepared != nullptr; }
  bool ok() const { return is_append() ? append_result.ok() : status.ok(); }
  const Error& error() const { return is_append() ? append_result.error() : status.error(); }
  void Fail(const Error& e) {
    if (is_append()) {
      append_result = e;
    } else {
      status = e;
    }
    erased = false;
  }
  size_t weight() const {
    if (prepared != nullptr) return std::max<size_t>(prepared->rows.size(), 1);
    if (rebuild != nullptr) return 64 * std::max<size_t>(rebuild->patients.size(), 1);
    return std::max<size_t>(entries.size(), 1);
  }
};

// The writer's memory of a stream's head, so that an append to a stream it has written to
// needs no query for the head or the key. Valid while no other connection writes the file
// (PRAGMA data_version, read inside each write transaction, says when one has).
struct StreamHead {
  int64_t stream = 0;  // streams.id
  int64_t version = 0;
  Hash hash{};
  PatientKey key;
  // The stream's state at `version`, so that the next append folds into it without reading
  // and opening the row; kept while the states held stay under kMaxCachedStateBytes.
  std::optional<StateText> state;
  int64_t snapshot_version = 0;  // the state row's version (with `state`); 0: no row
};

static size_t StateBytes(const StateText& state) {
  return state.patient.size() + state.events.size();
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};

struct Reader {
  Connection db;
  Statement begin;
  Statement rollback;
  Statement key;
  Statement state;
  Statement head;
  Statement version;
  Statement stream_page;
  Statement stream_starts;
  Statement tail_rows;
  Statement stream_rows;
  Statement rows_after;
  Statement all_rows;
  Statement erasure;
  Statement empty_stream;
};

struct SqliteEventStore::Impl {
  std::string path;
  SqliteOptions options;
  ParseOptions read_options;

  // ---- The writer: its connection and statements belong to the writer thread (and to Open
  // and the destructor, when that thread is not running).
  Connection db;
  Statement begin, commit, rollback, savepoint, release, rollback_to;
  Statement data_version, max_position, find_stream, find_append, replay_rows, head, insert_stream,
      insert_key, find_key, find_event, insert_entry, insert_commit, stream_exists, insert_audit,
      delete_key, find_state, upsert_state, delete_state, writer_stream_rows, remove_orphan_states,
      insert_entries,  // kRowsPerInsert rows at once, for prepared appends
      tail_rows;
  static constexpr int kRowsPerInsert = 16;
  bool wal_truncate_pending = false;
  std::unordered_map<std::string, StreamHead, StringHash, std::equal_to<>> heads;
  int64_t last_data_version = -1;
  static constexpr size_t kMaxCachedHeads = 100000;  // about 10 MB, states aside
  static constexpr size_t kMaxCachedStateBytes = size_t{64} << 20;
  size_t cached_state_bytes = 0;
  void ForgetHeads() {
    heads.clear();
    cached_state_bytes = 0;
  }
  std::chrono::steady_clock::time_point last_truncate_attempt{};
  // Held by the writer thread while it uses `db`; BulkImportScope takes it to change the
  // journal mode between batches.
  std::mutex writer_mu;

  detail::GroupCommitQueue<WriteRequest> queue;
  std::thread writer;

  // ---- Readers.
  std::mutex readers_mu;
  std::condition_variable readers_cv;
  std::vector<std::unique_ptr<Reader>> idle_readers;
  size_t readers_open = 0;

  Status PrepareWriter();
  void Submit(WriteRequest& request);
  void SubmitAll(std::vector<WriteRequest>& requests);
  void WriterLoop();
  void CommitBatch(std::vector<WriteRequest*>& batch);
  Result<AppendResult> ApplyAppend(WriteRequest& request, int64_t& next_position);
  Result<AppendResult> ApplyPrepared(WriteRequest& request, int64_t& next_position);
  Result<AppendResult> ExistingStream(std::string_view patient, const std::string& idempotency_key,
                                      int64_t expected_version);
  Result<AppendResult> Replay(int64_t stream, int64_t first, int64_t last);
  Result<int64_t> FindStream(std::string_view patient);  // 0: no such stream
  Result<int64_t> InsertCommit(int64_t stream, int64_t first, int64_t last, int64_t recorded_at_ms,
                               const Actor& actor, const std::string& idempotency_key);
  Result<StateText> CurrentState(std::string_view patient, int64_t version, const PatientKey& key,
                                 int64_t& snapshot_version);
  Result<std::optional<StreamFold>> FoldFromLog(std::string_view patient, const PatientKey& key,
                                                int64_t capture_version = 0,
                                                StateText* captured = nullptr,
                                                int64_t* captured_position = nullptr);
  Status WriteState(std::string_view patient, int64_t version, int64_t position,
                    std::string_view sealed);
  Status ApplyErase(WriteRequest& request);
  Status ApplyRebuild(RebuildBatch& batch);
  void TruncateWal(bool wait);
  bool EnterRollbackJournal();
  void LeaveRollbackJournal();

  Result<std::unique_ptr<Reader>> AcquireReader();
  void ReleaseReader(std::unique_ptr<Reader> reader);
};

namespace {

// A reader connection borrowed from the pool, returned when the lease ends.
class ReaderLease {
 public:
  ReaderLease(SqliteEventStore::Impl& impl, std::unique_ptr<Reader> reader)
      : impl_(impl), reader_(std::move(reader)) {}
  ~ReaderLease() {
    if (reader_ != nullptr) impl_.ReleaseReader(std::move(reader_));
  }
  ReaderLease(const ReaderLease&) = delete;
  ReaderLease& operator=(const ReaderLease&) = delete;
  Reader& operator*() const { return *reader_; }
  Reader* operator->() const { return reader_.get(); }

 private:
  SqliteEventStore::Impl& impl_;
  std::unique_ptr<Reader> reader_;
};

}  // namespace

namespace {

// INSERT INTO entries of `rows` rows: parameters ?1..?9 are the first row's columns
// (kStoredColumns), ?10..?18 the second's, and so on.
std::string MultiRowInsert(int rows) {
  std::string sql = "INSERT INTO entries (" + std::string(kStoredColumns) + ") VALUES ";
  for (int r = 0; r < rows; ++r) {
    sql += r == 0 ? "(" : ", (";
    for (int c = 1; c <= kStoredColumnCount; ++c) {
      sql += (c == 1 ? "?" : ", ?") + std::to_string(kStoredColumnCount * r + c);
    }
    sql += ")";
  }
  return sql;
}

}  // namespace

Status SqliteEventStore::Impl::PrepareWriter() {
  const std::string columns = kEntryColumns;
  return PrepareAll(
      db.get(),
      {
          {&begin, "BEGIN IMMEDIATE"},
          {&commit, "COMMIT"},
          {&rollback, "ROLLBACK"},
          {&savepoint, "SAVEPOINT request"},
          {&release, "RELEASE request"},
          {&rollback_to, "ROLLBACK TO request"},
          {&data_version, "PRAGMA data_version"},
          {&max_position, "SELECT coalesce(max(position), 0) FROM entries"},
          {&find_stream, "SELECT id FROM streams WHERE patient_id = ?1"},
          {&find_append,
           "SELECT first_version, last_version FROM commits "
           "WHERE stream = ?1 AND idempotency_key = ?2"},
          {&replay_rows,
           "SELECT event_id, position FROM entries "
           "WHERE stream = ?1 AND version BETWEEN ?2 AND ?3 ORDER BY version"},
          {&head,
           "SELECT version, hash FROM entries WHERE stream = ?1 ORDER BY version DESC LIMIT 1"},
          {&insert_stream, "INSERT INTO streams (patient_id, created_at_ms) VALUES (?1, ?2)"},
          {&insert_key,
           "INSERT INTO patient_keys (patient_id, key, created_at_ms) VALUES (?1, ?2, ?3)"},
          {&find_key, "SELECT key FROM patient_keys WHERE patient_id = ?1"},
          {&find_event, "SELECT type, version FROM entries WHERE stream = ?1 AND event_id = ?2"},
          {&insert_entry, MultiRowInsert(1)},
          {&insert_commit,
           "INSERT INTO commits (stream, first_version, last_version, recorded_at_ms, actor_id, "
           "actor_role, actor_source, idempotency_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"},
          {&stream_exists, "SELECT 1 FROM streams WHERE patient_id = ?1"},
          {&insert_audit,
           "INSERT INTO audit (action, patient_id, actor_id, actor_role, actor_source, at_ms) "
           "VALUES ('erasure', ?1, ?2, ?3, ?4, ?5)"},
          {&delete_key, "DELETE FROM patient_keys WHERE patient_id = ?1"},
          {&find_state, "SELECT version, state, position FROM patient_state WHERE patient_id = ?1"},
          {&upsert_state,
           "INSERT INTO patient_state (patient_id, version, position, state) "
           "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (patient_id) DO UPDATE SET "
           "version = excluded.version, position = excluded.position, state = excluded.state"},
          {&delete_state, "DELETE FROM patient_state WHERE patient_id = ?1"},
          {&writer_stream_rows,
           "SELECT " + columns + " FROM entry_rows WHERE patient_id = ?1 ORDER BY version"},
          {&insert_entries, MultiRowInsert(kRowsPerInsert)},
          {&tail_rows,
           "SELECT " + columns +
               " FROM entry_rows WHERE patient_id = ?1 AND version > ?2 ORDER BY version"},
          {&remove_orphan_states,
           "DELETE FROM patient_state WHERE NOT EXISTS (SELECT 1 FROM streams "
           "WHERE streams.patient_id = patient_state.patient_id)"},
      });
}

// ---- Writing

// A request made while the store closes is failed, not queued.
static void RefuseClosing(WriteRequest& request) {
  request.Fail(Error::Internal("the event store is closing"));
}

void SqliteEventStore::Impl::Submit(WriteRequest& request) { queue.Submit(request, RefuseClosing); }

// Queues every request (waiting for room as need be), then waits for them all: the writer
// commits them in as few transactions as its batch limits allow.
void SqliteEventStore::Impl::SubmitAll(std::vector<WriteRequest>& requests) {
  queue.SubmitAll(requests, RefuseClosing);
}

void SqliteEventStore::Impl::WriterLoop() {
  std::vector<WriteRequest*> batch;
  // Ends once stopping with everything queued committed.
  while (queue.TakeBatch(batch, options.max_batch_requests, options.max_batch_entries)) {
    std::lock_guard lock(writer_mu);
    CommitBatch(batch);
    queue.Finish(batch);
    if (wal_truncate_pending &&
        std::chrono::steady_clock::now() - last_truncate_attempt > std::chrono::milliseconds(250)) {
      TruncateWal(false);
    }
  }
}

void SqliteEventStore::Impl::CommitBatch(std::vector<WriteRequest*>& batch) {
  auto fail_all = [&batch](const Error& error) {
    for (WriteRequest* r : batch) r->Fail(error);
  };
  auto step = [this](const Statement& s) -> Status {
    Use q(s);
    const int rc = q.Step();
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return SqliteError(db.get(), sqlite3_sql(s.get()));
    return {};
  };
  auto abandon = [&](const Error& error) {
    if (sqlite3_get_autocommit(db.get()) == 0) (void)step(rollback);
    ForgetHeads();  // it may hold heads that were rolled back
    fail_all(NothingWritten("nothing was written: ", error));
  };

  if (auto st = step(begin); !st.ok()) return fail_all(st.error());
  {
    Use q(data_version);
    if (q.Step() != SQLITE_ROW) return abandon(SqliteError(db.get(), "reading data_version"));
    if (q.Int(0) != last_data_version) {
      ForgetHeads();  // another connection wrote: what the writer remembers may be stale
      last_data_version = q.Int(0);
    }
  }
  int64_t next_position = 0;
  {
    Use q(max_position);
    if (q.Step() != SQLITE_ROW) return abandon(SqliteError(db.get(), "reading the log's end"));
    next_position = q.Int(0) + 1;
  }

  bool erased_any = false;
  for (WriteRequest* r : batch) {
    // A prepared append goes without a savepoint (whose journal copies every page it changes):
    // it writes nothing until its stream is known to be new, and after that only a damaged
    // file can fail it, which abandons the batch.
    const bool savepoint_taken = r->prepared == nullptr;
    if (savepoint_taken) {
      if (auto st = step(savepoint); !st.ok()) return abandon(st.error());
    }
    const int64_t saved_position = next_position;
    if (r->append != nullptr) {
      r->append_result = ApplyAppend(*r, next_position);
    } else if (r->prepared != nullptr) {
      r->append_result = ApplyPrepared(*r, next_position);
    } else if (r->rebuild != nullptr) {
      r->status = ApplyRebuild(*r->rebuild);
    } else {
      r->status = ApplyErase(*r);
    }
    // An I/O error can make SQLite roll the whole transaction back by itself.
    if (sqlite3_get_autocommit(db.get()) != 0) {
      const Error error = r->ok() ? Error::Internal("the transaction was rolled back") : r->error();
      ForgetHeads();
      return fail_all(NothingWritten("nothing was written: ", error));
    }
    if (r->ok()) {
      if (savepoint_taken) {
        if (auto st = step(release); !st.ok()) return abandon(st.error());
      }
      erased_any = erased_any || r->erased;
    } else if (!savepoint_taken) {
      if (r->wrote) return abandon(r->error());
      next_position = saved_position;
    } else {
      next_position = saved_position;
      if (auto st = step(rollback_to); !st.ok()) return abandon(st.error());
      if (auto st = step(release); !st.ok()) return abandon(st.error());
    }
  }
  if (auto st = step(commit); !st.ok()) {
    // The requests that failed on their own keep their errors; the others learn that the
    // commit did not happen.
    if (sqlite3_get_autocommit(db.get()) == 0) (void)step(rollback);
    ForgetHeads();
    for (WriteRequest* r : batch) {
      if (!r->ok()) continue;
      r->Fail(NothingWritten("the commit failed, nothing was written: ", st.error()));
    }
    return;
  }
  if (erased_any) {
    wal_truncate_pending = true;
    TruncateWal(false);
  }
}

Result<AppendResult> SqliteEventStore::Impl::Replay(int64_t stream, int64_t first, int64_t last) {
  AppendResult result;
  result.first_version = first;
  result.last_version = last;
  result.replayed = true;
  Use q(replay_rows);
  q.Bind(1, stream).Bind(2, first).Bind(3, last);
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    result.event_ids.emplace_back(q.Text(0));
    result.last_position = q.Int(1);
  }
  if (rc != SQLITE_DONE) return SqliteError(db.get(), "replaying an append");
  return result;
}

Result<int64_t> SqliteEventStore::Impl::FindStream(std::string_view patient) {
  Use q(find_stream);
  q.Bind(1, patient);
  const int rc = q.Step();
  if (rc == SQLITE_ROW) return q.Int(0);
  if (rc != SQLITE_DONE) return SqliteError(db.get(), "looking up the stream");
  return int64_t{0};
}

// The row an append's entries share; its id.
Result<int64_t> SqliteEventStore::Impl::InsertCommit(int64_t stream, int64_t first, int64_t last,
                                                     int64_t recorded_at_ms, const Actor& actor,
                                                     const std::string& idempotency_key) {
  Use q(insert_commit);
  q.Bind(1, stream).Bind(2, first).Bind(3, last).Bind(4, recorded_at_ms);
  q.Bind(5, actor.id).Bind(6, actor.role).Bind(7, actor.source);
  if (idempotency_key.empty()) {
    q.BindNull(8);
  } else {
    q.Bind(8, idempotency_key);
  }
  if (q.Step() != SQLITE_DONE) return SqliteError(db.get(), "recording the append");
  return static_cast<int64_t>(sqlite3_last_insert_rowid(db.get()));
}

Result<AppendResult> SqliteEventStore::Impl::ApplyAppend(WriteRequest& request,
                                                         int64_t& next_position) {
  const AppendRequest& a = *request.append;
  const std::vector<CheckedEntry>& entries = request.entries;
  const std::string_view patient = a.patient_id;
  const int64_t now_ms = NowMs();

  auto cached = heads.find(patient);
  int64_t stream = 0;
  if (cached != heads.end()) {
    stream = cached->second.stream;
  } else {
    auto found = FindStream(patient);
    if (!found.ok()) return found.error();
    stream = *found;
  }

  // The same idempotency key again: the first result, nothing written.
  if (!a.idempotency_key.empty() && stream != 0) {
    Use q(find_append);
    q.Bind(1, stream).Bind(2, a.idempotency_key);
    const int rc = q.Step();
    if (rc == SQLITE_ROW) return Replay(stream, q.Int(0), q.Int(1));
    if (rc != SQLITE_DONE) return SqliteError(db.get(), "looking up an idempotency key");
  }

  int64_t version = 0;
  Hash prev_hash{};
  std::optional<PatientKey> key;
  std::optional<StateText> cached_state;
  int64_t snapshot_version = 0;
  if (cached != heads.end()) {
    version = cached->second.version;
    prev_hash = cached->second.hash;
    key = cached->second.key;
    if (cached->second.state.has_value()) {
      // Taken out: should this request fail, the next one reads the row instead.
      cached_state_bytes -= StateBytes(*cached->second.state);
      cached_state = std::move(cached->second.state);
      snapshot_version = cached->second.snapshot_version;
      cached->second.state.reset();
    }
  } else if (stream != 0) {
    Use q(head);
    q.Bind(1, stream);
    const int rc = q.Step();
    if (rc == SQLITE_ROW) {
      version = q.Int(0);
      if (auto st = ReadHash(q, 1, prev_hash); !st.ok()) return st.error();
    } else if (rc != SQLITE_DONE) {
      return SqliteError(db.get(), "reading the stream's head");
    }
    if (version > 0) {
      auto found = ReadKey(find_key, patient, db.get());
      if (!found.ok()) return found.error();
      if (!found->has_value()) {
        return Error::BadInput(
            "patient " + std::string(patient) + " was erased; the stream takes no more entries",
            "patient_id");
      }
      key = std::move(**found);
    }
  }
  if (a.expected_version && *a.expected_version != version) {
    return Error::Conflict("patient " + std::string(patient) + ": expected version " +
                               std::to_string(*a.expected_version) + ", the stream is at version " +
                               std::to_string(version),
                           "expected_version");
  }

  if (version == 0) {
    if (!entries.front().is_patient) {
      return Error::BadInput(
          "a new stream begins with the patient entry ({\"type\": \"patient\", ...})",
          "entries[0].type");
    }
    {
      Use q(insert_stream);
      q.Bind(1, patient).Bind(2, now_ms);
      if (q.Step() != SQLITE_DONE) return SqliteError(db.get(), "creating the stream");
      stream = sqlite3_last_insert_rowid(db.get());
    }
    key = PatientKey::Generate();
    Use q(insert_key);
    q.Bind(1, patient).BindBlob(2, key->bytes()).Bind(3, now_ms);
    if (q.Step() != SQLITE_DONE) return SqliteError(db.get(), "storing the patient's key");
  }

  // The state the append folds its entries into, read before they are written.
  Result<StateText> state = cached_state.has_value()
                                ? Result<StateText>(std::move(*cached_state))
                                : CurrentState(patient, version, *key, snapshot_version);
  if (!state.ok()) return state.error();
  {
    size_t adding = 0;
    for (const auto& e : entries) adding += e.is_patient ? 0 : 1;
    if (auto st = CheckRecordRoom(*state, adding, read_options.limits); !st.ok()) return st.error();
  }

  // Whether an event id is taken in the stream (including this append's entries written so
  // far), and by what type of entry.
  auto find = [this, stream](std::string_view event_id,
                             std::string& type) -> Result<std::optional<int64_t>> {
    Use q(find_event);
    q.Bind(1, stream).Bind(2, event_id);
    const int rc = q.Step();
    if (rc == SQLITE_DONE) return std::optional<int64_t>();
    if (rc != SQLITE_ROW) return SqliteError(db.get(), "looking up an event id");
    type = q.Text(0);
    return std::optional<int64_t>(q.Int(1));
  };
  std::unordered_set<std::string_view> given_ids;
  for (const CheckedEntry& e : entries) {
    if (!e.event_id.empty()) given_ids.insert(e.event_id);
  }

  auto commit_id = InsertCommit(stream, version + 1, version + static_cast<int64_t>(entries.size()),
                                now_ms, a.actor, a.idempotency_key);
  if (!commit_id.ok()) return commit_id.error();

  AppendResult result;
  result.first_version = version + 1;
  result.event_ids.reserve(entries.size());
  EntryRow row;
  row.patient_id = patient;
  row.actor = a.actor;
  row.idempotency_key = a.idempotency_key;
  row.recorded_at_ms = now_ms;
  std::string found_type;
  std::string stored;
  for (size_t i = 0; i < entries.size(); ++i) {
    const CheckedEntry& e = entries[i];
    const std::string field = "entries[" + std::to_string(i) + "]";
    row.version = version + 1 + static_cast<int64_t>(i);

    if (!e.prescription_ref.empty() && !e.prescription_in_append) {
      auto target = find(e.prescription_ref, found_type);
      if (!target.ok()) return target.error();
      if (!target->has_value() || found_type != ToString(EventType::kPrescription)) {
        return Error::BadInput("names prescription " + Shown(e.prescription_ref) +
                                   ", which is not in the patient's stream",
                               field + ".prescription");
      }
    }

    // The unique index on (patient_id, event_id) finds an id already in the stream: the insert
    // is tried first and the stream looked at only when it fails, which is rare, rather than
    // before every insert. A given id that is taken is the caller's error; an assigned one
    // that is taken (by a given id of the same form) moves on to the next form.
    row.type = e.type;
    row.position = next_position;
    row.prev_hash = prev_hash;
    bool written = false;
    for (int attempt = 0; attempt < 100 && !written; ++attempt) {
      if (!e.event_id.empty()) {
        row.event_id = e.event_id;
      } else {
        row.event_id = AssignedEventId(patient, row.version, attempt);
        if (given_ids.contains(row.event_id)) continue;
      }
      stored = StoredJson(e, row.event_id);
      row.payload = SealPayload(*key, patient, row.version, stored);
      row.hash = EntryHash(row);
      Use q(insert_entry);
      q.Bind(1, row.position)
          .Bind(2, stream)
          .Bind(3, row.version)
          .Bind(4, row.event_id)
          .Bind(5, row.type)
          .BindBlob(6, row.payload)
          .Bind(7, *commit_id)
          .BindBlob(8, row.prev_hash)
          .BindBlob(9, row.hash);
      const int rc = q.Step();
      if (rc == SQLITE_DONE) {
        written = true;
        break;
      }
      Error failure = SqliteError(db.get(), "writing " + field);
      if (sqlite3_extended_errcode(db.get()) != SQLITE_CONSTRAINT_UNIQUE) return failure;
      auto taken = find(row.event_id, found_type);
      if (!taken.ok()) return taken.error();
      if (!taken->has_value()) return failure;  // another unique key: a bug, not an input
      if (!e.event_id.empty()) {
        return Error::BadInput("id " + Shown(e.event_id) +
                                   " is already used in the patient's stream (version " +
                                   std::to_string(**taken) + ")",
                               field + ".id");
      }
    }
    if (!written) {
      return Error::BadInput("no free id could be assigned; give the event an id", field + ".id");
    }
    ++next_position;
    prev_hash = row.hash;
    result.event_ids.push_back(row.event_id);
    result.last_position = row.position;
    if (auto st = FoldEntry(*state, e.type, stored); !st.ok()) {
      return Error::Internal("patient " + std::string(patient) + ": " + st.error().message);
    }
  }
  result.last_version = row.version;
  // A new snapshot when there is none yet, or once SnapshotInterval entries stand behind it.
  if (snapshot_version == 0 || result.last_version - snapshot_version >= SnapshotInterval(*state)) {
    if (auto st = WriteState(patient, result.last_version, result.last_position,
                             SealState(*key, patient, result.last_version, *state));
        !st.ok()) {
      return st.error();
    }
    snapshot_version = result.last_version;
  }

  // Remembered for the next append; forgotten if this request or the batch is rolled back.
  if (heads.size() >= kMaxCachedHeads) ForgetHeads();
  StreamHead& remembered = heads[std::string(patient)];
  remembered.stream = stream;
  remembered.version = result.last_version;
  remembered.hash = prev_hash;
  remembered.key = *key;
  if (remembered.state.has_value()) {  // cannot be, it was taken above; but keep the count true
    cached_state_bytes -= StateBytes(*remembered.state);
    remembered.state.reset();
  }
  if (cached_state_bytes + StateBytes(*state) <= kMaxCachedStateBytes) {
    cached_state_bytes += StateBytes(*state);
    remembered.state = std::move(*state);
    remembered.snapshot_version = snapshot_version;
  }
  return result;
}

// ---- Projections, in the writer's transaction

// The stream's rows folded afresh, each checked as a read checks it; nullopt when the stream
// has no entries.
Result<std::optional<StreamFold>> SqliteEventStore::Impl::FoldFromLog(std::string_view patient,
                                                                      const PatientKey& key,
                                                                      int64_t capture_version,
                                                                      StateText* captured,
                                                                      int64_t* captured_position) {
  StreamFold fold;
  EntryRow row;
  Use q(writer_stream_rows);
  q.Bind(1, patient);
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    if (auto st = ReadRow(q, row); !st.ok()) {
      return Error::Internal("patient " + std::string(patient) + ": " + st.error().message);
    }
    if (auto st = fold.Next(row, key, read_options); !st.ok()) return st.error();
    if (captured != nullptr && fold.version() == capture_version) {
      *captured = fold.state();
      *captured_position = fold.position();
    }
  }
  if (rc != SQLITE_DONE) return SqliteError(db.get(), "reading a stream");
  if (fold.version() == 0) return std::optional<StreamFold>();
  return std::optional<StreamFold>(std::move(fold));
}

// The state of a stream at `version`, for an append to fold its entries into: the stored
// snapshot with the entries after it; else (no row, or one that is ahead of the stream or does
// not open) the stream folded afresh from the log, and `snapshot_version` 0 so that the append
// writes the row: a damaged row is healed by the next append instead of blocking it.
Result<StateText> SqliteEventStore::Impl::CurrentState(std::string_view patient, int64_t version,
                                                       const PatientKey& key,
                                                       int64_t& snapshot_version) {
  snapshot_version = 0;
  if (version == 0) return StateText{};
  {
    std::optional<StateText> snapshot;
    int64_t at = 0;
    {
      Use q(find_state);
      q.Bind(1, patient);
      const int rc = q.Step();
      if (rc == SQLITE_ROW && q.Int(0) <= version) {
        at = q.Int(0);
        auto opened = OpenState(key, patient, at, q.Blob(1));
        if (opened.ok()) snapshot = std::move(*opened);
      } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return SqliteError(db.get(), "reading a patient's state");
      }
    }
    if (snapshot.has_value()) {
      int64_t folded = at;
      int64_t position = 0;
      if (FoldTail(tail_rows, db.get(), patient, key, read_options, *snapshot, folded, position)
              .ok() &&
          folded == version) {
        snapshot_version = at;
        return std::move(*snapshot);
      }
    }
  }
  auto fold = FoldFromLog(patient, key);
  if (!fold.ok()) return fold.error();
  if (!fold->has_value() || (*fold)->version() != version) {
    return Error::Internal("patient " + std::string(patient) + ": the stream is not at version " +
                           std::to_string(version) + ", as its head says");
  }
  return (*fold)->state();
}

Status SqliteEventStore::Impl::WriteState(std::string_view patient, int64_t version,
                                          int64_t position, std::string_view sealed) {
  Use q(upsert_state);
  q.Bind(1, patient).Bind(2, version).Bind(3, position).BindBlob(4, sealed);
  if (q.Step() != SQLITE_DONE) return SqliteError(db.get(), "writing the patient's state");
  return {};
}

// Recomputes the batch's state rows from the log inside the writer's transaction, so that the
// rows compared and rewritten are those the appends of this transaction see. What is compared
// is the opened state (a sealed row differs every time: its nonce is random).
Status SqliteEventStore::Impl::ApplyRebuild(RebuildBatch& batch) {
  RebuildReport& report = batch.report;
  auto remove = [&](const std::string& patient) -> Status {
    Use q(delete_state);
    q.Bind(1, std::string_view(patient));
    if (q.Step() != SQLITE_DONE) return SqliteError(db.get(), "removing a patient's state");
    report.removed += sqlite3_changes(db.get());
    return {};
  };
  for (const std::string& patient : batch.patients) {
    auto key = ReadKey(find_key, patient, db.get());
    if (!key.ok()) return key.error();
    if (!key->has_value()) {  // erased: the state went with the key
      if (auto st = remove(patient); !st.ok()) return st;
      continue;
    }
    // The stored row, if any: a snapshot at its own version, compared with the log folded up to
    // that version (and at its position).
    std::optional<int64_t> stored_version;
    int64_t stored_position = 0;
    std::string stored_blob;
    {
      Use q(find_state);
      q.Bind(1, std::string_view(patient));
      const int rc = q.Step();
      if (rc == SQLITE_ROW) {
        stored_version = q.Int(0);
        stored_blob = q.Blob(1);
        stored_position = q.Int(2);
      } else if (rc != SQLITE_DONE) {
        return SqliteError(db.get(), "reading a patient's state");
      }
    }
    StateText at_stored;
    int64_t position_at_stored = -1;
    auto fold =
        FoldFromLog(patient, **key, stored_version.value_or(-1), &at_stored, &position_at_stored);
    if (!fold.ok()) return fold.error();
    if (!fold->has_value()) {  // a stream without entries has no state
      if (auto st = remove(patient); !st.ok()) return st;
      continue;
    }
    const StreamFold& log = **fold;
    ++report.patients;
    report.entries += log.version();
    bool same = false;
    if (stored_version.has_value() && *stored_version >= 1 && *stored_version <= log.version() &&
        stored_position == position_at_stored) {
      auto stored = OpenState(**key, patient, *stored_version, stored_blob);
      same = stored.ok() && SameState(*stored, at_stored);
    }
    if (same) continue;
    if (auto st = WriteState(patient, log.version(), log.position(),
                             SealState(**key, patient, log.version(), log.state()));
        !st.ok()) {
      return st;
    }
    ++report.repaired;
  }
  if (batch.remove_orphans) {
    Use q(remove_orphan_states);
    if (q.Step() != SQLITE_DONE) return SqliteError(db.get(), "removing states without a stream");
    report.removed += sqlite3_changes(db.get());
  }
  return {};
}

// ---- Prepared appends (bulk import)

// A prepared append found its stream already there: the first append's result when its
// idempotency key was used, else what Append with that expected version answers.
Result<AppendResult> SqliteEventStore::Impl::ExistingStream(std::string_view patient,
                                                            const std::string& idempotency_key,
                                                            int64_t expected_version) {
  auto stream = FindStream(patient);
  if (!stream.ok()) return stream.error();
  if (!idempotency_key.empty()) {
    Use q(find_append);
    q.Bind(1, *stream).Bind(2, idempotency_key);
    const int rc = q.Step();
    if (rc == SQLITE_ROW) return Replay(*stream, q.Int(0), q.Int(1));
    if (rc != SQLITE_DONE) return SqliteError(db.get(), "looking up an idempotency key");
  }
  int64_t version = 0;
  {
    Use q(head);
    q.Bind(1, *stream);
    const int rc = q.Step();
    if (rc == SQLITE_ROW) {
      version = q.Int(0);
    } else if (rc != SQLITE_DONE) {
      return SqliteError(db.get(), "reading the stream's head");
    }
  }
  auto key = ReadKey(find_key, patient, db.get());
  if (!key.ok()) return key.error();
  if (version > 0 && !key->has_value()) {
    return Error::BadInput(
        "patient " + std::string(patient) + " was erased; the stream takes no more entries",
        "patient_id");
  }
  return Error::Conflict("patient " + std::string(patient) + ": expected version " +
                             std::to_string(expected_version) + ", the stream is at version " +
                             std::to_string(version),
                         "expected_version");
}

// Inserts what PrepareRecord made: the work left to the writer is binding and inserting.
Result<AppendResult> SqliteEventStore::Impl::ApplyPrepared(WriteRequest& request,
                                                           int64_t& next_position) {
  const PreparedAppend::Data& p = *request.prepared;
  const std::string_view patient = p.patient_id;
  if (p.rows.empty()) return Error::Internal("a prepared append without entries");
  int rc;
  {
    Use q(insert_stream);
    q.Bind(1, patient).Bind(2, p.recorded_at_ms);
    rc = q.Step();
    if (rc != SQLITE_DONE) rc = sqlite3_extended_errcode(db.get());
  }
  if (rc == SQLITE_CONSTRAINT_UNIQUE) return ExistingStream(patient, p.idempotency_key, 0);
  if (rc != SQLITE_DONE) return SqliteError(db.get(), "creating the stream");
  const int64_t stream = sqlite3_last_insert_rowid(db.get());
  request.wrote = true;
  {
    Use q(insert_key);
    q.Bind(1, patient).BindBlob(2, p.key.bytes()).Bind(3, p.recorded_at_ms);
    if (q.Step() != SQLITE_DONE) return SqliteError(db.get(), "storing the patient's key");
  }
  auto commit_id =
      InsertCommit(stream, 1, p.rows.back().version, p.recorded_at_ms, p.actor, p.idempotency_key);
  if (!commit_id.ok()) return commit_id.error();
  AppendResult result;
  result.first_version = 1;
  result.event_ids.reserve(p.rows.size());
  // Rows go kRowsPerInsert to a statement while that many are left, then one at a time: one
  // statement's fixed costs shared by many rows.
  // The position is left to SQLite (NULL: the largest rowid plus one, which is what the writer
  // counts too): it then appends at the end of the table's B-tree without seeking the key
  // first. The result is checked against the count below.
  auto bind_row = [&](Use& q, int base, const PreparedRow& row, int64_t /*position*/) {
    q.BindNull(base + 1)
        .Bind(base + 2, stream)
        .Bind(base + 3, row.version)
        .Bind(base + 4, row.event_id)
        .Bind(base + 5, row.type)
        .BindBlob(base + 6, row.payload)
        .Bind(base + 7, *commit_id)
        .BindBlob(base + 8, row.prev_hash)
        .BindBlob(base + 9, row.hash);
  };
  size_t i = 0;
  while (i < p.rows.size()) {
    const bool many = p.rows.size() - i >= static_cast<size_t>(kRowsPerInsert);
    const size_t n = many ? static_cast<size_t>(kRowsPerInsert) : 1;
    Use q(many ? insert_entries : insert_entry);
    for (size_t k = 0; k < n; ++k) {
      bind_row(q, kStoredColumnCount * static_cast<int>(k), p.rows[i + k],
               next_position + static_cast<int64_t>(k));
    }
    if (q.Step() != SQLITE_DONE) {
      return SqliteError(db.get(), "writing entries[" + std::to_string(i) + "]");
    }
    if (sqlite3_last_insert_rowid(db.get()) != next_position + static_cast<int64_t>(n) - 1) {
      return Error::Internal("entries were given positions other than the writer counted");
    }
    for (size_t k = 0; k < n; ++k) result.event_ids.push_back(p.rows[i + k].event_id);
    next_position += static_cast<int64_t>(n);
    i += n;
  }
  result.last_position = next_position - 1;
  result.last_version = p.rows.back().version;
  if (auto st = WriteState(patient, result.last_version, result.last_position, p.sealed_state);
      !st.ok()) {
    return st.error();
  }
  if (heads.size() >= kMaxCachedHeads) ForgetHeads();
  StreamHead& remembered = heads[std::string(patient)];
  remembered.stream = stream;
  remembered.version = result.last_version;
  remembered.hash = p.rows.back().hash;
  remembered.key = p.key;
  return result;
}

Status SqliteEventStore::Impl::ApplyErase(WriteRequest& request) {
  const std::string_view patient = request.erase_patient;
  {
    Use q(stream_exists);
    q.Bind(1, patient);
    const int rc = q.Step();
    if (rc == SQLITE_DONE) {
      return Error::NotFound("no patient " + Shown(patient) + " in the event store", "patient_id");
    }
    if (rc != SQLITE_ROW) return SqliteError(db.get(), "looking up the patient");
  }
  auto key = ReadKey(find_key, patient, db.get());
  if (!key.ok()) return key.error();
  if (!key->has_value()) return {};  // erased before: the first erasure stands
  const Actor& actor = *request.erase_actor;
  {
    Use q(insert_audit);
    q.Bind(1, patient).Bind(2, actor.id).Bind(3, actor.role).Bind(4, actor.source);
    q.Bind(5, NowMs());
    if (q.Step() != SQLITE_DONE) return SqliteError(db.get(), "recording the erasure");
  }
  {
    Use q(delete_key);
    q.Bind(1, patient);
    if (q.Step() != SQLITE_DONE) return SqliteError(db.get(), "destroying the patient's key");
  }
  // The state is sealed under the key and unreadable without it; it goes too.
  Use q(delete_state);
  q.Bind(1, patient);
  if (q.Step() != SQLITE_DONE) return SqliteError(db.get(), "removing the patient's state");
  request.erased = true;
  if (auto cached = heads.find(patient); cached != heads.end()) {
    if (cached->second.state.has_value()) cached_state_bytes -= StateBytes(*cached->second.state);
    heads.erase(cached);
  }
  return {};
}

// After an erasure the key's old bytes may still sit in WAL frames: a TRUNCATE checkpoint
// copies the WAL into the database (where secure_delete zeroed the key) and empties the WAL.
// It needs every reader to be on the newest snapshot; a long read makes it wait, so the writer
// tries without waiting and tries again after later batches.
void SqliteEventStore::Impl::TruncateWal(bool wait) {
  last_truncate_attempt = std::chrono::steady_clock::now();
  if (!wait) db.SetBusyTimeout(0);
  int wal_frames = 0;
  int checkpointed = 0;
  const int rc = sqlite3_wal_checkpoint_v2(db.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE,
                                           &wal_frames, &checkpointed);
  if (!wait) db.SetBusyTimeout(options.busy_timeout_ms);
  if (rc == SQLITE_OK) wal_truncate_pending = false;
}

// ---- Bulk import mode

// Leaves WAL for a rollback journal when nothing else has the file open: no read of this
// store in progress (the idle readers are closed) and no other connection, which SQLite
// itself checks (it then answers with the mode unchanged, or busy).
bool SqliteEventStore::Impl::EnterRollbackJournal() {
  std::lock_guard writer_lock(writer_mu);
  std::vector<std::unique_ptr<Reader>> closing;
  {
    std::lock_guard lock(readers_mu);
    if (idle_readers.size() != readers_open) return false;  // a read is in progress
    closing.swap(idle_readers);
    readers_open = 0;
  }
  closing.clear();
  db.SetBusyTimeout(0);
  auto mode = db.QueryText("PRAGMA journal_mode = PERSIST");
  db.SetBusyTimeout(options.busy_timeout_ms);
  if (mode.ok() && *mode == "persist") return true;
  // Still in WAL; make sure of it, should SQLite have said otherwise.
  (void)db.QueryText("PRAGMA journal_mode = WAL");
  return false;
}

void SqliteEventStore::Impl::LeaveRollbackJournal() {
  std::lock_guard writer_lock(writer_mu);
  // Failing (a reader of the rollback journal holding the file for longer than the busy
  // timeout), the file stays in the rollback journal until the next open puts it in WAL.
  (void)db.QueryText("PRAGMA journal_mode = WAL");
}

SqliteEventStore::BulkImportScope::BulkImportScope(SqliteEventStore& store)
    : store_(store), rollback_journal_(store.impl_->EnterRollbackJournal()) {}

SqliteEventStore::BulkImportScope::~BulkImportScope() {
  if (rollback_journal_) store_.impl_->LeaveRollbackJournal();
}

// ---- Readers

Result<std::unique_ptr<Reader>> SqliteEventStore::Impl::AcquireReader() {
  {
    std::unique_lock lock(readers_mu);
    readers_cv.wait(lock, [&] {
      return !idle_readers.empty() || readers_open < std::max<size_t>(options.max_readers, 1);
    });
    if (!idle_readers.empty()) {
      std::unique_ptr<Reader> reader = std::move(idle_readers.back());
      idle_readers.pop_back();
      return reader;
    }
    ++readers_open;  // reserved; opened below without the lock
  }
  auto fail = [this](Error e) -> Result<std::unique_ptr<Reader>> {
    std::lock_guard lock(readers_mu);
    --readers_open;
    readers_cv.notify_one();
    return e;
  };
  auto reader = std::make_unique<Reader>();
  auto connection = Connection::Open(path, false, options.busy_timeout_ms);
  if (!connection.ok()) return fail(connection.error());
  reader->db = std::move(*connection);
  if (auto st = reader->db.Exec("PRAGMA query_only = ON"); !st.ok()) return fail(st.error());
  const std::string columns = kEntryColumns;
  const std::string tuning = "PRAGMA cache_size = -" + std::to_string(options.cache_size_kib) +
                             "; PRAGMA mmap_size = " + std::to_string(options.mmap_size_bytes);
  if (auto st = reader->db.Exec(tuning.c_str()); !st.ok()) return fail(st.error());
  auto st = PrepareAll(
      reader->db.get(),
      {
          {&reader->begin, "BEGIN"},
          {&reader->rollback, "ROLLBACK"},
          {&reader->key, "SELECT key FROM patient_keys WHERE patient_id = ?1"},
          {&reader->state,
           "SELECT version, position, state FROM patient_state WHERE patient_id = ?1"},
          {&reader->head,
           "SELECT e.version, e.position FROM streams s JOIN entries e ON e.stream = s.id "
           "WHERE s.patient_id = ?1 ORDER BY e.version DESC LIMIT 1"},
          // A patient whose key is gone was erased (ReadState's reading of it too).
          {&reader->version,
           "SELECT (SELECT max(e.version) FROM entries e WHERE e.stream = s.id), "
           "NOT EXISTS (SELECT 1 FROM patient_keys k WHERE k.patient_id = s.patient_id) "
           "FROM streams s WHERE s.patient_id = ?1"},
          {&reader->tail_rows,
           "SELECT " + columns +
               " FROM entry_rows WHERE patient_id = ?1 AND version > ?2 ORDER BY version"},
          {&reader->stream_starts,
           "SELECT e.position, s.patient_id FROM entries e JOIN streams s ON s.id = e.stream "
           "WHERE e.version = 1 AND e.position > ?1 ORDER BY e.position LIMIT ?2"},
          {&reader->stream_page,
           "SELECT patient_id FROM streams WHERE patient_id > ?1 ORDER BY patient_id LIMIT ?2"},
          {&reader->stream_rows,
           "SELECT " + columns + " FROM entry_rows WHERE patient_id = ?1 ORDER BY version"},
          {&reader->rows_after,
           "SELECT " + columns + " FROM entry_rows WHERE position > ?1 ORDER BY position LIMIT ?2"},
          // Stream by stream in the order they began: the (stream, version) index, no sort.
          {&reader->all_rows, "SELECT " + columns + " FROM entry_rows ORDER BY stream, version"},
          {&reader->erasure,
           "SELECT 1 FROM audit WHERE patient_id = ?1 AND action = 'erasure' LIMIT 1"},
          {&reader->empty_stream,
           "SELECT patient_id FROM streams WHERE NOT EXISTS "
           "(SELECT 1 FROM entries WHERE entries.stream = streams.id) LIMIT 1"},
      });
  if (!st.ok()) return fail(st.error());
  return reader;
}

void SqliteEventStore::Impl::ReleaseReader(std::unique_ptr<Reader> reader) {
  std::lock_guard lock(readers_mu);
  idle_readers.push_back(std::move(reader));
  readers_cv.notify_one();
}

// ---- The public face

SqliteEventStore::SqliteEventStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SqliteEventStore::~SqliteEventStore() {
  impl_->queue.Stop();
  if (impl_->writer.joinable()) impl_->writer.join();
  if (impl_->wal_truncate_pending) impl_->TruncateWal(true);
}

Result<std::unique_ptr<SqliteEventStore>> SqliteEventStore::Open(const std::string& path,
                                                                 const SqliteOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->options = options;
  impl->queue.set_capacity(options.max_queued_requests);
  impl->read_options = ReadBackOptions(options.store.parse);
  auto db = Connection::Open(path, true, options.busy_timeout_ms);
  if (!db.ok()) return db.error();
  impl->db = std::move(*db);
  if (auto st = ConfigureWriter(impl->db); !st.ok()) return st.error();
  if (auto st = Migrate(impl->db, path, impl->read_options); !st.ok()) return st.error();
  if (auto st = impl->PrepareWriter(); !st.ok()) return st.error();
  // temp_store = MEMORY: each request's savepoint keeps the pages it changes in a statement
  // journal, which would otherwise go to a temporary file, a write call per page.
  const std::string tuning = "PRAGMA cache_size = -" + std::to_string(options.cache_size_kib) +
                             "; PRAGMA temp_store = MEMORY";
  if (auto st = impl->db.Exec(tuning.c_str()); !st.ok()) return st.error();
  Impl* raw = impl.get();
  impl->writer = std::thread([raw] {
    pthread_setname_np(pthread_self(), "isoguard-writer");  // for top, perf, gdb
    raw->WriterLoop();
  });
  return std::unique_ptr<SqliteEventStore>(new SqliteEventStore(std::move(impl)));
}

Result<AppendResult> SqliteEventStore::Append(const AppendRequest& request) {
  auto entries = CheckAppend(request, impl_->options.store.parse);
  if (!entries.ok()) return entries.error();
  WriteRequest r;
  r.append = &request;
  r.entries = std::move(*entries);
  impl_->Submit(r);
  return std::move(r.append_result);
}

Status SqliteEventStore::ErasePatient(const std::string& patient_id, const Actor& actor) {
  if (auto st = CheckErasure(patient_id, actor); !st.ok()) return st;
  WriteRequest r;
  r.erase_patient = patient_id;
  r.erase_actor = &actor;
  impl_->Submit(r);
  return r.status;
}

Result<Stream> SqliteEventStore::ReadStream(const std::string& patient_id) {
  auto acquired = impl_->AcquireReader();
  if (!acquired.ok()) return acquired.error();
  ReaderLease reader(*impl_, std::move(*acquired));
  ReadTransaction txn(reader->db, reader->begin, reader->rollback);
  if (auto st = txn.Begin(); !st.ok()) return st.error();

  auto key = ReadKey(reader->key, patient_id, reader->db.get());
  if (!key.ok()) return key.error();
  Stream stream;
  stream.patient_id = patient_id;
  ChainCheck chain;
  EntryRow row;
  Use q(reader->stream_rows);
  q.Bind(1, std::string_view(patient_id));
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    if (auto st = ReadRow(q, row); !st.ok()) return st.error();
    if (auto st = chain.Next(row); !st.ok()) return st.error();
    auto entry = DecodeEntry(row, key->has_value() ? &**key : nullptr, impl_->read_options);
    if (!entry.ok()) return entry.error();
    stream.entries.push_back(std::move(*entry));
  }
  if (rc != SQLITE_DONE) return SqliteError(reader->db.get(), "reading a stream");
  stream.version = chain.version();
  return stream;
}

Result<std::vector<StoredEntry>> SqliteEventStore::ReadAll(int64_t after, size_t limit) {
  std::vector<StoredEntry> out;
  limit = std::min(limit, kMaxReadAllEntries);
  if (limit == 0) return out;
  auto acquired = impl_->AcquireReader();
  if (!acquired.ok()) return acquired.error();
  ReaderLease reader(*impl_, std::move(*acquired));
  ReadTransaction txn(reader->db, reader->begin, reader->rollback);
  if (auto st = txn.Begin(); !st.ok()) return st.error();

  std::unordered_map<std::string, std::optional<PatientKey>> keys;
  EntryRow row;
  Use q(reader->rows_after);
  q.Bind(1, after).Bind(2, static_cast<int64_t>(limit));
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    if (auto st = ReadRow(q, row); !st.ok()) return st.error();
    if (EntryHash(row) != row.hash) {
      return Error::Internal("patient " + row.patient_id + " version " +
                             std::to_string(row.version) +
                             ": hash does not match the entry (it was changed after it was "
                             "written)");
    }
    auto it = keys.find(row.patient_id);
    if (it == keys.end()) {
      auto key = ReadKey(reader->key, row.patient_id, reader->db.get());
      if (!key.ok()) return key.error();
      it = keys.emplace(row.patient_id, std::move(*key)).first;
    }
    auto entry =
        DecodeEntry(row, it->second.has_value() ? &*it->second : nullptr, impl_->read_options);
    if (!entry.ok()) return entry.error();
    out.push_back(std::move(*entry));
  }
  if (rc != SQLITE_DONE) return SqliteError(reader->db.get(), "reading the log");
  return out;
}

Result<VerifyReport> SqliteEventStore::Verify() {
  auto acquired = impl_->AcquireReader();
  if (!acquired.ok()) return acquired.error();
  ReaderLease reader(*impl_, std::move(*acquired));
  ReadTransaction txn(reader->db, reader->begin, reader->rollback);
  if (auto st = txn.Begin(); !st.ok()) return st.error();
  sqlite3* db = reader->db.get();

  VerifyReport report;
  std::string current;
  ChainCheck chain;
  std::optional<PatientKey> key;
  EntryRow row;
  {
    Use q(reader->all_rows);
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      if (auto st = ReadRow(q, row); !st.ok()) {
        report.first_problem = "patient " + std::string(q.Text(1)) + " version " +
                               std::to_string(q.Int(2)) + ": " + st.error().message;
        return report;
      }
      if (report.streams_checked == 0 || row.patient_id != current) {
        current = row.patient_id;
        ++report.streams_checked;
        chain = ChainCheck();
        auto found = ReadKey(reader->key, current, db);
        if (!found.ok()) {
          report.first_problem = found.error().message;
          return report;
        }
        key = std::move(*found);
        if (!key.has_value()) {
          Use e(reader->erasure);
          e.Bind(1, std::string_view(current));
          const int erc = e.Step();
          if (erc == SQLITE_DONE) {
            report.first_problem =
                "patient " + current + ": the key is missing, and no erasure was recorded";
            return report;
          }
          if (erc != SQLITE_ROW) return SqliteError(db, "reading the audit table");
        }
      }
      if (auto st = chain.Next(row); !st.ok()) {
        report.first_problem = st.error().message;
        return report;
      }
      if (key.has_value()) {
        if (auto entry = DecodeEntry(row, &*key, impl_->read_options); !entry.ok()) {
          report.first_problem = entry.error().message;
          return report;
        }
      }
      ++report.entries_checked;
    }
    if (rc != SQLITE_DONE) return SqliteError(db, "walking the log");
  }
  Use q(reader->empty_stream);
  const int rc = q.Step();
  if (rc == SQLITE_ROW) {
    report.first_problem = "patient " + std::string(q.Text(0)) + ": the stream has no entries";
  } else if (rc != SQLITE_DONE) {
    return SqliteError(db, "checking the streams");
  }
  return report;
}

Status SqliteEventStore::Backup(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(path, ec)) {
    return Error::BadInput("already exists; a backup never overwrites a file", "backup " + path);
  }
  const std::string partial = path + ".partial";
  fs::remove(partial, ec);

  auto acquired = impl_->AcquireReader();
  if (!acquired.ok()) return acquired.error();
  ReaderLease reader(*impl_, std::move(*acquired));
  {
    auto dest = Connection::Open(partial, true, impl_->options.busy_timeout_ms);
    if (!dest.ok()) return dest.error();
    // One step copies every page inside one read transaction of the source: a consistent
    // snapshot that the WAL lets writers go on beside. (Copying in several steps would restart
    // whenever the writer commits, which under load could be forever.)
    sqlite3_backup* backup = sqlite3_backup_init(dest->get(), "main", reader->db.get(), "main");
    if (backup == nullptr) return SqliteError(dest->get(), "starting the backup");
    const int rc = sqlite3_backup_step(backup, -1);
    sqlite3_backup_finish(backup);
    if (rc != SQLITE_DONE) {
      Error error = SqliteError(dest->get(), "copying the database");
      fs::remove(partial, ec);
      return error;
    }
  }
  // The copy is complete and closed: make it durable, then give it its name.
  if (auto st = SyncPath(partial, false); !st.ok()) return st;
  fs::rename(partial, path, ec);
  if (ec) return Error::Internal("cannot rename " + partial + " to " + path + ": " + ec.message());
  fs::path dir = fs::path(path).parent_path();
  return SyncPath(dir.empty() ? std::string(".") : dir.string(), true);
}

Result<PatientState> SqliteEventStore::ReadState(const std::string& patient_id) {
  if (patient_id.size() > kMaxPatientIdBytes) {
    return Error::BadInput("is " + std::to_string(patient_id.size()) + " bytes; at most " +
                               std::to_string(kMaxPatientIdBytes) + " are allowed",
                           "patient_id");
  }
  auto acquired = impl_->AcquireReader();
  if (!acquired.ok()) return acquired.error();
  ReaderLease reader(*impl_, std::move(*acquired));
  ReadTransaction txn(reader->db, reader->begin, reader->rollback);
  if (auto st = txn.Begin(); !st.ok()) return st.error();
  sqlite3* db = reader->db.get();

  PatientState out;
  out.patient_id = patient_id;
  int64_t head_version = 0;
  int64_t head_position = 0;
  {
    Use q(reader->head);
    q.Bind(1, std::string_view(patient_id));
    const int rc = q.Step();
    if (rc == SQLITE_ROW) {
      head_version = q.Int(0);
      head_position = q.Int(1);
    } else if (rc != SQLITE_DONE) {
      return SqliteError(db, "reading the stream's head");
    }
  }
  if (head_version == 0) return out;  // no such patient
  auto key = ReadKey(reader->key, patient_id, db);
  if (!key.ok()) return key.error();
  if (!key->has_value()) {
    out.erased = true;
    out.version = head_version;
    out.position = head_position;
    return out;
  }
  const std::string damaged = "patient " + patient_id + ": ";
  const std::string remedy = " (`isoguard rebuild` recomputes it from the log)";
  Use q(reader->state);
  q.Bind(1, std::string_view(patient_id));
  const int rc = q.Step();
  if (rc == SQLITE_DONE) return Error::Internal(damaged + "the state is missing" + remedy);
  if (rc != SQLITE_ROW) return SqliteError(db, "reading a patient's state");
  int64_t version = q.Int(0);
  int64_t position = q.Int(1);
  if (version > head_version || (version == head_version && position != head_position)) {
    return Error::Internal(damaged + "the state is at version " + std::to_string(version) +
                           ", the stream at version " + std::to_string(head_version) + remedy);
  }
  auto state = OpenState(**key, patient_id, version, q.Blob(2));
  if (!state.ok()) return Error::Internal(damaged + state.error().message + remedy);
  // The entries after the snapshot.
  if (version < head_version) {
    if (auto st = FoldTail(reader->tail_rows, db, patient_id, **key, impl_->read_options, *state,
                           version, position);
        !st.ok()) {
      return Error::Internal(st.error().message);
    }
    if (version != head_version || position != head_position) {
      return Error::Internal(damaged + "the stream's newest entries end at version " +
                             std::to_string(version) + ", its head is at version " +
                             std::to_string(head_version));
    }
  }
  auto record = StateRecordJson(*state);
  if (!record.ok()) return Error::Internal(damaged + "the state has no patient object" + remedy);
  out.version = version;
  out.position = position;
  out.record_json = std::move(*record);
  return out;
}

Result<std::vector<StreamVersion>> SqliteEventStore::ReadVersions(
    const std::vector<std::string>& patient_ids) {
  if (auto st = CheckVersionsRequest(patient_ids); !st.ok()) return st.error();
  std::vector<StreamVersion> out(patient_ids.size());
  if (patient_ids.empty()) return out;
  auto acquired = impl_->AcquireReader();
  if (!acquired.ok()) return acquired.error();
  ReaderLease reader(*impl_, std::move(*acquired));
  ReadTransaction txn(reader->db, reader->begin, reader->rollback);
  if (auto st = txn.Begin(); !st.ok()) return st.error();
  for (size_t i = 0; i < patient_ids.size(); ++i) {
    Use q(reader->version);
    q.Bind(1, std::string_view(patient_ids[i]));
    const int rc = q.Step();
    if (rc == SQLITE_ROW) {
      out[i].version = q.Int(0);
      out[i].erased = q.Int(1) != 0;
    } else if (rc != SQLITE_DONE) {
      return SqliteError(reader->db.get(), "reading the streams' versions");
    }
  }
  return out;
}

Result<std::vector<SqliteEventStore::StreamStart>> SqliteEventStore::ListStreams(
    int64_t after_position, size_t limit) {
  std::vector<StreamStart> out;
  limit = std::min(limit, kMaxReadAllEntries);
  if (limit == 0) return out;
  auto acquired = impl_->AcquireReader();
  if (!acquired.ok()) return acquired.error();
  ReaderLease reader(*impl_, std::move(*acquired));
  Use q(reader->stream_starts);
  q.Bind(1, after_position).Bind(2, static_cast<int64_t>(limit));
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW)
    out.push_back(StreamStart{q.Int(0), std::string(q.Text(1))});
  if (rc != SQLITE_DONE) return SqliteError(reader->db.get(), "listing the streams");
  return out;
}

Result<RebuildReport> SqliteEventStore::RebuildProjections() {
  const size_t per_batch = std::max<size_t>(impl_->options.max_rebuild_patients, 1);
  RebuildReport total;
  std::string after;  // patient ids are never empty: "" comes before every one
  for (;;) {
    RebuildBatch batch;
    {
      auto acquired = impl_->AcquireReader();
      if (!acquired.ok()) return acquired.error();
      ReaderLease reader(*impl_, std::move(*acquired));
      Use q(reader->stream_page);
      q.Bind(1, std::string_view(after)).Bind(2, static_cast<int64_t>(per_batch));
      int rc;
      while ((rc = q.Step()) == SQLITE_ROW) batch.patients.emplace_back(q.Text(0));
      if (rc != SQLITE_DONE) return SqliteError(reader->db.get(), "listing the streams");
    }
    batch.remove_orphans = batch.patients.size() < per_batch;
    WriteRequest r;
    r.rebuild = &batch;
    impl_->Submit(r);
    if (!r.status.ok()) return r.status.error();
    total.patients += batch.report.patients;
    total.entries += batch.report.entries;
    total.repaired += batch.report.repaired;
    total.removed += batch.report.removed;
    if (batch.remove_orphans) return total;
    after = batch.patients.back();
  }
}

std::vector<Result<AppendResult>> SqliteEventStore::AppendPrepared(
    std::vector<PreparedAppend>& appends) {
  std::vector<WriteRequest> requests;
  requests.reserve(appends.size());
  for (PreparedAppend& a : appends) {
    if (a.valid()) requests.emplace_back().prepared = &a.data();
  }
  impl_->SubmitAll(requests);
  std::vector<Result<AppendResult>> results;
  results.reserve(appends.size());
  size_t next = 0;
  for (PreparedAppend& a : appends) {
    if (!a.valid()) {
      results.push_back(Error::Internal("a prepared append was used already (moved from)"));
      continue;
    }
    results.push_back(std::move(requests[next++].append_result));
  }
  return results;
}

PreparedAppend::PreparedAppend() : data_(std::make_unique<Data>()) {}
PreparedAppend::PreparedAppend(std::unique_ptr<Data> data) : data_(std::move(data)) {}
PreparedAppend::~PreparedAppend() = default;
PreparedAppend::PreparedAppend(PreparedAppend&&) noexcept = default;
PreparedAppend& PreparedAppend::operator=(PreparedAppend&&) noexcept = default;
const std::string& PreparedAppend::patient_id() const {
  static const std::string kNone;
  return data_ != nullptr ? data_->patient_id : kNone;
}
size_t PreparedAppend::entry_count() const { return data_ != nullptr ? data_->rows.size() : 0; }

Status SqliteEventStore::Restore(const std::string& backup_path, const std::string& path,
                                 const SqliteOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto holds_data = [&ec](const std::string& file) {
    return fs::exists(file, ec) && (!fs::is_regular_file(file, ec) || fs::file_size(file, ec) > 0);
  };
  if (holds_data(path)) {
    return Error::BadInput(
        "already holds data; a restore never overwrites (restore into a new "
        "path, or move the file away first)",
        "db");
  }
  if (holds_data(path + "-wal")) {
    return Error::BadInput("a write-ahead log " + path +
                               "-wal is there without its database; "
                               "move it away before restoring",
                           "db");
  }
  if (!fs::is_regular_file(backup_path, ec)) {
    return Error::BadInput("no backup file at '" + backup_path + "'", "backup");
  }
  // The backup is opened read-only: restoring must not change it. Reading a file in WAL mode
  // makes SQLite create its -wal and -shm files; those it made (and left empty) go again.
  const bool had_wal = fs::exists(backup_path + "-wal", ec);
  const bool had_shm = fs::exists(backup_path + "-shm", ec);
  sqlite3* source = nullptr;
  const int open_rc = sqlite3_open_v2(backup_path.c_str(), &source,
                                      SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  auto close_source = [&] {
    sqlite3_close_v2(source);
    source = nullptr;
    std::error_code ignored;
    if (!had_wal && fs::exists(backup_path + "-wal", ignored) &&
        fs::file_size(backup_path + "-wal", ignored) == 0) {
      fs::remove(backup_path + "-wal", ignored);
      if (!had_shm) fs::remove(backup_path + "-shm", ignored);
    }
  };
  if (open_rc != SQLITE_OK) {
    const std::string message = source != nullptr ? sqlite3_errmsg(source) : "cannot open";
    close_source();
    return Error::BadInput("cannot open the backup: " + message, "backup");
  }
  sqlite3_busy_timeout(source, options.busy_timeout_ms);
  int64_t application_id = -1;
  int64_t version = -1;
  {
    sqlite3_stmt* stmt = nullptr;
    for (const char* pragma : {"PRAGMA application_id", "PRAGMA user_version"}) {
      int64_t value = -1;
      if (sqlite3_prepare_v2(source, pragma, -1, &stmt, nullptr) == SQLITE_OK &&
          sqlite3_step(stmt) == SQLITE_ROW) {
        value = sqlite3_column_int64(stmt, 0);
      }
      sqlite3_finalize(stmt);
      stmt = nullptr;
      (application_id == -1 ? application_id : version) = value;
    }
  }
  if (application_id != kSqliteApplicationId || version < 1) {
    close_source();
    return Error::BadInput("'" + backup_path + "' is not a backup of an isoguard event store",
                           "backup");
  }
  if (version > kSqliteSchemaVersion) {
    close_source();
    return Error::BadInput("the backup has schema version " + std::to_string(version) +
                               ", newer than this build's " + std::to_string(kSqliteSchemaVersion),
                           "backup");
  }

  // Copied under a temporary name in the target's directory, synced, then renamed: a restore
  // that fails half-way leaves nothing at `path`.
  const std::string partial = path + ".restore-partial";
  fs::remove(partial, ec);
  auto discard = [&partial] {
    std::error_code ignored;
    fs::remove(partial, ignored);
    fs::remove(partial + "-journal", ignored);
  };
  {
    auto dest = Connection::Open(partial, true, options.busy_timeout_ms);
    if (!dest.ok()) {
      close_source();
      discard();
      return dest.error();
    }
    sqlite3_backup* backup = sqlite3_backup_init(dest->get(), "main", source, "main");
    if (backup == nullptr) {
      Error error = SqliteError(dest->get(), "starting the restore");
      close_source();
      discard();
      return error;
    }
    const int rc = sqlite3_backup_step(backup, -1);
    sqlite3_backup_finish(backup);
    if (rc != SQLITE_DONE) {
      Error error = SqliteError(dest->get(), "copying the backup");
      close_source();
      discard();
      return error;
    }
  }
  close_source();
  if (auto st = SyncPath(partial, false); !st.ok()) {
    discard();
    return st;
  }
  fs::rename(partial, path, ec);
  if (ec) {
    discard();
    return Error::Internal("cannot rename " + partial + " to " + path + ": " + ec.message());
  }
  fs::path dir = fs::path(path).parent_path();
  return SyncPath(dir.empty() ? std::string(".") : dir.string(), true);
}

}  // namespace isoguard::store
