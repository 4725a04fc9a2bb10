#include "service/sqlite_service_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "store/sqlite/busy_wait.h"
#include "store/sqlite/sqlite_event_store.h"

namespace isoguard::service {
namespace {

using detail::Cell;
using detail::Rows;

// ===========================================================================================
// The schema, one migration per version (a migration never changes once released). Every
// table is STRICT; every List* query has its index (ListQueries; the tests check the plans).
// The append-only tables refuse UPDATE and DELETE with triggers.
// ===========================================================================================

constexpr const char* kMigration1 = R"sql(
CREATE TABLE svc_schema (
  singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
  version INTEGER NOT NULL CHECK (version >= 1)
) STRICT;
INSERT INTO svc_schema (singleton, version) VALUES (1, 1);

CREATE TABLE svc_organisations (
  id TEXT NOT NULL PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('clinic', 'pharmacy', 'program')),
  name TEXT NOT NULL,
  jurisdiction TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE svc_accounts (
  id TEXT NOT NULL PRIMARY KEY,
  org_id TEXT NOT NULL REFERENCES svc_organisations (id),
  role TEXT NOT NULL
    CHECK (role IN ('prescriber', 'clinic_staff', 'pharmacist', 'patient', 'admin')),
  name TEXT NOT NULL,
  patient_id TEXT NOT NULL,
  password_hash TEXT NOT NULL,
  disabled INTEGER NOT NULL CHECK (disabled IN (0, 1)),
  created_at_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX svc_accounts_by_org ON svc_accounts (org_id, id);

CREATE TABLE svc_tokens (
  id INTEGER PRIMARY KEY,
  hash BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
  account_id TEXT NOT NULL REFERENCES svc_accounts (id),
  kind TEXT NOT NULL,
  label TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL,
  expires_at_ms INTEGER NOT NULL,
  revoked_at_ms INTEGER
) STRICT;
CREATE INDEX svc_tokens_by_account ON svc_tokens (account_id, id);

CREATE TABLE svc_care_links (
  patient_id TEXT NOT NULL PRIMARY KEY,
  clinic_id TEXT NOT NULL REFERENCES svc_organisations (id),
  prescriber_id TEXT NOT NULL,
  since_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX svc_care_links_by_clinic ON svc_care_links (clinic_id, patient_id);

CREATE TABLE svc_audit (
  id INTEGER PRIMARY KEY,
  at_ms INTEGER NOT NULL,
  request_id TEXT NOT NULL,
  actor_id TEXT NOT NULL,
  actor_role TEXT NOT NULL,
  org_id TEXT NOT NULL,
  source TEXT NOT NULL,
  action TEXT NOT NULL,
  patient_id TEXT NOT NULL,
  outcome TEXT NOT NULL,
  status INTEGER NOT NULL,
  detail TEXT NOT NULL
) STRICT;
CREATE INDEX svc_audit_by_patient ON svc_audit (patient_id, id);
CREATE INDEX svc_audit_by_actor ON svc_audit (actor_id, id);

CREATE TABLE svc_authorizations (
  id TEXT NOT NULL PRIMARY KEY,
  patient_id TEXT NOT NULL,
  prescription_id TEXT NOT NULL,
  pharmacy_id TEXT NOT NULL,
  pharmacist_id TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL,
  dispense_by_ms INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('open', 'dispensed', 'reversed')),
  closed_at_ms INTEGER,
  closed_by TEXT NOT NULL,
  lot_id TEXT NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX svc_authorizations_open_by_pharmacy ON svc_authorizations
  (pharmacy_id, dispense_by_ms, id) WHERE status = 'open';
CREATE INDEX svc_authorizations_open_by_due ON svc_authorizations
  (dispense_by_ms, id) WHERE status = 'open';
CREATE INDEX svc_authorizations_open_by_patient ON svc_authorizations
  (patient_id, dispense_by_ms, id) WHERE status = 'open';

CREATE TABLE svc_cursors (
  name TEXT NOT NULL PRIMARY KEY,
  position INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE svc_notifications (
  id INTEGER PRIMARY KEY,
  recipient_id TEXT NOT NULL,
  patient_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  severity TEXT NOT NULL,
  message TEXT NOT NULL,
  dedupe_key TEXT UNIQUE,
  created_at_ms INTEGER NOT NULL,
  read_at_ms INTEGER
) STRICT;
CREATE INDEX svc_notifications_by_recipient ON svc_notifications (recipient_id, id);

CREATE TABLE svc_webhooks (
  id INTEGER PRIMARY KEY,
  org_id TEXT NOT NULL REFERENCES svc_organisations (id),
  url TEXT NOT NULL,
  secret TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX svc_webhooks_by_org ON svc_webhooks (org_id, id);

CREATE TABLE svc_deliveries (
  id INTEGER PRIMARY KEY,
  webhook_id INTEGER NOT NULL REFERENCES svc_webhooks (id),
  notification_id INTEGER NOT NULL REFERENCES svc_notifications (id),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at_ms INTEGER NOT NULL,
  delivered_at_ms INTEGER,
  last_error TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX svc_deliveries_due ON svc_deliveries (next_attempt_at_ms, id)
  WHERE delivered_at_ms IS NULL;

CREATE TABLE svc_pregnancy_reports (
  id INTEGER PRIMARY KEY,
  patient_id TEXT NOT NULL,
  event_id TEXT NOT NULL UNIQUE,
  program_id TEXT NOT NULL,
  clinic_id TEXT NOT NULL,
  reported_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE svc_lots (
  id TEXT NOT NULL PRIMARY KEY,
  pharmacy_id TEXT NOT NULL REFERENCES svc_organisations (id),
  product TEXT NOT NULL,
  strength_mg REAL NOT NULL,
  lot_number TEXT NOT NULL,
  expiry_days INTEGER NOT NULL,
  location TEXT NOT NULL,
  quantity_capsules INTEGER NOT NULL CHECK (quantity_capsules >= 0),
  received_at_ms INTEGER NOT NULL,
  quarantined INTEGER NOT NULL CHECK (quarantined IN (0, 1)),
  quarantine_reason TEXT NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX svc_lots_by_pharmacy ON svc_lots (pharmacy_id, id);
CREATE INDEX svc_lots_by_location ON svc_lots (pharmacy_id, location);

CREATE TABLE svc_temperature_readings (
  id INTEGER PRIMARY KEY,
  pharmacy_id TEXT NOT NULL REFERENCES svc_organisations (id),
  location TEXT NOT NULL,
  at_ms INTEGER NOT NULL,
  celsius REAL NOT NULL,
  recorded_by TEXT NOT NULL
) STRICT;
CREATE INDEX svc_temperature_readings_by_pharmacy ON svc_temperature_readings (pharmacy_id, id);

CREATE TABLE svc_quarantine_events (
  id INTEGER PRIMARY KEY,
  lot_id TEXT NOT NULL REFERENCES svc_lots (id),
  action TEXT NOT NULL CHECK (action IN ('quarantine', 'release')),
  reason TEXT NOT NULL,
  at_ms INTEGER NOT NULL,
  by_id TEXT NOT NULL
) STRICT;
CREATE INDEX svc_quarantine_events_by_lot ON svc_quarantine_events (lot_id, id);

CREATE TRIGGER svc_audit_is_never_updated BEFORE UPDATE ON svc_audit
BEGIN SELECT RAISE(ABORT, 'svc_audit is append-only'); END;
CREATE TRIGGER svc_audit_is_never_deleted BEFORE DELETE ON svc_audit
BEGIN SELECT RAISE(ABORT, 'svc_audit is append-only'); END;
CREATE TRIGGER svc_temperature_readings_are_never_updated BEFORE UPDATE ON svc_temperature_readings
BEGIN SELECT RAISE(ABORT, 'svc_temperature_readings is append-only'); END;
CREATE TRIGGER svc_temperature_readings_are_never_deleted BEFORE DELETE ON svc_temperature_readings
BEGIN SELECT RAISE(ABORT, 'svc_temperature_readings is append-only'); END;
CREATE TRIGGER svc_quarantine_events_are_never_updated BEFORE UPDATE ON svc_quarantine_events
BEGIN SELECT RAISE(ABORT, 'svc_quarantine_events is append-only'); END;
CREATE TRIGGER svc_quarantine_events_are_never_deleted BEFORE DELETE ON svc_quarantine_events
BEGIN SELECT RAISE(ABORT, 'svc_quarantine_events is append-only'); END;
CREATE TRIGGER svc_pregnancy_reports_are_never_updated BEFORE UPDATE ON svc_pregnancy_reports
BEGIN SELECT RAISE(ABORT, 'svc_pregnancy_reports is append-only'); END;
CREATE TRIGGER svc_pregnancy_reports_are_never_deleted BEFORE DELETE ON svc_pregnancy_reports
BEGIN SELECT RAISE(ABORT, 'svc_pregnancy_reports is append-only'); END;
)sql";

constexpr const char* kMigrations[] = {kMigration1};
static_assert(std::size(kMigrations) == kSqliteServiceSchemaVersion);

// ===========================================================================================
// Thin RAII over the C API: a connection with its prepared statements, kept by SQL text.
// ===========================================================================================

Error SqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string message = std::string(what.substr(0, 80)) + ": " + sqlite3_errmsg(db) +
                        " (SQLite error " + std::to_string(rc) + ")";
  switch (rc) {
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE:
      return Error::Conflict(std::move(message));
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return Error::NotFound(std::move(message));
    case SQLITE_BUSY:
    case SQLITE_BUSY_SNAPSHOT:
    case SQLITE_BUSY_TIMEOUT:
      return Error::Unavailable(std::move(message));
    default:
      break;
  }
  // The storage refusing writes (full, or a read-only file system), whichever extended code
  // SQLite gives it: kUnavailable, so that the service answers 503 and goes on reading.
  const int primary = rc & 0xff;
  const int system_errno = sqlite3_system_errno(db);
  const bool io = primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN;
  if (primary == SQLITE_FULL || (io && (system_errno == ENOSPC || system_errno == EDQUOT))) {
    return Error::Unavailable("the storage is full (" + message + ")");
  }
  // A file system that turned read-only under the store (ext4 after a disk error) shows as a
  // plain I/O error, and SQLite's saved errno is not reliable: opening the WAL file for writing
  // says it (the WAL holds no POSIX locks, so closing it releases none of SQLite's).
  bool read_only_fs = false;
  const char* file = sqlite3_db_filename(db, "main");
  if (io && file != nullptr && *file != '\0') {
    struct statvfs fs {};
    read_only_fs = ::statvfs(file, &fs) == 0 && (fs.f_flag & ST_RDONLY) != 0;
    const std::string wal = std::string(file) + "-wal";
    const int fd = read_only_fs ? -1 : ::open(wal.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) ::close(fd);
    read_only_fs = read_only_fs || (fd < 0 && errno == EROFS);
  }
  if (primary == SQLITE_READONLY || (io && system_errno == EROFS) || read_only_fs) {
    return Error::Unavailable("the storage is read-only (" + message + ")");
  }
  return Error::Internal(std::move(message));
}

class Connection final : public detail::SqlTx {
 public:
  Connection() = default;
  ~Connection() override {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    if (db_ != nullptr) sqlite3_close_v2(db_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  static Result<std::unique_ptr<Connection>> Open(const std::string& path, int busy_timeout_ms) {
    auto c = std::make_unique<Connection>();
    // No SQLITE_OPEN_CREATE: the file is the event store's, made when it was opened.
    const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
    const int rc = sqlite3_open_v2(path.c_str(), &c->db_, flags, nullptr);
    if (rc != SQLITE_OK) {
      std::string message = c->db_ != nullptr ? sqlite3_errmsg(c->db_) : sqlite3_errstr(rc);
      return Error::BadInput("cannot open the database " + path + ": " + message +
                                 " (open the event store first: it creates the file)",
                             "db");
    }
    sqlite3_extended_result_codes(c->db_, 1);
    c->busy_.Install(c->db_, busy_timeout_ms);
    // The event store put the file in WAL mode (a property of the file); these are per
    // connection. FULL: a commit is synced, so an acknowledged write survives power loss.
    if (auto st = c->Exec("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"); !st.ok()) {
      return st.error();
    }
    return c;
  }

  sqlite3* get() const { return db_; }

  Status Exec(const char* sql) {
    char* message = nullptr;
    const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &message);
    if (rc == SQLITE_OK) return {};
    std::string text = message != nullptr ? message : sqlite3_errstr(rc);
    sqlite3_free(message);
    Error e = SqliteError(db_, sqlite3_extended_errcode(db_), sql);
    e.message = "SQLite: " + text + " (error " + std::to_string(rc) +
                ") in: " + std::string(std::string_view(sql).substr(0, 80));
    return e;
  }

  Result<Rows> Query(std::string_view sql, const std::vector<Cell>& params) override {
    auto found = statements_.find(std::string(sql));
    sqlite3_stmt* stmt = nullptr;
    if (found != statements_.end()) {
      stmt = found->second;
    } else {
      if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                             SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
        return SqliteError(db_, sqlite3_extended_errcode(db_),
                           "preparing " + std::string(sql.substr(0, 80)));
      }
      statements_.emplace(std::string(sql), stmt);
    }
    // Reset when done, so that the statement holds no snapshot or lock afterwards.
    struct Reset {
      sqlite3_stmt* s;
      ~Reset() {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
      }
    } reset{stmt};
    for (size_t i = 0; i < params.size(); ++i) {
      const Cell& p = params[i];
      const int at = static_cast<int>(i) + 1;
      switch (p.type) {
        case Cell::Type::kNull:
          sqlite3_bind_null(stmt, at);
          break;
        case Cell::Type::kInt:
          sqlite3_bind_int64(stmt, at, p.i);
          break;
        case Cell::Type::kDouble:
          sqlite3_bind_double(stmt, at, p.d);
          break;
        case Cell::Type::kText:
          if (p.blob) {
            sqlite3_bind_blob64(stmt, at, p.s.data(), p.s.size(), SQLITE_STATIC);
          } else {
            sqlite3_bind_text64(stmt, at, p.s.data(), p.s.size(), SQLITE_STATIC, SQLITE_UTF8);
          }
          break;
      }
    }
    Rows out;
    const int columns = sqlite3_column_count(stmt);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      auto& row = out.rows.emplace_back(static_cast<size_t>(columns));
      for (int c = 0; c < columns; ++c) {
        Cell& cell = row[static_cast<size_t>(c)];
        switch (sqlite3_column_type(stmt, c)) {
          case SQLITE_INTEGER:
            cell.type = Cell::Type::kInt;
            cell.i = sqlite3_column_int64(stmt, c);
            break;
          case SQLITE_FLOAT:
            cell.type = Cell::Type::kDouble;
            cell.d = sqlite3_column_double(stmt, c);
            break;
          case SQLITE_TEXT: {
            cell.type = Cell::Type::kText;
            const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
            cell.s.assign(p, static_cast<size_t>(sqlite3_column_bytes(stmt, c)));
            break;
          }
          case SQLITE_BLOB: {
            cell.type = Cell::Type::kText;
            cell.blob = true;
            const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt, c));
            if (p != nullptr) cell.s.assign(p, static_cast<size_t>(sqlite3_column_bytes(stmt, c)));
            break;
          }
          default:
            break;
        }
      }
    }
    if (rc != SQLITE_DONE) return SqliteError(db_, rc, sql);
    out.affected = sqlite3_changes64(db_);
    return out;
  }

  Status SerializeAudit() override {
    return {};  // the write transaction already is
  }

 private:
  store::BusyWait busy_;  // before db_: outlives the connection's handler
  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, sqlite3_stmt*> statements_;
};

// ===========================================================================================
// The database: one writer connection (a mutex), a pool of readers.
// ===========================================================================================

class SqliteDatabase final : public detail::SqlDatabase {
 public:
  SqliteDatabase(std::string path, SqliteServiceOptions options, std::unique_ptr<Connection> w)
      : path_(std::move(path)), options_(options), writer_(std::move(w)) {}

  Status Run(bool write, const std::function<Status(detail::SqlTx&)>& fn) override {
    if (write) {
      std::lock_guard lock(writer_mu_);
      return InTransaction(*writer_, "BEGIN IMMEDIATE", fn);
    }
    auto reader = Acquire();
    if (!reader.ok()) return reader.error();
    Status st = InTransaction(**reader, "BEGIN", fn);
    Release(std::move(*reader));
    return st;
  }

  Status RunRelaxed(const std::function<Status(detail::SqlTx&)>& fn) override {
    std::lock_guard lock(writer_mu_);
    // In WAL mode, NORMAL commits without syncing the WAL; the frames become durable with the
    // next synced commit (of any connection) or checkpoint.
    if (auto st = writer_->Exec("PRAGMA synchronous = NORMAL"); !st.ok()) return st;
    Status st = InTransaction(*writer_, "BEGIN IMMEDIATE", fn);
    if (auto back = writer_->Exec("PRAGMA synchronous = FULL"); !back.ok() && st.ok()) return back;
    return st;
  }

 private:
  static Status InTransaction(Connection& c, const char* begin,
                              const std::function<Status(detail::SqlTx&)>& fn) {
    if (auto st = c.Exec(begin); !st.ok()) return st;
    Status st = fn(c);
    if (st.ok()) st = c.Exec("COMMIT");
    if (!st.ok() && !sqlite3_get_autocommit(c.get())) (void)c.Exec("ROLLBACK");
    return st;
  }

  Result<std::unique_ptr<Connection>> Acquire() {
    {
      std::unique_lock lock(readers_mu_);
      readers_cv_.wait(lock, [&] {
        return !idle_.empty() || open_readers_ < std::max<size_t>(options_.max_readers, 1);
      });
      if (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        return c;
      }
      ++open_readers_;
    }
    auto c = Connection::Open(path_, options_.busy_timeout_ms);
    if (!c.ok()) {
      std::lock_guard lock(readers_mu_);
      --open_readers_;
      readers_cv_.notify_one();
      return c.error();
    }
    (void)(*c)->Exec("PRAGMA query_only = ON");
    return c;
  }

  void Release(std::unique_ptr<Connection> c) {
    std::lock_guard lock(readers_mu_);
    idle_.push_back(std::move(c));
    readers_cv_.notify_one();
  }

  std::string path_;
  SqliteServiceOptions options_;
  std::mutex writer_mu_;
  std::unique_ptr<Connection> writer_;
  std::mutex readers_mu_;
  std::condition_variable readers_cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  size_t open_readers_ = 0;
};

// The single value of a query, as an integer (0 when there is no row).
Result<int64_t> QueryInt(Connection& c, const char* sql) {
  auto r = c.Query(sql, {});
  if (!r.ok()) return r.error();
  if (r->empty() || r->rows[0].empty()) return int64_t{0};
  return r->rows[0][0].i;
}

// Creates or migrates the svc_* tables in one BEGIN IMMEDIATE transaction.
Status Migrate(Connection& c, const std::string& path) {
  if (auto st = c.Exec("BEGIN IMMEDIATE"); !st.ok()) return st;
  auto fail = [&c](Error e) -> Status {
    (void)c.Exec("ROLLBACK");
    return e;
  };
  auto app = QueryInt(c, "PRAGMA application_id");
  if (!app.ok()) return fail(app.error());
  auto store_version = QueryInt(c, "PRAGMA user_version");
  if (!store_version.ok()) return fail(store_version.error());
  if (*app != store::kSqliteApplicationId || *store_version < 1) {
    return fail(Error::BadInput("the database " + path +
                                    " is not an isoguard event store (open the event store "
                                    "first: the service's tables live beside it)",
                                "db"));
  }
  auto has_schema = QueryInt(
      c, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'svc_schema'");
  if (!has_schema.ok()) return fail(has_schema.error());
  int64_t version = 0;
  if (*has_schema != 0) {
    auto v = QueryInt(c, "SELECT version FROM svc_schema WHERE singleton = 1");
    if (!v.ok()) return fail(v.error());
    version = *v;
    if (version < 1) {
      return fail(
          Error::BadInput("the database " + path + " has a svc_schema without a version", "db"));
    }
  }
  if (version > kSqliteServiceSchemaVersion) {
    return fail(Error::BadInput(
        "the database " + path + " has service schema version " + std::to_string(version) +
            ", newer than this build's " + std::to_string(kSqliteServiceSchemaVersion) +
            "; open it with the newer isoguard that wrote it (nothing was changed)",
        "db"));
  }
  for (int v = static_cast<int>(version) + 1; v <= kSqliteServiceSchemaVersion; ++v) {
    if (auto st = c.Exec(kMigrations[v - 1]); !st.ok()) {
      return fail(Error::Internal("migration to service schema version " + std::to_string(v) +
                                  " failed: " + st.error().message));
    }
    const std::string set = "UPDATE svc_schema SET version = " + std::to_string(v);
    if (auto st = c.Exec(set.c_str()); !st.ok()) return fail(st.error());
  }
  if (auto st = c.Exec("COMMIT"); !st.ok()) return fail(st.error());
  return {};
}

}  // namespace

Result<std::unique_ptr<ServiceStore>> SqliteServiceStore::Open(
    const std::string& path, const SqliteServiceOptions& options) {
  auto writer = Connection::Open(path, options.busy_timeout_ms);
  if (!writer.ok()) return writer.error();
  if (auto st = Migrate(**writer, path); !st.ok()) return st.error();
  return detail::MakeSqlServiceStore(
      std::make_unique<SqliteDatabase>(path, options, std::move(*writer)));
}

}  // namespace isoguard::service
