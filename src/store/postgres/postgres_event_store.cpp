#include "store/postgres/postgres_event_store.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "store/detail/group_commit.h"
#include "store/entry_codec.h"
#include "store/postgres/pg_url.h"
#include "store/projection.h"

extern char** environ;

namespace isoguard::store {
namespace {

// ===========================================================================================
// The schema, one migration per version. A migration never changes: a store at version N was
// made by exactly migrations 1..N, and a newer build upgrades it by running the rest.
// ===========================================================================================

// Version 1: the log. Every table has patient_id, the distribution key (docs/scaling.md); a
// stream is the rows of one patient_id in version order, and (patient_id, version) is the
// entry's primary key. `position` is the global order (unique, from log_head; see the header).
// The stream row keeps the head (version, hash, position) so that an append reads one row,
// and it is the row a writer locks: everything that changes a patient locks its stream row
// first. Entries have no foreign key to streams: the writer inserts both in one statement, and
// a per-row check would cost a lookup and a row lock per entry. Triggers refuse any UPDATE,
// DELETE or TRUNCATE of entries, whatever a client of the database tries.
constexpr const char* kMigration1 = R"sql(
CREATE SCHEMA isoguard;
CREATE TABLE isoguard.schema_version (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  version integer NOT NULL CHECK (version >= 1)
);
INSERT INTO isoguard.schema_version (version) VALUES (1);

CREATE TABLE isoguard.log_head (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  position bigint NOT NULL CHECK (position >= 0)
);
INSERT INTO isoguard.log_head (position) VALUES (0);

CREATE TABLE isoguard.streams (
  patient_id text PRIMARY KEY,
  version bigint NOT NULL CHECK (version >= 1),
  head_hash bytea NOT NULL CHECK (length(head_hash) = 32),
  position bigint NOT NULL,
  created_at timestamptz NOT NULL
);

CREATE TABLE isoguard.entries (
  position bigint NOT NULL,
  patient_id text NOT NULL,
  version bigint NOT NULL CHECK (version >= 1),
  event_id text NOT NULL,
  type text NOT NULL,
  payload bytea NOT NULL,
  recorded_at timestamptz NOT NULL,
  actor_id text NOT NULL,
  actor_role text NOT NULL,
  actor_source text NOT NULL,
  idempotency_key text,
  prev_hash bytea NOT NULL CHECK (length(prev_hash) = 32),
  hash bytea NOT NULL CHECK (length(hash) = 32),
  PRIMARY KEY (patient_id, version),
  UNIQUE (patient_id, event_id)
);
CREATE UNIQUE INDEX entries_by_position ON isoguard.entries (position);

CREATE FUNCTION isoguard.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER entries_are_never_updated BEFORE UPDATE ON isoguard.entries
  FOR EACH ROW EXECUTE FUNCTION isoguard.refuse_change('entries are immutable: append a correction instead');
CREATE TRIGGER entries_are_never_deleted BEFORE DELETE ON isoguard.entries
  FOR EACH ROW EXECUTE FUNCTION isoguard.refuse_change('entries are immutable: erase a patient by destroying the key');
CREATE TRIGGER entries_are_never_truncated BEFORE TRUNCATE ON isoguard.entries
  FOR EACH STATEMENT EXECUTE FUNCTION isoguard.refuse_change('entries are immutable: erase a patient by destroying the key');

CREATE TABLE isoguard.patient_keys (
  patient_id text PRIMARY KEY REFERENCES isoguard.streams (patient_id),
  key bytea NOT NULL CHECK (length(key) = 32),
  created_at timestamptz NOT NULL
);

CREATE TABLE isoguard.appends (
  patient_id text NOT NULL REFERENCES isoguard.streams (patient_id),
  idempotency_key text NOT NULL,
  first_version bigint NOT NULL,
  last_version bigint NOT NULL,
  PRIMARY KEY (patient_id, idempotency_key)
);
)sql";

// Version 2: erasures are audited. The key row is the only thing ever deleted (crypto-
// shredding: deleting it is what makes the payloads unreadable), and only with its erasure
// recorded first.
constexpr const char* kMigration2 = R"sql(
CREATE TABLE isoguard.audit (
  patient_id text NOT NULL REFERENCES isoguard.streams (patient_id),
  id bigint GENERATED ALWAYS AS IDENTITY,
  action text NOT NULL CHECK (action IN ('erasure')),
  actor_id text NOT NULL,
  actor_role text NOT NULL,
  actor_source text NOT NULL,
  at timestamptz NOT NULL,
  PRIMARY KEY (patient_id, id)
);
CREATE TRIGGER audit_is_never_updated BEFORE UPDATE ON isoguard.audit
  FOR EACH ROW EXECUTE FUNCTION isoguard.refuse_change('the audit table is append-only');
CREATE TRIGGER audit_is_never_deleted BEFORE DELETE ON isoguard.audit
  FOR EACH ROW EXECUTE FUNCTION isoguard.refuse_change('the audit table is append-only');
CREATE TRIGGER audit_is_never_truncated BEFORE TRUNCATE ON isoguard.audit
  FOR EACH STATEMENT EXECUTE FUNCTION isoguard.refuse_change('the audit table is append-only');

CREATE FUNCTION isoguard.key_deleted_only_by_erasure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM isoguard.audit a
                 WHERE a.patient_id = OLD.patient_id AND a.action = 'erasure') THEN
    RAISE EXCEPTION 'a patient key is deleted only by a recorded erasure'
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN OLD;
END
$$;
CREATE TRIGGER keys_are_deleted_only_by_erasure BEFORE DELETE ON isoguard.patient_keys
  FOR EACH ROW EXECUTE FUNCTION isoguard.key_deleted_only_by_erasure();
CREATE TRIGGER keys_are_never_truncated BEFORE TRUNCATE ON isoguard.patient_keys
  FOR EACH STATEMENT EXECUTE FUNCTION isoguard.refuse_change('a patient key is deleted only by a recorded erasure');

UPDATE isoguard.schema_version SET version = 2;
)sql";

// Version 3: projections. One row per patient, the stream folded into its record and sealed
// under the patient's key (projection.h), written in the transaction of every append. A store
// upgraded to this version has its rows computed from the log when it is opened.
constexpr const char* kMigration3 = R"sql(
CREATE TABLE isoguard.patient_state (
  patient_id text PRIMARY KEY REFERENCES isoguard.streams (patient_id),
  version bigint NOT NULL CHECK (version >= 1),
  position bigint NOT NULL,
  state bytea NOT NULL
);
UPDATE isoguard.schema_version SET version = 3;
)sql";

constexpr const char* kMigrations[] = {kMigration1, kMigration2, kMigration3};
static_assert(std::size(kMigrations) == kPostgresSchemaVersion);

// Held while migrating, so that two processes opening a new database do not both create it.
constexpr int64_t kMigrationLockId = 0x49534F47;  // "ISOG"

constexpr int64_t kPgEpochMs = 946684800000;  // 2000-01-01, where timestamptz counts from

// Type OIDs of the parameters (pg_type.h; fixed since PostgreSQL 7).
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kTextOid = 25;
constexpr Oid kTimestamptzOid = 1184;
constexpr Oid kTextArrayOid = 1009;
constexpr Oid kByteaArrayOid = 1001;
constexpr Oid kInt8ArrayOid = 1016;

// The entry columns in the order ReadRow reads them.
std::string EntryColumns(std::string_view alias) {
  static constexpr const char* kNames[] = {
      "position",        "patient_id",  "version",  "event_id",   "type",
      "payload",         "recorded_at", "actor_id", "actor_role", "actor_source",
      "idempotency_key", "prev_hash",   "hash"};
  std::string out;
  for (const char* name : kNames) {
    if (!out.empty()) out += ", ";
    if (!alias.empty()) out.append(alias).append(".");
    out += name;
  }
  return out;
}
constexpr int kEntryColumnCount = 13;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Shown(std::string_view s) {
  return "'" + std::string(s.substr(0, 60)) + (s.size() > 60 ? "...'" : "'");
}

// ===========================================================================================
// The URL: its parts, and how it is shown.
// ===========================================================================================

using pg::DatabaseName;
using pg::OptionOf;
using pg::Redact;
using pg::UrlOptions;

// ===========================================================================================
// Thin RAII over libpq.
// ===========================================================================================

void PutBe32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
}
void PutBe64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
}
uint64_t GetBe64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(PGresult* r) : r_(r) {}
  ~PgResult() { PQclear(r_); }
  PgResult(PgResult&& other) noexcept : r_(std::exchange(other.r_, nullptr)) {}
  PgResult& operator=(PgResult&& other) noexcept {
    std::swap(r_, other.r_);
    return *this;
  }

  PGresult* get() const { return r_; }
  int rows() const { return PQntuples(r_); }
  int64_t affected() const {
    const char* n = PQcmdTuples(r_);
    return n == nullptr || *n == '\0' ? 0 : std::strtoll(n, nullptr, 10);
  }
  bool IsNull(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
  std::string_view Bytes(int row, int col) const {
    return {PQgetvalue(r_, row, col), static_cast<size_t>(PQgetlength(r_, row, col))};
  }
  // A bigint or timestamptz in binary form; 0 for NULL or a value of another size.
  int64_t Int8(int row, int col) const {
    if (IsNull(row, col) || PQgetlength(r_, row, col) != 8) return 0;
    return static_cast<int64_t>(GetBe64(PQgetvalue(r_, row, col)));
  }
  bool Bool(int row, int col) const {
    return !IsNull(row, col) && PQgetlength(r_, row, col) == 1 && PQgetvalue(r_, row, col)[0] != 0;
  }
  // A timestamptz (microseconds since 2000-01-01) as milliseconds since 1970.
  int64_t TimeMs(int row, int col) const { return Int8(row, col) / 1000 + kPgEpochMs; }

 private:
  PGresult* r_ = nullptr;
};

// The parameters of one statement, every one in binary form. Views are not copied: what they
// point at must outlive the statement, which it does as the caller's locals.
class Params {
 public:
  Params& Int8(int64_t v) {
    std::string& s = owned_.emplace_back();
    PutBe64(s, static_cast<uint64_t>(v));
    return Add(s, kInt8Oid);
  }
  Params& Text(std::string_view s) { return Add(s, kTextOid); }
  Params& OptionalText(std::string_view s) { return s.empty() ? Null(kTextOid) : Text(s); }
  Params& Bytes(std::string_view s) { return Add(s, kByteaOid); }
  Params& Bytes(const Hash& h) {
    return Add({reinterpret_cast<const char*>(h.data()), h.size()}, kByteaOid);
  }
  Params& TimeMs(int64_t ms) {
    std::string& s = owned_.emplace_back();
    PutBe64(s, static_cast<uint64_t>((ms - kPgEpochMs) * 1000));
    return Add(s, kTimestamptzOid);
  }
  Params& Owned(std::string bytes, Oid type) {
    std::string& s = owned_.emplace_back(std::move(bytes));
    return Add(s, type);
  }
  Params& Null(Oid type) {
    values_.push_back(nullptr);
    lengths_.push_back(0);
    formats_.push_back(1);
    types_.push_back(type);
    return *this;
  }

  int count() const { return static_cast<int>(values_.size()); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }
  const Oid* types() const { return types_.data(); }

 private:
  Params& Add(std::string_view s, Oid type) {
    // A null pointer would mean SQL NULL: an empty value points at an empty string instead.
    values_.push_back(s.data() != nullptr ? s.data() : "");
    lengths_.push_back(static_cast<int>(s.size()));
    formats_.push_back(1);
    types_.push_back(type);
    return *this;
  }
  std::deque<std::string> owned_;  // a deque: its strings do not move as it grows
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
  std::vector<Oid> types_;
};

// A one-dimensional array in PostgreSQL's binary format (array_send): dimensions, flags and
// element type, then each element as its length and bytes.
class ArrayBuilder {
 public:
  explicit ArrayBuilder(Oid element_type) : type_(element_type) {}
  void Add(std::string_view bytes) {
    PutBe32(elements_, static_cast<uint32_t>(bytes.size()));
    elements_.append(bytes);
    ++count_;
  }
  void Add(const Hash& h) { Add({reinterpret_cast<const char*>(h.data()), h.size()}); }
  void AddInt8(int64_t v) {
    PutBe32(elements_, 8);
    PutBe64(elements_, static_cast<uint64_t>(v));
    ++count_;
  }
  std::string Finish() const {
    std::string out;
    out.reserve(20 + elements_.size());
    PutBe32(out, count_ == 0 ? 0 : 1);  // dimensions
    PutBe32(out, 0);                    // no NULL elements
    PutBe32(out, type_);
    if (count_ > 0) {
      PutBe32(out, count_);
      PutBe32(out, 1);  // lower bound
    }
    out += elements_;
    return out;
  }

 private:
  Oid type_;
  uint32_t count_ = 0;
  std::string elements_;
};

// A statement, prepared on each connection the first time it is used there.
struct StatementDef {
  const char* name;
  std::string sql;
};

class PgConnection {
 public:
  PgConnection() = default;
  ~PgConnection() {
    if (conn_ != nullptr) PQfinish(conn_);
  }
  PgConnection(PgConnection&& other) noexcept
      : conn_(std::exchange(other.conn_, nullptr)),
        password_(std::move(other.password_)),
        prepared_(std::move(other.prepared_)) {}
  PgConnection& operator=(PgConnection&& other) noexcept {
    std::swap(conn_, other.conn_);
    std::swap(password_, other.password_);
    std::swap(prepared_, other.prepared_);
    return *this;
  }

  static Result<PgConnection> Connect(const std::string& url, int connect_timeout_s) {
    auto options = UrlOptions(url);
    if (!options.ok()) return options.error();
    PgConnection c;
    c.password_ = OptionOf(*options, "password");
    const std::string timeout = std::to_string(std::max(1, connect_timeout_s));
    // The URL comes last: what it sets overrides the defaults before it.
    const char* keywords[] = {"connect_timeout", "fallback_application_name", "dbname", nullptr};
    const char* values[] = {timeout.c_str(), "isoguard", url.c_str(), nullptr};
    c.conn_ = PQconnectdbParams(keywords, values, 1);
    if (c.conn_ == nullptr) return Error::Internal("cannot connect to PostgreSQL: out of memory");
    if (PQstatus(c.conn_) != CONNECTION_OK) {
      return Error::Internal("cannot connect to PostgreSQL: " + c.LastMessage());
    }
    // Notices (a server's warning before it shuts down, say) are not printed on stderr: the
    // store reports what matters through its errors.
    PQsetNoticeProcessor(
        c.conn_, [](void*, const char*) {}, nullptr);
    if (auto st = c.Setup(); !st.ok()) return st.error();
    return c;
  }

  PGconn* get() const { return conn_; }
  bool healthy() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

  // Re-establishes a lost connection (same parameters); statements are prepared again.
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

  // The constraint the last failed statement violated ("" for none).
  const std::string& last_failed_constraint() const { return last_failed_constraint_; }

  Error Failure(const PgResult& r, std::string_view what) {
    std::string text = r.get() != nullptr ? PQresultErrorMessage(r.get()) : "";
    if (text.empty()) text = PQerrorMessage(conn_);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    const char* state =
        r.get() != nullptr ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
    const char* constraint =
        r.get() != nullptr ? PQresultErrorField(r.get(), PG_DIAG_CONSTRAINT_NAME) : nullptr;
    last_failed_constraint_ = constraint != nullptr ? constraint : "";
    std::string message = std::string(what) + ": " + Redact(std::move(text), password_);
    if (state != nullptr) message += std::string(" (SQLSTATE ") + state + ")";
    if (!healthy())
      message += " (the connection was lost; it is re-established on the next request)";
    // The server gone or refusing writes for now (connection lost, shutting down, out of disk
    // or connections, a standby that is read-only): kUnavailable, worth asking again.
    const std::string_view code = state != nullptr ? state : "";
    if (!healthy() || code.starts_with("08") || code.starts_with("53") || code == "57P01" ||
        code == "25006") {
      return Error::Unavailable(std::move(message));
    }
    return Error::Internal(std::move(message));
  }

  // A simple query (one or more statements, no parameters, text results).
  Result<PgResult> Exec(const char* sql) {
    PgResult r(PQexec(conn_, sql));
    const ExecStatusType status = PQresultStatus(r.get());
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      return Failure(r, std::string_view(sql).substr(0, 60));
    }
    return r;
  }

  // A statement with parameters and binary results, unprepared (run once).
  Result<PgResult> Query(const std::string& sql, const Params& p) {
    PgResult r(PQexecParams(conn_, sql.c_str(), p.count(), p.types(), p.values(), p.lengths(),
                            p.formats(), 1));
    const ExecStatusType status = PQresultStatus(r.get());
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      return Failure(r, std::string_view(sql).substr(0, 60));
    }
    return r;
  }

  // A prepared statement with binary parameters and results.
  Result<PgResult> Run(const StatementDef& s, const Params& p) {
    if (!prepared_.contains(s.name)) {
      PgResult prepared(PQprepare(conn_, s.name, s.sql.c_str(), p.count(), p.types()));
      if (PQresultStatus(prepared.get()) != PGRES_COMMAND_OK) {
        return Failure(prepared, std::string("preparing ") + s.name);
      }
      prepared_.insert(s.name);
    }
    PgResult r(PQexecPrepared(conn_, s.name, p.count(), p.values(), p.lengths(), p.formats(), 1));
    const ExecStatusType status = PQresultStatus(r.get());
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) return Failure(r, s.name);
    return r;
  }

  // Prepares `s` on this connection unless it is already.
  Status Prepare(const StatementDef& s, const Params& p) {
    if (prepared_.contains(s.name)) return {};
    PgResult prepared(PQprepare(conn_, s.name, s.sql.c_str(), p.count(), p.types()));
    if (PQresultStatus(prepared.get()) != PGRES_COMMAND_OK) {
      return Failure(prepared, std::string("preparing ") + s.name);
    }
    prepared_.insert(s.name);
    return {};
  }

  // Several commands in one round trip (libpq's pipeline mode): each a statement without
  // parameters (`sql`) or a prepared one with its parameters. Their results in order, or the
  // first failure (the commands after it are not run).
  struct Command {
    const char* sql = nullptr;
    const StatementDef* prepared = nullptr;
    const Params* params = nullptr;
  };
  Result<std::vector<PgResult>> Pipeline(const std::vector<Command>& commands,
                                         size_t* failed_index = nullptr) {
    // A failure not owed to one command (entering the pipeline, sending it) counts as the
    // first command's: the caller must not assume any command ran.
    if (failed_index != nullptr) *failed_index = 0;
    for (const Command& c : commands) {
      if (c.prepared != nullptr) {
        if (auto st = Prepare(*c.prepared, *c.params); !st.ok()) return st.error();
      }
    }
    if (PQenterPipelineMode(conn_) != 1) {
      return Error::Internal("cannot enter pipeline mode: " + LastMessage());
    }
    bool sent = true;
    for (const Command& c : commands) {
      const int ok =
          c.prepared != nullptr
              ? PQsendQueryPrepared(conn_, c.prepared->name, c.params->count(), c.params->values(),
                                    c.params->lengths(), c.params->formats(), 1)
              : PQsendQueryParams(conn_, c.sql, 0, nullptr, nullptr, nullptr, nullptr, 1);
      if (ok != 1) {
        sent = false;
        break;
      }
    }
    if (sent) sent = PQpipelineSync(conn_) == 1;
    std::vector<PgResult> results;
    std::optional<Error> failure;
    if (sent) {
      // Each command's result is followed by a null; the sync's result ends the pipeline.
      for (size_t i = 0; i < commands.size(); ++i) {
        PgResult r(PQgetResult(conn_));
        if (r.get() == nullptr) {
          if (failed_index != nullptr && !failure) *failed_index = i;
          if (!failure) failure = Failure(r, "a pipelined command gave no result");
          break;
        }
        const ExecStatusType status = PQresultStatus(r.get());
        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && !failure) {
          if (failed_index != nullptr) *failed_index = i;
          failure = Failure(
              r, commands[i].prepared != nullptr ? commands[i].prepared->name : commands[i].sql);
        }
        results.push_back(std::move(r));
        while (PGresult* extra = PQgetResult(conn_)) PQclear(extra);
      }
      while (healthy()) {
        PgResult r(PQgetResult(conn_));
        if (r.get() == nullptr || PQresultStatus(r.get()) == PGRES_PIPELINE_SYNC) break;
      }
    } else {
      failure = Error::Internal("sending a pipeline: " + LastMessage());
    }
    if (PQexitPipelineMode(conn_) != 1 && !failure) {
      failure = Error::Internal("cannot leave pipeline mode: " + LastMessage());
    }
    if (failure) return *failure;
    return results;
  }

  // Ends whatever transaction a failed operation left open.
  void RollbackIfOpen() {
    if (!healthy()) return;
    const PGTransactionStatusType t = PQtransactionStatus(conn_);
    if (t == PQTRANS_INTRANS || t == PQTRANS_INERROR) PQclear(PQexec(conn_, "ROLLBACK"));
  }

 private:
  Status Setup() {
    // UTC: timestamps travel as binary microseconds, but messages and dumps read better so.
    // READ COMMITTED is the default and what the writer relies on (see CommitBatch).
    auto r = Exec("SET TIME ZONE 'UTC'; SET default_transaction_isolation = 'read committed'");
    if (!r.ok()) return r.error();
    return {};
  }

  PGconn* conn_ = nullptr;
  std::string password_;
  std::set<std::string, std::less<>> prepared_;
  std::string last_failed_constraint_;
};

Status ReadHashColumn(const PgResult& r, int row, int col, Hash& out) {
  const std::string_view bytes = r.Bytes(row, col);
  if (bytes.size() != out.size()) {
    return Error::Internal("a stored hash is " + std::to_string(bytes.size()) + " bytes, not " +
                           std::to_string(out.size()));
  }
  std::memcpy(out.data(), bytes.data(), out.size());
  return {};
}

// Reads the columns of EntryColumns, starting at column `first`.
Status ReadRow(const PgResult& r, int i, int first, EntryRow& row) {
  row.position = r.Int8(i, first + 0);
  row.patient_id = r.Bytes(i, first + 1);
  row.version = r.Int8(i, first + 2);
  row.event_id = r.Bytes(i, first + 3);
  row.type = r.Bytes(i, first + 4);
  row.payload = r.Bytes(i, first + 5);
  row.recorded_at_ms = r.TimeMs(i, first + 6);
  row.actor.id = r.Bytes(i, first + 7);
  row.actor.role = r.Bytes(i, first + 8);
  row.actor.source = r.Bytes(i, first + 9);
  row.idempotency_key = r.IsNull(i, first + 10) ? std::string_view() : r.Bytes(i, first + 10);
  if (auto st = ReadHashColumn(r, i, first + 11, row.prev_hash); !st.ok()) return st;
  return ReadHashColumn(r, i, first + 12, row.hash);
}

// The key in column `col` (NULL: none, the patient was erased or is unknown).
Result<std::optional<PatientKey>> KeyColumn(const PgResult& r, int row, int col,
                                            std::string_view patient_id) {
  if (r.IsNull(row, col)) return std::optional<PatientKey>();
  auto key = PatientKey::FromBytes(r.Bytes(row, col));
  if (!key.ok()) {
    return Error::Internal("patient " + std::string(patient_id) + ": " + key.error().message);
  }
  return std::optional<PatientKey>(std::move(*key));
}

bool SameState(const StateText& a, const StateText& b) {
  return a.patient == b.patient && a.events == b.events && a.event_count == b.event_count;
}

// Runs the missing migrations in one transaction: a crash leaves the old version whole.
// Returns the version the store had before (0: it was created).
Result<int> Migrate(PgConnection& db, const std::string& name) {
  auto begun = db.Exec("BEGIN");
  if (!begun.ok()) return begun.error();
  auto fail = [&db](Error e) -> Result<int> {
    db.RollbackIfOpen();
    return e;
  };
  {
    Params p;
    p.Int8(kMigrationLockId);
    if (auto r = db.Query("SELECT pg_advisory_xact_lock($1)", p); !r.ok()) return fail(r.error());
  }
  auto found = db.Query(
      "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'isoguard'), "
      "to_regclass('isoguard.schema_version') IS NOT NULL",
      Params());
  if (!found.ok()) return fail(found.error());
  const bool has_schema = found->Bool(0, 0);
  const bool has_version_table = found->Bool(0, 1);
  int64_t version = 0;
  if (has_schema) {
    auto not_ours = Error::BadInput(
        name + " has an isoguard schema that is not an isoguard event store (it holds other data)",
        "db");
    if (!has_version_table) return fail(not_ours);
    auto v = db.Query("SELECT version::bigint FROM isoguard.schema_version", Params());
    if (!v.ok()) return fail(v.error());
    if (v->rows() != 1) return fail(not_ours);
    version = v->Int8(0, 0);
  }
  if (version > kPostgresSchemaVersion) {
    return fail(Error::BadInput(name + " has schema version " + std::to_string(version) +
                                    ", newer than this build's " +
                                    std::to_string(kPostgresSchemaVersion) +
                                    "; open it with the newer isoguard that wrote it (nothing "
                                    "was changed)",
                                "db"));
  }
  for (int v = static_cast<int>(version) + 1; v <= kPostgresSchemaVersion; ++v) {
    if (auto r = db.Exec(kMigrations[v - 1]); !r.ok()) {
      return fail(Error::Internal("migration to schema version " + std::to_string(v) +
                                  " failed: " + r.error().message));
    }
  }
  auto committed = db.Exec("COMMIT");
  if (!committed.ok()) return fail(committed.error());
  return static_cast<int>(version);
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

// ===========================================================================================
// The client tools (pg_dump, pg_restore), run without a shell.
// ===========================================================================================

std::string ToolPath(const std::string& tool) {
  const std::string packaged = "/usr/lib/postgresql/15/bin/" + tool;
  if (::access(packaged.c_str(), X_OK) == 0) return packaged;
  return tool;  // looked up in PATH
}

// Runs `argv` with the connection parameters of `url` in the environment (PGHOST, PGPORT,
// PGDATABASE, PGUSER, PGPASSWORD, ...; libpq's own mapping), so that neither the password nor
// the URL appears on a command line, where every user of the machine could read it. Other PG*
// variables of this process are not passed on: the URL alone says where the store is.
Status RunTool(const std::vector<std::string>& argv, const std::string& url) {
  char* message = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &message);
  if (options == nullptr) {
    std::string text = message != nullptr ? message : "out of memory";
    PQfreemem(message);
    return Error::BadInput("is not a PostgreSQL URL libpq accepts: " + text, "db");
  }
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!std::string_view(*e).starts_with("PG")) env.emplace_back(*e);
  }
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val != nullptr && o->envvar != nullptr) {
      env.push_back(std::string(o->envvar) + "=" + o->val);
    }
  }
  PQconninfoFree(options);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> argp;
  for (std::string& a : args) argp.push_back(a.data());
  argp.push_back(nullptr);

  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return Error::Internal(std::string("cannot create a pipe: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  pid_t pid = 0;
  const bool in_path = argv[0].find('/') == std::string::npos;
  const int rc = in_path ? posix_spawnp(&pid, argp[0], &actions, nullptr, argp.data(), envp.data())
                         : posix_spawn(&pid, argp[0], &actions, nullptr, argp.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(err_pipe[0]);
    return Error::Internal("cannot run " + argv[0] + ": " + std::strerror(rc));
  }
  // What the tool says on stderr, its last 16 KiB kept for the error message.
  constexpr size_t kMaxStderrBytes = 16 << 10;
  std::string stderr_text;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(err_pipe[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    stderr_text.append(buffer, static_cast<size_t>(n));
    if (stderr_text.size() > 2 * kMaxStderrBytes) {
      stderr_text.erase(0, stderr_text.size() - kMaxStderrBytes);
    }
  }
  ::close(err_pipe[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Error::Internal(std::string("waitpid: ") + std::strerror(errno));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  if (stderr_text.size() > kMaxStderrBytes) {
    stderr_text.erase(0, stderr_text.size() - kMaxStderrBytes);
  }
  while (!stderr_text.empty() && stderr_text.back() == '\n') stderr_text.pop_back();
  const std::string how = WIFEXITED(status)
                              ? "exited with status " + std::to_string(WEXITSTATUS(status))
                              : "was killed by signal " + std::to_string(WTERMSIG(status));
  return Error::Internal(argv[0] + " " + how + ": " + stderr_text);
}

}  // namespace

std::string RedactedPostgresUrl(const std::string& url) {
  auto options = UrlOptions(url);
  std::string out = url;
  if (options.ok()) out = Redact(std::move(out), OptionOf(*options, "password"));
  // A password in the user-info part that libpq could not parse is still hidden.
  const size_t scheme = out.find("://");
  const size_t at = out.find('@', scheme == std::string::npos ? 0 : scheme + 3);
  if (scheme != std::string::npos && at != std::string::npos) {
    const size_t colon = out.find(':', scheme + 3);
    if (colon != std::string::npos && colon < at &&
        out.substr(colon + 1, at - colon - 1) != "***") {
      out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  return out;
}

// ===========================================================================================
// The store.
// ===========================================================================================

// One queued write: an append or an erasure. It lives on the caller's stack; the caller waits
// until `ticket.done` (guarded by the writer's queue) says the writer has committed or failed
// it.
struct PgWriteRequest {
  const AppendRequest* append = nullptr;  // null: an erasure
  std::vector<CheckedEntry> entries;
  std::string_view erase_patient;
  const Actor* erase_actor = nullptr;

  Result<AppendResult> append_result = Error::Internal("the request was not applied");
  Status erase_status;
  bool erased = false;  // a key was destroyed

  detail::GroupCommitTicket ticket;
  // Look every event id up before writing (see PrepareAppend): set when a write without the
  // lookup found an assigned id taken.
  bool check_all_ids = false;

  bool ok() const { return append != nullptr ? append_result.ok() : erase_status.ok(); }
  size_t weight() const { return std::max<size_t>(entries.size(), 1); }
  std::string_view patient() const {
    return append != nullptr ? std::string_view(append->patient_id) : erase_patient;
  }
};

// A request checked against its stream and ready to be written: the parameters of its
// statements, and where its positions begin (to take them back should the write fail).
struct PendingWrite {
  PgWriteRequest* request = nullptr;
  int64_t first_position = 0;
  std::unique_ptr<Params> write;      // an append: kWrite's; an erasure: kInsertAudit's
  std::unique_ptr<Params> erase_key;  // an erasure: kDeleteKey's
  AppendResult result;
  bool assigned_ids_unchecked = false;  // written without looking its assigned ids up
};

struct PgReader {
  PgConnection db;
};

namespace {

const std::string kColumns = EntryColumns("");
const std::string kColumnsE = EntryColumns("e");

// ---- The writer's statements.
const StatementDef kLookup{
    "lookup",
    "WITH s AS (SELECT version, head_hash FROM isoguard.streams WHERE patient_id = $1 FOR UPDATE),"
    " k AS (SELECT key FROM isoguard.patient_keys WHERE patient_id = $1),"
    " st AS (SELECT version, state FROM isoguard.patient_state WHERE patient_id = $1),"
    " a AS (SELECT first_version, last_version FROM isoguard.appends"
    "       WHERE patient_id = $1 AND idempotency_key = $2)"
    " SELECT s.version, s.head_hash, k.key, st.version, st.state, a.first_version, a.last_version"
    " FROM (VALUES (1)) AS one (x) LEFT JOIN s ON true LEFT JOIN k ON true"
    " LEFT JOIN st ON true LEFT JOIN a ON true"};
const StatementDef kReplay{"replay",
                           "SELECT event_id, position FROM isoguard.entries"
                           " WHERE patient_id = $1 AND version BETWEEN $2 AND $3 ORDER BY version"};
const StatementDef kFindIds{"find_ids",
                            "SELECT event_id, type, version FROM isoguard.entries"
                            " WHERE patient_id = $1 AND event_id = ANY ($2)"};
const StatementDef kStreamPayloads{
    "stream_payloads",
    "SELECT version, type, payload FROM isoguard.entries WHERE patient_id = $1 ORDER BY version"};
// Everything an append writes, in one statement: the stream's head, its key (a new stream),
// the entries (arrays, one element per entry), the idempotency key and the state.
const StatementDef kWrite{
    "write",
    "WITH s AS (INSERT INTO isoguard.streams AS s (patient_id, version, head_hash, position,"
    "                                                created_at)"
    "           VALUES ($1, $2, $3, $4, $5)"
    "           ON CONFLICT (patient_id) DO UPDATE SET version = EXCLUDED.version,"
    "             head_hash = EXCLUDED.head_hash, position = EXCLUDED.position RETURNING 1),"
    " k AS (INSERT INTO isoguard.patient_keys (patient_id, key, created_at)"
    "       SELECT $1, $6, $5 WHERE $6 IS NOT NULL RETURNING 1),"
    " e AS (INSERT INTO isoguard.entries (" +
        kColumns +
        ")"
        "       SELECT u.position, $1, u.version, u.event_id, u.type, u.payload, $5, $7, $8, $9,"
        "              $10, u.prev_hash, u.hash"
        "       FROM unnest($11::int8[], $12::int8[], $13::text[], $14::text[], $15::bytea[],"
        "                   $16::bytea[], $17::bytea[])"
        "         AS u (position, version, event_id, type, payload, prev_hash, hash)"
        "       RETURNING 1),"
        " a AS (INSERT INTO isoguard.appends (patient_id, idempotency_key, first_version,"
        "                                     last_version)"
        "       SELECT $1, $10, $18, $2 WHERE $10 IS NOT NULL RETURNING 1),"
        " st AS (INSERT INTO isoguard.patient_state (patient_id, version, position, state)"
        "        VALUES ($1, $2, $4, $19)"
        "        ON CONFLICT (patient_id) DO UPDATE SET version = EXCLUDED.version,"
        "          position = EXCLUDED.position, state = EXCLUDED.state RETURNING 1)"
        " SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM s), (SELECT count(*) FROM st),"
        "        (SELECT count(*) FROM k), (SELECT count(*) FROM a)"};
const StatementDef kEraseLookup{"erase_lookup",
                                "SELECT s.version, EXISTS (SELECT 1 FROM isoguard.patient_keys k"
                                "                          WHERE k.patient_id = s.patient_id)"
                                " FROM isoguard.streams s WHERE s.patient_id = $1 FOR UPDATE OF s"};
const StatementDef kInsertAudit{
    "insert_audit",
    "INSERT INTO isoguard.audit (action, patient_id, actor_id, actor_role, actor_source, at)"
    " VALUES ('erasure', $1, $2, $3, $4, $5)"};
const StatementDef kDeleteKey{
    "delete_key",
    "WITH st AS (DELETE FROM isoguard.patient_state WHERE patient_id = $1 RETURNING 1)"
    " DELETE FROM isoguard.patient_keys WHERE patient_id = $1"};

// ---- The readers' statements.
const StatementDef kStreamRows{"stream_rows",
                               "SELECT (SELECT key FROM isoguard.patient_keys WHERE patient_id = "
                               "$1), " +
                                   kColumns +
                                   " FROM isoguard.entries WHERE patient_id = $1 ORDER BY version"};
const StatementDef kRowsAfter{
    "rows_after",
    "SELECT " + kColumnsE +
        ", k.key FROM (SELECT * FROM isoguard.entries WHERE position > $1 ORDER BY position"
        " LIMIT $2) e LEFT JOIN isoguard.patient_keys k ON k.patient_id = e.patient_id"
        " ORDER BY e.position"};
const StatementDef kStateRow{
    "state_row",
    "SELECT s.version, s.position, k.key, st.version, st.position, st.state"
    " FROM isoguard.streams s"
    " LEFT JOIN isoguard.patient_keys k ON k.patient_id = s.patient_id"
    " LEFT JOIN isoguard.patient_state st ON st.patient_id = s.patient_id"
    " WHERE s.patient_id = $1"};
// The key's absence means erased (ReadStateOn's reading of it too).
const StatementDef kVersions{
    "versions",
    "SELECT s.patient_id, s.version, (k.key IS NULL)::int4::int8 FROM isoguard.streams s"
    " LEFT JOIN isoguard.patient_keys k ON k.patient_id = s.patient_id"
    " WHERE s.patient_id = ANY ($1)"};
const StatementDef kListPatients{
    "list_patients",
    "SELECT patient_id FROM isoguard.streams WHERE patient_id > $1 ORDER BY patient_id LIMIT 1000"};
const StatementDef kLockStream{"lock_stream",
                               "SELECT s.version, k.key FROM isoguard.streams s"
                               " LEFT JOIN isoguard.patient_keys k ON k.patient_id = s.patient_id"
                               " WHERE s.patient_id = $1 FOR UPDATE OF s"};
const StatementDef kStreamRowsOnly{
    "stream_rows_only",
    "SELECT " + kColumns + " FROM isoguard.entries WHERE patient_id = $1 ORDER BY version"};
const StatementDef kStateOf{
    "state_of",
    "SELECT version, position, state FROM isoguard.patient_state WHERE patient_id = $1"};
const StatementDef kUpsertState{
    "upsert_state",
    "INSERT INTO isoguard.patient_state (patient_id, version, position, state)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (patient_id) DO UPDATE SET version = EXCLUDED.version,"
    " position = EXCLUDED.position, state = EXCLUDED.state"};
const StatementDef kDeleteState{"delete_state",
                                "DELETE FROM isoguard.patient_state WHERE patient_id = $1"};

}  // namespace

struct PostgresEventStore::Impl {
  std::string url;
  std::string name;  // the database, for messages (no password)
  PostgresOptions options;
  ParseOptions read_options;

  // ---- The writer: its connection belongs to the writer thread (and to Open and the
  // destructor, when that thread is not running).
  PgConnection db;

  detail::GroupCommitQueue<PgWriteRequest> queue;
  std::thread writer;

  // ---- Readers.
  std::mutex readers_mu;
  std::condition_variable readers_cv;
  std::vector<std::unique_ptr<PgReader>> idle_readers;
  size_t readers_open = 0;

  void Submit(PgWriteRequest& request);
  void WriterLoop();
  void CommitBatch(std::vector<PgWriteRequest*>& batch);
  // Checks a request against its stream (`head`: its lookup's row) and makes its write;
  // nothing is written yet. An append that needs no write (a replay) gets its result here.
  Status PrepareAppend(PgWriteRequest& request, const PgResult& head, int64_t& next_position,
                       std::optional<PendingWrite>& out);
  Status PrepareErase(PgWriteRequest& request, const PgResult& found,
                      std::optional<PendingWrite>& out);
  Result<AppendResult> Replay(const AppendRequest& request, int64_t first, int64_t last);
  Result<StateText> FoldFromLog(std::string_view patient, const PatientKey& key);

  Result<std::unique_ptr<PgReader>> AcquireReader();
  void ReleaseReader(std::unique_ptr<PgReader> reader);
  Status RebuildOne(PgConnection& db, const std::string& patient, RebuildReport& report);
  Result<Stream> ReadStreamOn(PgConnection& c, const std::string& patient_id);
  Result<std::vector<StoredEntry>> ReadAllOn(PgConnection& c, int64_t after, size_t limit);
  Result<PatientState> ReadStateOn(PgConnection& c, const std::string& patient_id);
  Result<VerifyReport> VerifyOn(PgConnection& c);
};

namespace {

// A reader connection borrowed from the pool, returned when the lease ends (with any
// transaction a failed read left open rolled back).
class ReaderLease {
 public:
  ReaderLease(PostgresEventStore::Impl& impl, std::unique_ptr<PgReader> reader)
      : impl_(impl), reader_(std::move(reader)) {}
  ~ReaderLease() {
    if (reader_ == nullptr) return;
    reader_->db.RollbackIfOpen();
    impl_.ReleaseReader(std::move(reader_));
  }
  ReaderLease(const ReaderLease&) = delete;
  ReaderLease& operator=(const ReaderLease&) = delete;
  PgConnection& db() const { return reader_->db; }

 private:
  PostgresEventStore::Impl& impl_;
  std::unique_ptr<PgReader> reader_;
};

}  // namespace

// ---- Writing

void PostgresEventStore::Impl::Submit(PgWriteRequest& request) {
  // A request made while the store closes is failed, not queued.
  queue.Submit(request, [](PgWriteRequest& r) {
    r.append_result = Error::Internal("the event store is closing");
    r.erase_status = Error::Internal("the event store is closing");
  });
}

void PostgresEventStore::Impl::WriterLoop() {
  std::vector<PgWriteRequest*> batch;
  // Ends once stopping with everything queued committed.
  while (queue.TakeBatch(batch, options.max_batch_requests, options.max_batch_entries)) {
    CommitBatch(batch);
    queue.Finish(batch);
  }
}

void PostgresEventStore::Impl::CommitBatch(std::vector<PgWriteRequest*>& batch) {
  auto fail_all = [&batch](const Error& error) {
    for (PgWriteRequest* r : batch) {
      if (r->append != nullptr) {
        r->append_result = error;
      } else {
        r->erase_status = error;
        r->erased = false;
      }
    }
  };
  // Nothing of the batch was committed: a server that is gone or refuses writes for now stays
  // kUnavailable (the service answers 503), anything else is kInternal.
  auto nothing_written = [this](const Error& error) {
    std::string message = "nothing was written: " + error.message;
    if (error.kind == ErrorKind::kUnavailable || !db.healthy()) {
      return Error::Unavailable(std::move(message));
    }
    return Error::Internal(std::move(message));
  };
  auto abandon = [&](const Error& error) {
    db.RollbackIfOpen();
    fail_all(nothing_written(error));
  };

  // A connection lost since the last batch (a server restart, a failover) is made again.
  if (!db.healthy()) {
    if (auto st = db.Reconnect(); !st.ok()) return fail_all(nothing_written(st.error()));
  }
  // The log_head row lock orders every writer of the database (see the header). Under READ
  // COMMITTED each later statement sees everything committed before the lock was granted.
  int64_t next_position = 0;
  {
    constexpr const char* kBegin = "BEGIN; SELECT position FROM isoguard.log_head FOR UPDATE";
    auto head = db.Exec(kBegin);
    if (!head.ok() && !db.healthy()) {
      // The connection died while idle (the server restarted, or failed over): nothing of the
      // batch has been sent, so it is made again and the batch goes on.
      if (auto st = db.Reconnect(); !st.ok()) return abandon(st.error());
      head = db.Exec(kBegin);
    }
    if (!head.ok()) return abandon(head.error());
    if (head->rows() != 1) return abandon(Error::Internal("isoguard.log_head has no row"));
    next_position = std::strtoll(PQgetvalue(head->get(), 0, 0), nullptr, 10) + 1;
  }
  const int64_t first_position = next_position;

  // The batch goes in rounds of at most one request per patient (a patient's later request
  // depends on what the earlier one writes), each round in two round trips: the lookups of
  // every request in one pipeline, then -- once each request is checked against its stream
  // here -- the writes in another, each write between SAVEPOINT and RELEASE. When a write
  // fails, the pipeline stops there: that write is rolled back to its savepoint alone, and
  // the requests after it go back to the queue of the batch, to be looked up again.
  constexpr size_t kMaxRoundRequests = 64;  // bounds what one pipeline sends and receives
  bool erased_any = false;
  std::deque<PgWriteRequest*> pending(batch.begin(), batch.end());
  while (!pending.empty()) {
    std::vector<PgWriteRequest*> round;
    std::deque<PgWriteRequest*> later;
    std::unordered_set<std::string_view> patients;
    for (PgWriteRequest* r : pending) {
      if (round.size() < kMaxRoundRequests && patients.insert(r->patient()).second) {
        round.push_back(r);
      } else {
        later.push_back(r);
      }
    }
    pending = std::move(later);

    // Phase 1: the lookups. A lookup fails only when the database does (its inputs are
    // checked before they are queued), and then the transaction is lost.
    std::vector<Params> lookup_params(round.size());
    std::vector<PgConnection::Command> lookups;
    for (size_t i = 0; i < round.size(); ++i) {
      const PgWriteRequest& r = *round[i];
      if (r.append != nullptr) {
        lookup_params[i].Text(r.append->patient_id).Text(r.append->idempotency_key);
        lookups.push_back({nullptr, &kLookup, &lookup_params[i]});
      } else {
        lookup_params[i].Text(r.erase_patient);
        lookups.push_back({nullptr, &kEraseLookup, &lookup_params[i]});
      }
    }
    auto heads = db.Pipeline(lookups);
    if (!heads.ok()) return abandon(heads.error());

    // Phase 2: each request checked against its stream, its rows made.
    std::vector<PendingWrite> writes;
    for (size_t i = 0; i < round.size(); ++i) {
      PgWriteRequest& r = *round[i];
      std::optional<PendingWrite> write;
      const int64_t position_before = next_position;
      const Status st = r.append != nullptr ? PrepareAppend(r, (*heads)[i], next_position, write)
                                            : PrepareErase(r, (*heads)[i], write);
      // The checks' own queries (event ids, a replay, a fold of the log) run outside any
      // savepoint: when one of them fails the transaction is lost.
      if (PQtransactionStatus(db.get()) != PQTRANS_INTRANS) {
        return abandon(st.ok() ? Error::Internal("the transaction was aborted") : st.error());
      }
      if (!st.ok()) {
        next_position = position_before;
        if (r.append != nullptr) {
          r.append_result = st.error();
        } else {
          r.erase_status = st.error();
        }
        continue;
      }
      if (!write) {  // a replay, or an erasure already made: done, nothing to write
        if (r.append == nullptr) r.erase_status = {};
        continue;
      }
      writes.push_back(std::move(*write));
    }
    if (writes.empty()) continue;

    // Phase 3: the writes.
    std::vector<PgConnection::Command> commands;
    std::vector<size_t> owner;  // the write each command belongs to
    for (size_t w = 0; w < writes.size(); ++w) {
      const PendingWrite& pw = writes[w];
      commands.push_back({"SAVEPOINT request", nullptr, nullptr});
      if (pw.request->append != nullptr) {
        commands.push_back({nullptr, &kWrite, pw.write.get()});
      } else {
        commands.push_back({nullptr, &kInsertAudit, pw.write.get()});
        commands.push_back({nullptr, &kDeleteKey, pw.erase_key.get()});
      }
      commands.push_back({"RELEASE SAVEPOINT request", nullptr, nullptr});
      owner.resize(commands.size(), w);
    }
    size_t failed_command = commands.size();
    auto written = db.Pipeline(commands, &failed_command);
    const size_t done = written.ok() ? writes.size() : owner[failed_command];
    for (size_t w = 0; w < done; ++w) {
      PgWriteRequest& r = *writes[w].request;
      if (r.append != nullptr) {
        r.append_result = std::move(writes[w].result);
      } else {
        r.erase_status = {};
        r.erased = true;
        erased_any = true;
      }
    }
    if (written.ok()) continue;
    if (!db.healthy()) return abandon(written.error());
    // The write that failed: only its own savepoint's work is undone. A SAVEPOINT or RELEASE
    // that fails leaves nothing to roll back to: the batch is lost.
    const std::string_view failed_sql =
        commands[failed_command].sql != nullptr ? commands[failed_command].sql : "";
    if (failed_sql.starts_with("SAVEPOINT") || failed_sql.starts_with("RELEASE")) {
      return abandon(written.error());
    }
    if (auto back = db.Exec("ROLLBACK TO SAVEPOINT request; RELEASE SAVEPOINT request");
        !back.ok()) {
      return abandon(back.error());
    }
    PendingWrite& failed = writes[done];
    PgWriteRequest& r = *failed.request;
    next_position = failed.first_position;
    std::deque<PgWriteRequest*> again;
    if (failed.assigned_ids_unchecked &&
        db.last_failed_constraint() == "entries_patient_id_event_id_key") {
      // An id the store assigned was taken after all (by a given id of the same form): the
      // append is made again, looking every id up.
      r.check_all_ids = true;
      again.push_back(&r);
    } else if (r.append != nullptr) {
      r.append_result = written.error();
    } else {
      r.erase_status = written.error();
    }
    for (size_t w = done + 1; w < writes.size(); ++w) again.push_back(writes[w].request);
    pending.insert(pending.begin(), again.begin(), again.end());
  }
  // COMMIT in an aborted transaction "succeeds" as a rollback: the command tag tells.
  std::string finish = "COMMIT";
  if (next_position != first_position) {
    finish =
        "UPDATE isoguard.log_head SET position = " + std::to_string(next_position - 1) + "; COMMIT";
  }
  auto committed = db.Exec(finish.c_str());
  const bool ok = committed.ok() && std::string_view(PQcmdStatus(committed->get())) == "COMMIT";
  if (!ok) {
    const std::string why =
        committed.ok() ? "the transaction was rolled back" : committed.error().message;
    db.RollbackIfOpen();
    // The requests that failed on their own keep their errors; the others learn that the
    // commit did not happen (or, when the connection was lost during it, that its outcome is
    // unknown: a retry with the same idempotency key finds out).
    for (PgWriteRequest* r : batch) {
      if (!r->ok()) continue;
      const Error error = Error::Internal(
          (db.healthy() ? "the commit failed, nothing was written: "
                        : "the connection was lost during the commit, which may or may not "
                          "have happened: ") +
          why);
      if (r->append != nullptr) {
        r->append_result = error;
      } else {
        r->erase_status = error;
      }
    }
    return;
  }
  if (erased_any) {
    // The key rows are deleted, but their bytes stay in the table's pages until VACUUM
    // reclaims the dead tuples; this does so now rather than whenever autovacuum comes by.
    // What it guarantees: the tuples are pruned from the heap and the primary key index, so
    // that no query, even with the trigger dropped, finds them. What it does not: the bytes of
    // a pruned tuple may linger in the page's free space until overwritten; WAL segments not
    // yet recycled, WAL archives, replicas' WAL, and backups taken before the erasure still
    // hold the key (the erasure contract says so of backups). A snapshot older than the
    // erasure (a long read) keeps the tuple alive, and VACUUM then leaves it for a later run.
    (void)db.Exec("VACUUM isoguard.patient_keys");
  }
}

Result<AppendResult> PostgresEventStore::Impl::Replay(const AppendRequest& request, int64_t first,
                                                      int64_t last) {
  AppendResult result;
  result.first_version = first;
  result.last_version = last;
  result.replayed = true;
  Params p;
  p.Text(request.patient_id).Int8(first).Int8(last);
  auto rows = db.Run(kReplay, p);
  if (!rows.ok()) return rows.error();
  for (int i = 0; i < rows->rows(); ++i) {
    result.event_ids.emplace_back(rows->Bytes(i, 0));
    result.last_position = rows->Int8(i, 1);
  }
  return result;
}

// The state of a stream folded from its rows, when the state row cannot be used (missing,
// behind, or damaged): what RebuildProjections would write.
Result<StateText> PostgresEventStore::Impl::FoldFromLog(std::string_view patient,
                                                        const PatientKey& key) {
  Params p;
  p.Text(patient);
  auto rows = db.Run(kStreamPayloads, p);
  if (!rows.ok()) return rows.error();
  StateText state;
  for (int i = 0; i < rows->rows(); ++i) {
    const int64_t version = rows->Int8(i, 0);
    auto json = OpenPayload(key, patient, version, rows->Bytes(i, 2));
    if (!json.ok()) {
      return Error::Internal("patient " + std::string(patient) + " version " +
                             std::to_string(version) + ": " + json.error().message);
    }
    if (auto st = FoldEntry(state, rows->Bytes(i, 1), *json); !st.ok()) return st.error();
  }
  return state;
}

Status PostgresEventStore::Impl::PrepareAppend(PgWriteRequest& request, const PgResult& head,
                                               int64_t& next_position,
                                               std::optional<PendingWrite>& out) {
  const AppendRequest& a = *request.append;
  const std::vector<CheckedEntry>& entries = request.entries;
  const std::string_view patient = a.patient_id;
  const int64_t now_ms = NowMs();
  const int64_t first_position = next_position;
  const bool check_all_ids = request.check_all_ids;
  // The same idempotency key again: the first result, nothing written.
  if (!head.IsNull(0, 5)) {
    request.append_result = Replay(a, head.Int8(0, 5), head.Int8(0, 6));
    return {};
  }

  const int64_t version = head.IsNull(0, 0) ? 0 : head.Int8(0, 0);
  Hash prev_hash{};
  std::optional<PatientKey> key;
  if (version > 0) {
    if (auto st = ReadHashColumn(head, 0, 1, prev_hash); !st.ok()) return st.error();
    auto found = KeyColumn(head, 0, 2, patient);
    if (!found.ok()) return found.error();
    if (!found->has_value()) {
      return Error::BadInput(
          "patient " + std::string(patient) + " was erased; the stream takes no more entries",
          "patient_id");
    }
    key = std::move(**found);
  }
  if (a.expected_version && *a.expected_version != version) {
    return Error::Conflict("patient " + std::string(patient) + ": expected version " +
                               std::to_string(*a.expected_version) + ", the stream is at version " +
                               std::to_string(version),
                           "expected_version");
  }
  const bool new_stream = version == 0;
  if (new_stream) {
    if (!entries.front().is_patient) {
      return Error::BadInput(
          "a new stream begins with the patient entry ({\"type\": \"patient\", ...})",
          "entries[0].type");
    }
    key = PatientKey::Generate();
  }

  // Event ids already in the stream, looked up in bulk: every id the append gives, names (as a
  // prescription) or would assign. A new stream has none. Ids the first lookup did not cover
  // (a later form of an assigned id) are looked up as they come.
  std::unordered_set<std::string_view> given_ids;
  for (const CheckedEntry& e : entries) {
    if (!e.event_id.empty()) given_ids.insert(e.event_id);
  }
  struct Taken {
    std::string type;
    int64_t version = 0;
  };
  std::unordered_map<std::string, Taken> taken;
  std::unordered_set<std::string> looked_up;
  // An append whose events all take assigned ids and name no earlier prescription is written
  // without looking at the stream's ids: an assigned id can only be taken by a given id of the
  // same form, which is rare, and the unique key (patient_id, event_id) says so when it is;
  // then the append is made again, looking every id up (check_all_ids).
  bool consult = check_all_ids;
  for (const CheckedEntry& e : entries) {
    if (!e.event_id.empty() || (!e.prescription_ref.empty() && !e.prescription_in_append)) {
      consult = true;
    }
  }
  consult = consult && !new_stream;
  auto look_up = [&](const std::vector<std::string>& ids) -> Status {
    if (!consult) return {};
    ArrayBuilder array(kTextOid);
    size_t n = 0;
    for (const std::string& id : ids) {
      if (looked_up.insert(id).second) {
        array.Add(id);
        ++n;
      }
    }
    if (n == 0) return {};
    Params p;
    p.Text(patient).Owned(array.Finish(), kTextArrayOid);
    auto rows = db.Run(kFindIds, p);
    if (!rows.ok()) return rows.error();
    for (int i = 0; i < rows->rows(); ++i) {
      taken[std::string(rows->Bytes(i, 0))] =
          Taken{std::string(rows->Bytes(i, 1)), rows->Int8(i, 2)};
    }
    return {};
  };
  if (consult) {
    std::vector<std::string> ids;
    for (size_t i = 0; i < entries.size(); ++i) {
      const CheckedEntry& e = entries[i];
      if (!e.event_id.empty()) {
        ids.push_back(e.event_id);
      } else {
        ids.push_back(AssignedEventId(patient, version + 1 + static_cast<int64_t>(i), 0));
      }
      if (!e.prescription_ref.empty() && !e.prescription_in_append) {
        ids.push_back(e.prescription_ref);
      }
    }
    if (auto st = look_up(ids); !st.ok()) return st.error();
  }

  AppendResult result;
  result.first_version = version + 1;
  result.event_ids.reserve(entries.size());
  ArrayBuilder positions(kInt8Oid), versions(kInt8Oid), event_ids(kTextOid), types(kTextOid),
      payloads(kByteaOid), prev_hashes(kByteaOid), hashes(kByteaOid);
  StateText state;
  if (!new_stream) {
    // The state row, if it is at the stream's version and opens; otherwise folded from the log.
    bool usable = false;
    if (!head.IsNull(0, 3) && head.Int8(0, 3) == version) {
      auto opened = OpenState(*key, patient, version, head.Bytes(0, 4));
      if (opened.ok()) {
        state = std::move(*opened);
        usable = true;
      }
    }
    if (!usable) {
      auto folded = FoldFromLog(patient, *key);
      if (!folded.ok()) return folded.error();
      state = std::move(*folded);
    }
  }
  {
    size_t adding = 0;
    for (const CheckedEntry& e : entries) adding += e.is_patient ? 0 : 1;
    if (auto st = CheckRecordRoom(state, adding, read_options.limits); !st.ok()) return st.error();
  }

  EntryRow row;
  row.patient_id = patient;
  row.actor = a.actor;
  row.idempotency_key = a.idempotency_key;
  row.recorded_at_ms = now_ms;
  for (size_t i = 0; i < entries.size(); ++i) {
    const CheckedEntry& e = entries[i];
    const std::string field = "entries[" + std::to_string(i) + "]";
    row.version = version + 1 + static_cast<int64_t>(i);

    if (!e.prescription_ref.empty() && !e.prescription_in_append) {
      auto it = taken.find(e.prescription_ref);
      if (it == taken.end() || it->second.type != ToString(EventType::kPrescription)) {
        return Error::BadInput("names prescription " + Shown(e.prescription_ref) +
                                   ", which is not in the patient's stream",
                               field + ".prescription");
      }
    }
    // A given id that is taken is the caller's error; an assigned one that is taken (by a
    // given id of the same form, in the stream or in this append) moves on to the next form.
    if (!e.event_id.empty()) {
      if (auto it = taken.find(e.event_id); it != taken.end()) {
        return Error::BadInput("id " + Shown(e.event_id) +
                                   " is already used in the patient's stream (version " +
                                   std::to_string(it->second.version) + ")",
                               field + ".id");
      }
      row.event_id = e.event_id;
    } else {
      bool assigned = false;
      for (int attempt = 0; attempt < 100 && !assigned; ++attempt) {
        std::string id = AssignedEventId(patient, row.version, attempt);
        if (given_ids.contains(id)) continue;
        if (auto st = look_up({id}); !st.ok()) return st.error();
        if (taken.contains(id)) continue;
        row.event_id = std::move(id);
        assigned = true;
      }
      if (!assigned) {
        return Error::BadInput("no free id could be assigned; give the event an id", field + ".id");
      }
    }
    row.type = e.type;
    row.position = next_position++;
    row.prev_hash = prev_hash;
    const std::string stored = StoredJson(e, row.event_id);
    if (auto st = FoldEntry(state, row.type, stored); !st.ok()) {
      return Error::Internal(field + ": " + st.error().message);
    }
    row.payload = SealPayload(*key, patient, row.version, stored);
    row.hash = EntryHash(row);
    positions.AddInt8(row.position);
    versions.AddInt8(row.version);
    event_ids.Add(row.event_id);
    types.Add(row.type);
    payloads.Add(row.payload);
    prev_hashes.Add(row.prev_hash);
    hashes.Add(row.hash);
    prev_hash = row.hash;
    result.event_ids.push_back(row.event_id);
    result.last_position = row.position;
  }
  result.last_version = row.version;

  const std::string sealed_state = SealState(*key, patient, result.last_version, state);
  auto w = std::make_unique<Params>();
  // What the parameters point at must outlive this function: the request's own strings do;
  // locals are copied in (Owned).
  w->Text(patient)
      .Int8(result.last_version)
      .Owned(std::string(reinterpret_cast<const char*>(prev_hash.data()), prev_hash.size()),
             kByteaOid)
      .Int8(result.last_position)
      .TimeMs(now_ms);
  if (new_stream) {
    w->Owned(std::string(key->bytes()), kByteaOid);
  } else {
    w->Null(kByteaOid);
  }
  w->Text(a.actor.id)
      .Text(a.actor.role)
      .Text(a.actor.source)
      .OptionalText(a.idempotency_key)
      .Owned(positions.Finish(), kInt8ArrayOid)
      .Owned(versions.Finish(), kInt8ArrayOid)
      .Owned(event_ids.Finish(), kTextArrayOid)
      .Owned(types.Finish(), kTextArrayOid)
      .Owned(payloads.Finish(), kByteaArrayOid)
      .Owned(prev_hashes.Finish(), kByteaArrayOid)
      .Owned(hashes.Finish(), kByteaArrayOid)
      .Int8(result.first_version)
      .Owned(sealed_state, kByteaOid);
  PendingWrite pending;
  pending.request = &request;
  pending.first_position = first_position;
  pending.write = std::move(w);
  pending.result = std::move(result);
  pending.assigned_ids_unchecked = !consult && !new_stream;
  out = std::move(pending);
  return {};
}

Status PostgresEventStore::Impl::PrepareErase(PgWriteRequest& request, const PgResult& found,
                                              std::optional<PendingWrite>& out) {
  const std::string_view patient = request.erase_patient;
  if (found.rows() == 0) {
    return Error::NotFound("no patient " + Shown(patient) + " in the event store", "patient_id");
  }
  if (!found.Bool(0, 1)) return {};  // erased before: the first erasure stands
  const Actor& actor = *request.erase_actor;
  PendingWrite pending;
  pending.request = &request;
  pending.write = std::make_unique<Params>();
  pending.write->Text(patient).Text(actor.id).Text(actor.role).Text(actor.source).TimeMs(NowMs());
  pending.erase_key = std::make_unique<Params>();
  pending.erase_key->Text(patient);
  out = std::move(pending);
  return {};
}

// ---- Readers

Result<std::unique_ptr<PgReader>> PostgresEventStore::Impl::AcquireReader() {
  std::unique_ptr<PgReader> reader;
  {
    std::unique_lock lock(readers_mu);
    readers_cv.wait(lock, [&] {
      return !idle_readers.empty() || readers_open < std::max<size_t>(options.max_readers, 1);
    });
    if (!idle_readers.empty()) {
      reader = std::move(idle_readers.back());
      idle_readers.pop_back();
    } else {
      ++readers_open;  // reserved; opened below without the lock
    }
  }
  if (reader != nullptr) {
    if (!reader->db.healthy()) {
      if (auto st = reader->db.Reconnect(); !st.ok()) {
        ReleaseReader(std::move(reader));
        return st.error();
      }
    }
    return reader;
  }
  auto connection = PgConnection::Connect(url, options.connect_timeout_s);
  if (!connection.ok()) {
    std::lock_guard lock(readers_mu);
    --readers_open;
    readers_cv.notify_one();
    return connection.error();
  }
  reader = std::make_unique<PgReader>();
  reader->db = std::move(*connection);
  return reader;
}

// Runs `read` on a reader connection; when it fails because the connection died while idle in
// the pool (a server restart, a failover), once more on a new connection: reads change
// nothing, so a retry is safe.
template <typename Read>
auto WithReader(PostgresEventStore::Impl& impl, Read read)
    -> decltype(read(std::declval<PgConnection&>())) {
  auto acquired = impl.AcquireReader();
  if (!acquired.ok()) return acquired.error();
  ReaderLease reader(impl, std::move(*acquired));
  auto result = read(reader.db());
  if (result.ok() || reader.db().healthy()) return result;
  if (auto st = reader.db().Reconnect(); !st.ok()) return result;
  return read(reader.db());
}

void PostgresEventStore::Impl::ReleaseReader(std::unique_ptr<PgReader> reader) {
  std::lock_guard lock(readers_mu);
  idle_readers.push_back(std::move(reader));
  readers_cv.notify_one();
}

// ---- The public face

PostgresEventStore::PostgresEventStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PostgresEventStore::~PostgresEventStore() {
  impl_->queue.Stop();
  if (impl_->writer.joinable()) impl_->writer.join();
}

Result<std::unique_ptr<PostgresEventStore>> PostgresEventStore::Open(
    const std::string& url, const PostgresOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->url = url;
  impl->name = DatabaseName(url);
  impl->options = options;
  impl->queue.set_capacity(options.max_queued_requests);
  impl->read_options = ReadBackOptions(options.store.parse);
  auto db = PgConnection::Connect(url, options.connect_timeout_s);
  if (!db.ok()) return db.error();
  impl->db = std::move(*db);
  auto previous = Migrate(impl->db, impl->name);
  if (!previous.ok()) return previous.error();
  Impl* raw = impl.get();
  impl->writer = std::thread([raw] {
    pthread_setname_np(pthread_self(), "isoguard-pg-wr");  // for top, perf, gdb
    raw->WriterLoop();
  });
  auto store = std::unique_ptr<PostgresEventStore>(new PostgresEventStore(std::move(impl)));
  // A store from before the projections: every patient's state is computed from the log now.
  if (*previous > 0 && *previous < 3) {
    auto rebuilt = store->RebuildProjections();
    if (!rebuilt.ok()) {
      return Error::Internal("filling the projections after the upgrade to schema version 3: " +
                             rebuilt.error().message);
    }
  }
  return store;
}

Result<AppendResult> PostgresEventStore::Append(const AppendRequest& request) {
  auto entries = CheckAppend(request, impl_->options.store.parse);
  if (!entries.ok()) return entries.error();
  PgWriteRequest r;
  r.append = &request;
  r.entries = std::move(*entries);
  impl_->Submit(r);
  return std::move(r.append_result);
}

Status PostgresEventStore::ErasePatient(const std::string& patient_id, const Actor& actor) {
  if (auto st = CheckErasure(patient_id, actor); !st.ok()) return st;
  PgWriteRequest r;
  r.erase_patient = patient_id;
  r.erase_actor = &actor;
  impl_->Submit(r);
  return r.erase_status;
}

Result<Stream> PostgresEventStore::ReadStream(const std::string& patient_id) {
  if (patient_id.size() > kMaxPatientIdBytes) {
    return Error::BadInput("must be at most " + std::to_string(kMaxPatientIdBytes) + " bytes",
                           "patient_id");
  }
  if (!IsStorableText(patient_id)) {  // no stream can have this id
    Stream none;
    none.patient_id = patient_id;
    return none;
  }
  return WithReader(*impl_, [&](PgConnection& c) { return impl_->ReadStreamOn(c, patient_id); });
}

Result<Stream> PostgresEventStore::Impl::ReadStreamOn(PgConnection& c,
                                                      const std::string& patient_id) {
  Params p;
  p.Text(patient_id);
  // One statement: the key and the rows from one snapshot.
  auto rows = c.Run(kStreamRows, p);
  if (!rows.ok()) return rows.error();
  Stream stream;
  stream.patient_id = patient_id;
  if (rows->rows() == 0) return stream;
  auto key = KeyColumn(*rows, 0, 0, patient_id);
  if (!key.ok()) return key.error();
  ChainCheck chain;
  EntryRow row;
  stream.entries.reserve(static_cast<size_t>(rows->rows()));
  for (int i = 0; i < rows->rows(); ++i) {
    if (auto st = ReadRow(*rows, i, 1, row); !st.ok()) {
      return Error::Internal("patient " + patient_id + " version " +
                             std::to_string(rows->Int8(i, 3)) + ": " + st.error().message);
    }
    if (auto st = chain.Next(row); !st.ok()) return st.error();
    auto entry = DecodeEntry(row, key->has_value() ? &**key : nullptr, read_options);
    if (!entry.ok()) return entry.error();
    stream.entries.push_back(std::move(*entry));
  }
  stream.version = chain.version();
  return stream;
}

Result<std::vector<StoredEntry>> PostgresEventStore::ReadAll(int64_t after, size_t limit) {
  std::vector<StoredEntry> out;
  limit = std::min(limit, kMaxReadAllEntries);
  if (limit == 0) return out;
  return WithReader(*impl_, [&](PgConnection& c) { return impl_->ReadAllOn(c, after, limit); });
}

Result<std::vector<StoredEntry>> PostgresEventStore::Impl::ReadAllOn(PgConnection& c, int64_t after,
                                                                     size_t limit) {
  std::vector<StoredEntry> out;
  Params p;
  p.Int8(after).Int8(static_cast<int64_t>(limit));
  auto rows = c.Run(kRowsAfter, p);
  if (!rows.ok()) return rows.error();
  std::unordered_map<std::string, std::optional<PatientKey>> keys;
  EntryRow row;
  out.reserve(static_cast<size_t>(rows->rows()));
  for (int i = 0; i < rows->rows(); ++i) {
    if (auto st = ReadRow(*rows, i, 0, row); !st.ok()) {
      return Error::Internal("patient " + std::string(rows->Bytes(i, 1)) + " version " +
                             std::to_string(rows->Int8(i, 2)) + ": " + st.error().message);
    }
    if (EntryHash(row) != row.hash) {
      return Error::Internal("patient " + row.patient_id + " version " +
                             std::to_string(row.version) +
                             ": hash does not match the entry (it was changed after it was "
                             "written)");
    }
    auto it = keys.find(row.patient_id);
    if (it == keys.end()) {
      auto key = KeyColumn(*rows, i, kEntryColumnCount, row.patient_id);
      if (!key.ok()) return key.error();
      it = keys.emplace(row.patient_id, std::move(*key)).first;
    }
    auto entry = DecodeEntry(row, it->second.has_value() ? &*it->second : nullptr, read_options);
    if (!entry.ok()) return entry.error();
    out.push_back(std::move(*entry));
  }
  return out;
}

Result<PatientState> PostgresEventStore::ReadState(const std::string& patient_id) {
  if (patient_id.size() > kMaxPatientIdBytes) {
    return Error::BadInput("must be at most " + std::to_string(kMaxPatientIdBytes) + " bytes",
                           "patient_id");
  }
  if (!IsStorableText(patient_id)) {  // no patient can have this id
    PatientState none;
    none.patient_id = patient_id;
    return none;
  }
  return WithReader(*impl_, [&](PgConnection& c) { return impl_->ReadStateOn(c, patient_id); });
}

Result<std::vector<StreamVersion>> PostgresEventStore::ReadVersions(
    const std::vector<std::string>& patient_ids) {
  if (auto st = CheckVersionsRequest(patient_ids); !st.ok()) return st.error();
  std::vector<StreamVersion> out(patient_ids.size());
  ArrayBuilder ids(kTextOid);
  std::unordered_map<std::string_view, std::vector<size_t>> where;  // id -> its places in out
  for (size_t i = 0; i < patient_ids.size(); ++i) {
    if (!IsStorableText(patient_ids[i])) continue;  // no patient can have this id
    auto& places = where[patient_ids[i]];
    if (places.empty()) ids.Add(patient_ids[i]);
    places.push_back(i);
  }
  if (where.empty()) return out;
  return WithReader(*impl_, [&](PgConnection& c) -> Result<std::vector<StreamVersion>> {
    Params p;
    p.Owned(ids.Finish(), kTextArrayOid);
    auto rows = c.Run(kVersions, p);
    if (!rows.ok()) return rows.error();
    for (int r = 0; r < rows->rows(); ++r) {
      auto it = where.find(rows->Bytes(r, 0));
      if (it == where.end()) continue;
      for (size_t i : it->second) {
        out[i].version = rows->Int8(r, 1);
        out[i].erased = rows->Int8(r, 2) != 0;
      }
    }
    return out;
  });
}

Result<PatientState> PostgresEventStore::Impl::ReadStateOn(PgConnection& c,
                                                           const std::string& patient_id) {
  Params p;
  p.Text(patient_id);
  auto rows = c.Run(kStateRow, p);
  if (!rows.ok()) return rows.error();
  PatientState out;
  out.patient_id = patient_id;
  if (rows->rows() == 0) return out;  // unknown: version 0
  const PgResult& r = *rows;
  out.version = r.Int8(0, 0);
  out.position = r.Int8(0, 1);
  auto key = KeyColumn(r, 0, 2, patient_id);
  if (!key.ok()) return key.error();
  if (!key->has_value()) {
    out.erased = true;
    return out;
  }
  if (r.IsNull(0, 3)) {
    return Error::Internal("patient " + patient_id +
                           ": the state row is missing (rebuild the projections)");
  }
  if (r.Int8(0, 3) != out.version || r.Int8(0, 4) != out.position) {
    return Error::Internal("patient " + patient_id + ": the state row is at version " +
                           std::to_string(r.Int8(0, 3)) + ", the stream at version " +
                           std::to_string(out.version) + " (rebuild the projections)");
  }
  auto state = OpenState(**key, patient_id, out.version, r.Bytes(0, 5));
  if (!state.ok()) {
    return Error::Internal("patient " + patient_id +
                           ": the state row is damaged: " + state.error().message);
  }
  auto record = StateRecordJson(*state);
  if (!record.ok()) {
    return Error::Internal("patient " + patient_id + ": the state has no patient entry");
  }
  out.record_json = std::move(*record);
  return out;
}

// One patient, in a transaction of its own that locks the stream row (as every append does
// first), so the rows read are the stream's newest and no append can slip in between the
// read and the write of the state.
Status PostgresEventStore::Impl::RebuildOne(PgConnection& c, const std::string& patient,
                                            RebuildReport& report) {
  if (auto r = c.Exec("BEGIN"); !r.ok()) return r.error();
  Params p;
  p.Text(patient);
  auto locked = c.Run(kLockStream, p);
  if (!locked.ok()) return locked.error();
  if (locked->rows() == 0) {  // not a stream (any more): nothing to rebuild
    auto committed = c.Exec("COMMIT");
    return committed.ok() ? Status{} : Status(committed.error());
  }
  auto key = KeyColumn(*locked, 0, 1, patient);
  if (!key.ok()) return key.error();
  if (!key->has_value()) {
    // Erased: no state is kept.
    auto deleted = c.Run(kDeleteState, p);
    if (!deleted.ok()) return deleted.error();
    report.removed += deleted->affected();
  } else {
    auto rows = c.Run(kStreamRowsOnly, p);
    if (!rows.ok()) return rows.error();
    ChainCheck chain;
    EntryRow row;
    StateText state;
    int64_t last_position = 0;
    for (int i = 0; i < rows->rows(); ++i) {
      if (auto st = ReadRow(*rows, i, 0, row); !st.ok()) {
        return Error::Internal("patient " + patient + " version " +
                               std::to_string(rows->Int8(i, 2)) + ": " + st.error().message);
      }
      if (auto st = chain.Next(row); !st.ok()) return st.error();
      auto entry = DecodeEntry(row, &**key, read_options);
      if (!entry.ok()) return entry.error();
      if (auto st = FoldEntry(state, entry->type, entry->json); !st.ok()) {
        return Error::Internal("patient " + patient + " version " + std::to_string(row.version) +
                               ": " + st.error().message);
      }
      last_position = row.position;
      ++report.entries;
    }
    ++report.patients;
    const int64_t version = chain.version();
    if (version > 0) {
      auto current = c.Run(kStateOf, p);
      if (!current.ok()) return current.error();
      bool same = false;
      if (current->rows() == 1 && current->Int8(0, 0) == version &&
          current->Int8(0, 1) == last_position) {
        auto opened = OpenState(**key, patient, version, current->Bytes(0, 2));
        same = opened.ok() && SameState(*opened, state);
      }
      if (!same) {
        const std::string sealed = SealState(**key, patient, version, state);
        Params w;
        w.Text(patient).Int8(version).Int8(last_position).Bytes(sealed);
        if (auto r = c.Run(kUpsertState, w); !r.ok()) return r.error();
        ++report.repaired;
      }
    }
  }
  auto committed = c.Exec("COMMIT");
  if (!committed.ok()) return committed.error();
  return {};
}

Result<RebuildReport> PostgresEventStore::RebuildProjections() {
  auto acquired = impl_->AcquireReader();
  if (!acquired.ok()) return acquired.error();
  ReaderLease reader(*impl_, std::move(*acquired));
  PgConnection& c = reader.db();
  RebuildReport report;
  std::string after;
  for (;;) {
    Params p;
    p.Text(after);
    auto page = c.Run(kListPatients, p);
    if (!page.ok()) return page.error();
    if (page->rows() == 0) break;
    std::vector<std::string> patients;
    for (int i = 0; i < page->rows(); ++i) patients.emplace_back(page->Bytes(i, 0));
    for (const std::string& patient : patients) {
      if (auto st = impl_->RebuildOne(c, patient, report); !st.ok()) {
        c.RollbackIfOpen();
        return st.error();
      }
    }
    after = patients.back();
  }
  // Rows with no key behind them (their patient erased, by a store that lost the state's
  // deletion somehow): the erasure's promise covers them too.
  auto swept = c.Exec(
      "DELETE FROM isoguard.patient_state st WHERE NOT EXISTS "
      "(SELECT 1 FROM isoguard.patient_keys k WHERE k.patient_id = st.patient_id)");
  if (!swept.ok()) return swept.error();
  report.removed += swept->affected();
  return report;
}

Result<VerifyReport> PostgresEventStore::Verify() {
  return WithReader(*impl_, [this](PgConnection& c) { return impl_->VerifyOn(c); });
}

Result<VerifyReport> PostgresEventStore::Impl::VerifyOn(PgConnection& c) {
  // One snapshot for the whole walk; the cursor keeps memory bounded however large the log.
  const std::string declare =
      "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
      "DECLARE verify_rows NO SCROLL CURSOR FOR SELECT " +
      kColumnsE +
      ", k.key, CASE WHEN k.key IS NULL THEN EXISTS (SELECT 1 FROM isoguard.audit a"
      " WHERE a.patient_id = e.patient_id AND a.action = 'erasure') END"
      " FROM isoguard.entries e LEFT JOIN isoguard.patient_keys k ON k.patient_id = e.patient_id"
      " ORDER BY e.patient_id, e.version";
  if (auto r = c.Exec(declare.c_str()); !r.ok()) return r.error();

  VerifyReport report;
  std::string current;
  ChainCheck chain;
  std::optional<PatientKey> key;
  EntryRow row;
  const std::string fetch = "FETCH 2000 FROM verify_rows";
  for (;;) {
    auto page = c.Query(fetch, Params());
    if (!page.ok()) return page.error();
    const PgResult& r = *page;
    if (r.rows() == 0) break;
    for (int i = 0; i < r.rows(); ++i) {
      if (auto st = ReadRow(r, i, 0, row); !st.ok()) {
        report.first_problem = "patient " + std::string(r.Bytes(i, 1)) + " version " +
                               std::to_string(r.Int8(i, 2)) + ": " + st.error().message;
        return report;
      }
      if (report.streams_checked == 0 || row.patient_id != current) {
        current = row.patient_id;
        ++report.streams_checked;
        chain = ChainCheck();
        auto found = KeyColumn(r, i, kEntryColumnCount, current);
        if (!found.ok()) {
          report.first_problem = found.error().message;
          return report;
        }
        key = std::move(*found);
        if (!key.has_value() && !r.Bool(i, kEntryColumnCount + 1)) {
          report.first_problem =
              "patient " + current + ": the key is missing, and no erasure was recorded";
          return report;
        }
      }
      if (auto st = chain.Next(row); !st.ok()) {
        report.first_problem = st.error().message;
        return report;
      }
      if (key.has_value()) {
        if (auto entry = DecodeEntry(row, &*key, read_options); !entry.ok()) {
          report.first_problem = entry.error().message;
          return report;
        }
      }
      ++report.entries_checked;
    }
  }
  auto empty = c.Query(
      "SELECT patient_id FROM isoguard.streams s WHERE NOT EXISTS "
      "(SELECT 1 FROM isoguard.entries e WHERE e.patient_id = s.patient_id) LIMIT 1",
      Params());
  if (!empty.ok()) return empty.error();
  if (empty->rows() > 0) {
    report.first_problem =
        "patient " + std::string(empty->Bytes(0, 0)) + ": the stream has no entries";
  }
  if (auto r = c.Exec("COMMIT"); !r.ok()) return r.error();
  return report;
}

Status PostgresEventStore::Backup(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(path, ec)) {
    return Error::BadInput("already exists; a backup never overwrites a file", "backup " + path);
  }
  const std::string partial = path + ".partial";
  fs::remove(partial, ec);
  // pg_dump reads everything in one REPEATABLE READ snapshot: a consistent copy that holds
  // every append committed before it began, while writers go on.
  const std::vector<std::string> argv = {ToolPath("pg_dump"), "--format=custom",
                                         "--schema=isoguard", "--no-owner", "--file=" + partial};
  if (auto st = RunTool(argv, impl_->url); !st.ok()) {
    fs::remove(partial, ec);
    return Error::Internal("backing up " + impl_->name + ": " + st.error().message);
  }
  // The copy is complete and closed: make it durable, then give it its name.
  if (auto st = SyncPath(partial, false); !st.ok()) return st;
  fs::rename(partial, path, ec);
  if (ec) return Error::Internal("cannot rename " + partial + " to " + path + ": " + ec.message());
  fs::path dir = fs::path(path).parent_path();
  return SyncPath(dir.empty() ? std::string(".") : dir.string(), true);
}

Status PostgresEventStore::Restore(const std::string& backup_path, const std::string& url) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(backup_path, ec)) {
    return Error::BadInput("no such backup file", "backup " + backup_path);
  }
  const std::string name = DatabaseName(url);
  {
    auto db = PgConnection::Connect(url, 10);
    if (!db.ok()) return db.error();
    auto found = db->Query("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'isoguard')",
                           Params());
    if (!found.ok()) return found.error();
    if (found->Bool(0, 0)) {
      return Error::BadInput(
          name + " already holds an isoguard schema; a restore never overwrites a store", "db");
    }
  }
  // The database is named in the environment (PGDATABASE) like the rest of the URL; -d with
  // it is what makes pg_restore load into a database rather than print SQL.
  auto options = UrlOptions(url);
  if (!options.ok()) return options.error();
  std::string dbname = OptionOf(*options, "dbname");
  if (dbname.empty()) dbname = OptionOf(*options, "user");  // libpq's default
  std::string quoted = "dbname='";
  for (char ch : dbname) {
    if (ch == '\'' || ch == '\\') quoted.push_back('\\');
    quoted.push_back(ch);
  }
  quoted += "'";
  const std::vector<std::string> argv = {
      ToolPath("pg_restore"), "--single-transaction", "--exit-on-error", "--no-owner",
      "--no-privileges",      "--dbname=" + quoted,   backup_path};
  if (auto st = RunTool(argv, url); !st.ok()) {
    return Error::Internal("restoring " + backup_path + " into " + name + ": " +
                           st.error().message);
  }
  return {};
}

}  // namespace isoguard::store
