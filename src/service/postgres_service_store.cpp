#include "service/postgres_service_store.h"

#include <libpq-fe.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "service/sqlite_service_store.h"
#include "store/postgres/pg_url.h"

namespace isoguard::service {
namespace {

using detail::Cell;
using detail::Rows;

// ===========================================================================================
// The schema isoguard_service, one migration per version (a migration never changes once
// released). Instants are bigint milliseconds since 1970 (*_ms), as in the SQLite backend:
// they come back exactly as written. Every List* query has its index.
// ===========================================================================================

constexpr const char* kMigration1 = R"sql(
CREATE SCHEMA isoguard_service;
CREATE TABLE isoguard_service.schema_version (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  version integer NOT NULL CHECK (version >= 1)
);
INSERT INTO isoguard_service.schema_version (version) VALUES (1);

CREATE TABLE isoguard_service.organisations (
  id text PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('clinic', 'pharmacy', 'program')),
  name text NOT NULL,
  jurisdiction text NOT NULL,
  created_at_ms bigint NOT NULL
);

CREATE TABLE isoguard_service.accounts (
  id text PRIMARY KEY,
  org_id text NOT NULL REFERENCES isoguard_service.organisations (id),
  role text NOT NULL
    CHECK (role IN ('prescriber', 'clinic_staff', 'pharmacist', 'patient', 'admin')),
  name text NOT NULL,
  patient_id text NOT NULL,
  password_hash text NOT NULL,
  disabled boolean NOT NULL,
  created_at_ms bigint NOT NULL
);
CREATE INDEX accounts_by_org ON isoguard_service.accounts (org_id, id);

CREATE TABLE isoguard_service.tokens (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  hash bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
  account_id text NOT NULL REFERENCES isoguard_service.accounts (id),
  kind text NOT NULL,
  label text NOT NULL,
  created_at_ms bigint NOT NULL,
  expires_at_ms bigint NOT NULL,
  revoked_at_ms bigint
);
CREATE INDEX tokens_by_account ON isoguard_service.tokens (account_id, id);

CREATE TABLE isoguard_service.care_links (
  patient_id text PRIMARY KEY,
  clinic_id text NOT NULL REFERENCES isoguard_service.organisations (id),
  prescriber_id text NOT NULL,
  since_ms bigint NOT NULL
);
CREATE INDEX care_links_by_clinic ON isoguard_service.care_links (clinic_id, patient_id);

CREATE TABLE isoguard_service.audit (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at_ms bigint NOT NULL,
  request_id text NOT NULL,
  actor_id text NOT NULL,
  actor_role text NOT NULL,
  org_id text NOT NULL,
  source text NOT NULL,
  action text NOT NULL,
  patient_id text NOT NULL,
  outcome text NOT NULL,
  status integer NOT NULL,
  detail text NOT NULL
);
CREATE INDEX audit_by_patient ON isoguard_service.audit (patient_id, id);
CREATE INDEX audit_by_actor ON isoguard_service.audit (actor_id, id);

CREATE TABLE isoguard_service.authorizations (
  id text PRIMARY KEY,
  patient_id text NOT NULL,
  prescription_id text NOT NULL,
  pharmacy_id text NOT NULL,
  pharmacist_id text NOT NULL,
  created_at_ms bigint NOT NULL,
  dispense_by_ms bigint NOT NULL,
  status text NOT NULL CHECK (status IN ('open', 'dispensed', 'reversed')),
  closed_at_ms bigint,
  closed_by text NOT NULL,
  lot_id text NOT NULL
);
CREATE INDEX authorizations_open_by_pharmacy ON isoguard_service.authorizations
  (pharmacy_id, dispense_by_ms, id) WHERE status = 'open';
CREATE INDEX authorizations_open_by_due ON isoguard_service.authorizations
  (dispense_by_ms, id) WHERE status = 'open';
CREATE INDEX authorizations_open_by_patient ON isoguard_service.authorizations
  (patient_id, dispense_by_ms, id) WHERE status = 'open';

CREATE TABLE isoguard_service.cursors (
  name text PRIMARY KEY,
  position bigint NOT NULL
);

CREATE TABLE isoguard_service.notifications (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  recipient_id text NOT NULL,
  patient_id text NOT NULL,
  kind text NOT NULL,
  severity text NOT NULL,
  message text NOT NULL,
  dedupe_key text UNIQUE,
  created_at_ms bigint NOT NULL,
  read_at_ms bigint
);
CREATE INDEX notifications_by_recipient ON isoguard_service.notifications (recipient_id, id);

CREATE TABLE isoguard_service.webhooks (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  org_id text NOT NULL REFERENCES isoguard_service.organisations (id),
  url text NOT NULL,
  secret text NOT NULL,
  created_at_ms bigint NOT NULL
);
CREATE INDEX webhooks_by_org ON isoguard_service.webhooks (org_id, id);

CREATE TABLE isoguard_service.deliveries (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  webhook_id bigint NOT NULL REFERENCES isoguard_service.webhooks (id),
  notification_id bigint NOT NULL REFERENCES isoguard_service.notifications (id),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at_ms bigint NOT NULL,
  delivered_at_ms bigint,
  last_error text NOT NULL DEFAULT ''
);
CREATE INDEX deliveries_due ON isoguard_service.deliveries (next_attempt_at_ms, id)
  WHERE delivered_at_ms IS NULL;

CREATE TABLE isoguard_service.pregnancy_reports (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  patient_id text NOT NULL,
  event_id text NOT NULL UNIQUE,
  program_id text NOT NULL,
  clinic_id text NOT NULL,
  reported_at_ms bigint NOT NULL
);

CREATE TABLE isoguard_service.lots (
  id text PRIMARY KEY,
  pharmacy_id text NOT NULL REFERENCES isoguard_service.organisations (id),
  product text NOT NULL,
  strength_mg double precision NOT NULL,
  lot_number text NOT NULL,
  expiry_days integer NOT NULL,
  location text NOT NULL,
  quantity_capsules bigint NOT NULL CHECK (quantity_capsules >= 0),
  received_at_ms bigint NOT NULL,
  quarantined boolean NOT NULL,
  quarantine_reason text NOT NULL
);
CREATE INDEX lots_by_pharmacy ON isoguard_service.lots (pharmacy_id, id);
CREATE INDEX lots_by_location ON isoguard_service.lots (pharmacy_id, location);

CREATE TABLE isoguard_service.temperature_readings (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  pharmacy_id text NOT NULL REFERENCES isoguard_service.organisations (id),
  location text NOT NULL,
  at_ms bigint NOT NULL,
  celsius double precision NOT NULL,
  recorded_by text NOT NULL
);
CREATE INDEX temperature_readings_by_pharmacy
  ON isoguard_service.temperature_readings (pharmacy_id, id);

CREATE TABLE isoguard_service.quarantine_events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  lot_id text NOT NULL REFERENCES isoguard_service.lots (id),
  action text NOT NULL CHECK (action IN ('quarantine', 'release')),
  reason text NOT NULL,
  at_ms bigint NOT NULL,
  by_id text NOT NULL
);
CREATE INDEX quarantine_events_by_lot ON isoguard_service.quarantine_events (lot_id, id);

CREATE FUNCTION isoguard_service.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'isoguard_service.% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER audit_is_append_only BEFORE UPDATE OR DELETE ON isoguard_service.audit
  FOR EACH ROW EXECUTE FUNCTION isoguard_service.refuse_change();
CREATE TRIGGER audit_is_never_truncated BEFORE TRUNCATE ON isoguard_service.audit
  FOR EACH STATEMENT EXECUTE FUNCTION isoguard_service.refuse_change();
CREATE TRIGGER temperature_readings_are_append_only BEFORE UPDATE OR DELETE
  ON isoguard_service.temperature_readings
  FOR EACH ROW EXECUTE FUNCTION isoguard_service.refuse_change();
CREATE TRIGGER temperature_readings_are_never_truncated BEFORE TRUNCATE
  ON isoguard_service.temperature_readings
  FOR EACH STATEMENT EXECUTE FUNCTION isoguard_service.refuse_change();
CREATE TRIGGER quarantine_events_are_append_only BEFORE UPDATE OR DELETE
  ON isoguard_service.quarantine_events
  FOR EACH ROW EXECUTE FUNCTION isoguard_service.refuse_change();
CREATE TRIGGER quarantine_events_are_never_truncated BEFORE TRUNCATE
  ON isoguard_service.quarantine_events
  FOR EACH STATEMENT EXECUTE FUNCTION isoguard_service.refuse_change();
CREATE TRIGGER pregnancy_reports_are_append_only BEFORE UPDATE OR DELETE
  ON isoguard_service.pregnancy_reports
  FOR EACH ROW EXECUTE FUNCTION isoguard_service.refuse_change();
CREATE TRIGGER pregnancy_reports_are_never_truncated BEFORE TRUNCATE
  ON isoguard_service.pregnancy_reports
  FOR EACH STATEMENT EXECUTE FUNCTION isoguard_service.refuse_change();
)sql";

constexpr const char* kMigrations[] = {kMigration1};
static_assert(std::size(kMigrations) == kPostgresServiceSchemaVersion);

// Held while migrating (two processes opening a new database do not both create the schema);
// distinct from the event store's.
constexpr int64_t kMigrationLockId = 0x49534F4753564331;  // "ISOGSVC1"
// Held by each audit append until it commits: ids are then committed in the order they are
// assigned, so a reader paging by id never skips a row committed after it read.
constexpr int64_t kAuditLockId = 0x49534F4741554454;  // "ISOGAUDT"

// Type OIDs of the results (pg_type.h; fixed since PostgreSQL 7).
constexpr Oid kBoolOid = 16;
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kInt2Oid = 21;
constexpr Oid kInt4Oid = 23;
constexpr Oid kFloat4Oid = 700;
constexpr Oid kFloat8Oid = 701;

using store::pg::DatabaseName;
using store::pg::OptionOf;
using store::pg::Redact;
using store::pg::UrlOptions;

// The shared SQL (svc_* tables, `?` parameters) in PostgreSQL's terms.
std::string Translate(std::string_view sql) {
  std::string out;
  out.reserve(sql.size() + 64);
  int n = 0;
  for (size_t i = 0; i < sql.size(); ++i) {
    if (sql[i] == '?') {
      out += "$" + std::to_string(++n);
    } else if (sql.substr(i).starts_with("svc_")) {
      out += "isoguard_service.";
      i += 3;
    } else {
      out += sql[i];
    }
  }
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return 0;
}

// ===========================================================================================
// A connection: its prepared statements, by SQL text.
// ===========================================================================================

class PgConnection final : public detail::SqlTx {
 public:
  PgConnection() = default;
  ~PgConnection() override {
    if (conn_ != nullptr) PQfinish(conn_);
  }
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  static Result<std::unique_ptr<PgConnection>> Connect(const std::string& url,
                                                       const std::string& password,
                                                       int connect_timeout_s) {
    auto c = std::make_unique<PgConnection>();
    c->password_ = password;
    const std::string timeout = std::to_string(std::max(1, connect_timeout_s));
    // The URL comes last: what it sets overrides the defaults before it.
    const char* keywords[] = {"connect_timeout", "fallback_application_name", "dbname", nullptr};
    const char* values[] = {timeout.c_str(), "isoguard", url.c_str(), nullptr};
    c->conn_ = PQconnectdbParams(keywords, values, 1);
    if (c->conn_ == nullptr) return Error::Internal("cannot connect to PostgreSQL: out of memory");
    if (PQstatus(c->conn_) != CONNECTION_OK) {
      return Error::Unavailable("cannot connect to PostgreSQL: " + c->LastMessage());
    }
    PQsetNoticeProcessor(
        c->conn_, [](void*, const char*) {}, nullptr);
    if (auto st = c->Setup(); !st.ok()) return st.error();
    return c;
  }

  bool healthy() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

  Status Reconnect() {
    prepared_.clear();
    PQreset(conn_);
    if (PQstatus(conn_) != CONNECTION_OK) {
      return Error::Unavailable("cannot reconnect to PostgreSQL: " + LastMessage());
    }
    return Setup();
  }

  std::string LastMessage() const {
    std::string text = conn_ != nullptr ? PQerrorMessage(conn_) : "no connection";
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return Redact(std::move(text), password_);
  }

  Error Failure(PGresult* r, std::string_view what) {
    std::string text = r != nullptr ? PQresultErrorMessage(r) : "";
    if (text.empty()) text = PQerrorMessage(conn_);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    std::string message =
        std::string(what.substr(0, 80)) + ": " + Redact(std::move(text), password_);
    if (state != nullptr) message += std::string(" (SQLSTATE ") + state + ")";
    const std::string_view code = state != nullptr ? state : "";
    if (!healthy()) {
      return Error::Unavailable(message +
                                " (the connection was lost; it is re-established on the next "
                                "request)");
    }
    if (code == "23505") return Error::Conflict(std::move(message));
    if (code == "23503") return Error::NotFound(std::move(message));
    if (code.starts_with("53") || code.starts_with("08") || code == "57P01") {
      return Error::Unavailable(std::move(message));
    }
    return Error::Internal(std::move(message));
  }

  // A simple query (one or more statements, no parameters).
  Status Exec(const char* sql) {
    PGresult* r = PQexec(conn_, sql);
    const ExecStatusType status = PQresultStatus(r);
    Status st;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) st = Failure(r, sql);
    PQclear(r);
    return st;
  }

  Result<Rows> Query(std::string_view sql, const std::vector<Cell>& params) override {
    std::string key(sql);
    auto found = prepared_.find(key);
    if (found == prepared_.end()) {
      const std::string name = "svc" + std::to_string(++statement_counter_);
      const std::string translated = Translate(sql);
      PGresult* r = PQprepare(conn_, name.c_str(), translated.c_str(), 0, nullptr);
      if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        Error e = Failure(r, "preparing " + translated);
        PQclear(r);
        return e;
      }
      PQclear(r);
      found = prepared_.emplace(std::move(key), name).first;
    }
    // Every parameter in text form, its type left to the server (from where it is used).
    std::vector<std::string> texts(params.size());
    std::vector<const char*> values(params.size(), nullptr);
    for (size_t i = 0; i < params.size(); ++i) {
      const Cell& p = params[i];
      switch (p.type) {
        case Cell::Type::kNull:
          continue;
        case Cell::Type::kInt:
          texts[i] = std::to_string(p.i);
          break;
        case Cell::Type::kDouble: {
          char buf[40];
          std::snprintf(buf, sizeof buf, "%.17g", p.d);
          texts[i] = buf;
          break;
        }
        case Cell::Type::kText:
          if (p.blob) {
            static constexpr char kHex[] = "0123456789abcdef";
            texts[i] = "\\x";
            for (char byte : p.s) {
              const auto ch = static_cast<unsigned char>(byte);
              texts[i] += kHex[ch >> 4];
              texts[i] += kHex[ch & 15];
            }
          } else {
            texts[i] = p.s;
          }
          break;
      }
      values[i] = texts[i].c_str();
    }
    PGresult* r = PQexecPrepared(conn_, found->second.c_str(), static_cast<int>(params.size()),
                                 values.data(), nullptr, nullptr, 0);
    const ExecStatusType status = PQresultStatus(r);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      Error e = Failure(r, Translate(sql));
      PQclear(r);
      return e;
    }
    Rows out;
    const int rows = PQntuples(r);
    const int columns = PQnfields(r);
    out.rows.resize(static_cast<size_t>(rows));
    for (int i = 0; i < rows; ++i) {
      auto& row = out.rows[static_cast<size_t>(i)];
      row.resize(static_cast<size_t>(columns));
      for (int c = 0; c < columns; ++c) {
        if (PQgetisnull(r, i, c)) continue;
        Cell& cell = row[static_cast<size_t>(c)];
        const char* v = PQgetvalue(r, i, c);
        const size_t length = static_cast<size_t>(PQgetlength(r, i, c));
        switch (PQftype(r, c)) {
          case kInt8Oid:
          case kInt4Oid:
          case kInt2Oid:
            cell.type = Cell::Type::kInt;
            cell.i = std::strtoll(v, nullptr, 10);
            break;
          case kBoolOid:
            cell.type = Cell::Type::kInt;
            cell.i = v[0] == 't' ? 1 : 0;
            break;
          case kFloat8Oid:
          case kFloat4Oid:
            // PostgreSQL 12 and later print the shortest text that reads back exactly.
            cell.type = Cell::Type::kDouble;
            cell.d = std::strtod(v, nullptr);
            break;
          case kByteaOid:
            cell.type = Cell::Type::kText;
            cell.blob = true;
            if (length >= 2 && v[0] == '\\' && v[1] == 'x') {
              for (size_t k = 2; k + 1 < length; k += 2) {
                cell.s += static_cast<char>(HexValue(v[k]) * 16 + HexValue(v[k + 1]));
              }
            }
            break;
          default:
            cell.type = Cell::Type::kText;
            cell.s.assign(v, length);
            break;
        }
      }
    }
    const char* affected = PQcmdTuples(r);
    out.affected =
        affected == nullptr || *affected == '\0' ? 0 : std::strtoll(affected, nullptr, 10);
    PQclear(r);
    return out;
  }

  Status SerializeAudit() override {
    auto r = Query("SELECT pg_advisory_xact_lock(" + std::to_string(kAuditLockId) + ")", {});
    if (!r.ok()) return r.error();
    return {};
  }

  void RollbackIfOpen() {
    if (!healthy()) return;
    const PGTransactionStatusType t = PQtransactionStatus(conn_);
    if (t == PQTRANS_INTRANS || t == PQTRANS_INERROR) PQclear(PQexec(conn_, "ROLLBACK"));
  }

 private:
  Status Setup() {
    return Exec("SET TIME ZONE 'UTC'; SET default_transaction_isolation = 'read committed'");
  }

  PGconn* conn_ = nullptr;
  std::string password_;
  std::unordered_map<std::string, std::string> prepared_;
  int statement_counter_ = 0;
};

// ===========================================================================================
// The database: a pool of connections.
// ===========================================================================================

class PostgresDatabase final : public detail::SqlDatabase {
 public:
  PostgresDatabase(std::string url, std::string password, PostgresServiceOptions options,
                   std::unique_ptr<PgConnection> first)
      : url_(std::move(url)), password_(std::move(password)), options_(options) {
    idle_.push_back(std::move(first));
    open_ = 1;
  }

  Status Run(bool write, const std::function<Status(detail::SqlTx&)>& fn) override {
    auto acquired = Acquire();
    if (!acquired.ok()) return acquired.error();
    std::unique_ptr<PgConnection> c = std::move(*acquired);
    Status st = RunOn(*c, write, fn);
    Release(std::move(c));
    return st;
  }

  Status RunRelaxed(const std::function<Status(detail::SqlTx&)>& fn) override {
    auto acquired = Acquire();
    if (!acquired.ok()) return acquired.error();
    std::unique_ptr<PgConnection> c = std::move(*acquired);
    // The commit does not wait for the WAL flush (it cannot corrupt, only lose the last
    // moments' commits at a server crash, in order).
    Status st = RunOn(*c, true, [&fn](detail::SqlTx& tx) -> Status {
      auto r = tx.Query("SET LOCAL synchronous_commit = off", {});
      if (!r.ok()) return r.error();
      return fn(tx);
    });
    Release(std::move(c));
    return st;
  }

 private:
  // One reconnection per call: when the connection is found broken before the transaction
  // began (an idle connection whose server went away), and for a read also after.
  static Status RunOn(PgConnection& c, bool write,
                      const std::function<Status(detail::SqlTx&)>& fn) {
    bool reconnected = false;
    auto reconnect = [&]() -> Status {
      reconnected = true;
      return c.Reconnect();
    };
    if (!c.healthy()) {
      if (auto st = reconnect(); !st.ok()) return st;
    }
    for (;;) {
      Status st = c.Exec("BEGIN");
      if (!st.ok()) {
        if (c.healthy() || reconnected) return st;
        if (auto again = reconnect(); !again.ok()) return again;
        continue;
      }
      st = fn(c);
      if (st.ok()) st = c.Exec("COMMIT");
      if (st.ok()) return st;
      c.RollbackIfOpen();
      if (write || c.healthy() || reconnected) return st;
      if (auto again = reconnect(); !again.ok()) return st;
    }
  }

  Result<std::unique_ptr<PgConnection>> Acquire() {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] {
        return !idle_.empty() || open_ < std::max<size_t>(options_.max_connections, 1);
      });
      if (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        return c;
      }
      ++open_;
    }
    auto c = PgConnection::Connect(url_, password_, options_.connect_timeout_s);
    if (!c.ok()) {
      std::lock_guard lock(mu_);
      --open_;
      cv_.notify_one();
      return c.error();
    }
    return std::move(*c);
  }

  void Release(std::unique_ptr<PgConnection> c) {
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(c));
    cv_.notify_one();
  }

  std::string url_;
  std::string password_;
  PostgresServiceOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<PgConnection>> idle_;
  size_t open_ = 0;
};

// Creates or migrates the schema in one transaction, under an advisory lock.
Status Migrate(PgConnection& c, const std::string& name) {
  if (auto st = c.Exec("BEGIN"); !st.ok()) return st;
  auto fail = [&c](Error e) -> Status {
    c.RollbackIfOpen();
    return e;
  };
  if (auto r =
          c.Query("SELECT pg_advisory_xact_lock(" + std::to_string(kMigrationLockId) + ")", {});
      !r.ok()) {
    return fail(r.error());
  }
  auto found = c.Query(
      "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'isoguard_service'), "
      "to_regclass('isoguard_service.schema_version') IS NOT NULL",
      {});
  if (!found.ok()) return fail(found.error());
  const bool has_schema = found->rows[0][0].i != 0;
  const bool has_version_table = found->rows[0][1].i != 0;
  int64_t version = 0;
  if (has_schema) {
    Error not_ours = Error::BadInput(
        name + " has a schema isoguard_service that is not isoguard's (it holds other data)", "db");
    if (!has_version_table) return fail(not_ours);
    auto v = c.Query("SELECT version FROM isoguard_service.schema_version", {});
    if (!v.ok()) return fail(v.error());
    if (v->size() != 1) return fail(not_ours);
    version = v->rows[0][0].i;
  }
  if (version > kPostgresServiceSchemaVersion) {
    return fail(Error::BadInput(name + " has service schema version " + std::to_string(version) +
                                    ", newer than this build's " +
                                    std::to_string(kPostgresServiceSchemaVersion) +
                                    "; open it with the newer isoguard that wrote it (nothing "
                                    "was changed)",
                                "db"));
  }
  for (int v = static_cast<int>(version) + 1; v <= kPostgresServiceSchemaVersion; ++v) {
    if (auto st = c.Exec(kMigrations[v - 1]); !st.ok()) {
      return fail(Error::Internal("migration to service schema version " + std::to_string(v) +
                                  " failed: " + st.error().message));
    }
    const std::string set =
        "UPDATE isoguard_service.schema_version SET version = " + std::to_string(v);
    if (auto st = c.Exec(set.c_str()); !st.ok()) return fail(st.error());
  }
  if (auto st = c.Exec("COMMIT"); !st.ok()) return fail(st.error());
  return {};
}

}  // namespace

Result<std::unique_ptr<ServiceStore>> PostgresServiceStore::Open(
    const std::string& url, const PostgresServiceOptions& options) {
  auto parsed = UrlOptions(url);
  if (!parsed.ok()) return parsed.error();
  const std::string password = OptionOf(*parsed, "password");
  auto c = PgConnection::Connect(url, password, options.connect_timeout_s);
  if (!c.ok()) return c.error();
  if (auto st = Migrate(**c, DatabaseName(*parsed)); !st.ok()) return st.error();
  return detail::MakeSqlServiceStore(
      std::make_unique<PostgresDatabase>(url, password, options, std::move(*c)));
}

}  // namespace isoguard::service
