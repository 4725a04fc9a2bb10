// The SQLite backend of the ServiceStore (service_store.h): tables named svc_* in the event
// store's database file, STRICT, foreign keys on, synchronous=FULL (the event store has put
// the file in WAL mode). The file must already hold an isoguard event store (its PRAGMA
// application_id); the service's own schema version is the one row of svc_schema, and a
// newer one is refused. Migrations run on open in one BEGIN IMMEDIATE transaction.
//
// Writes go through one writer connection (a mutex), each operation one BEGIN IMMEDIATE
// transaction kept as short as its statements: the event store's writer shares the file and
// SQLite's write lock. Reads use a small pool of reader connections, each read one
// transaction (a snapshot). The append-only tables (svc_audit, svc_temperature_readings,
// svc_quarantine_events, svc_pregnancy_reports) have triggers refusing UPDATE and DELETE.
//
// Thread safety: every method may be called from many threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "service/service_store.h"

namespace isoguard::service {

// The svc_* schema version this build creates and understands.
//   1: organisations, accounts, tokens, care links, audit, authorizations, cursors,
//      notifications, webhooks, deliveries, pregnancy reports, lots, temperature readings,
//      quarantine events.
inline constexpr int kSqliteServiceSchemaVersion = 1;

struct SqliteServiceOptions {
  int busy_timeout_ms = 10000;  // waiting for the write lock (the event store's writer shares it)
  size_t max_readers = 4;       // reader connections; more readers wait for one
};

class SqliteServiceStore {
 public:
  // Opens the service tables in the event store file at `path` (kBadInput when the file is not
  // an isoguard event store, or when its svc_schema is newer than this build's).
  static Result<std::unique_ptr<ServiceStore>> Open(const std::string& path,
                                                    const SqliteServiceOptions& options = {});
};

// The checks both backends make before they write (service_store.cpp): kBadInput naming the
// field for an empty required id, a string over kMaxIdBytes / kMaxTextBytes, a number out of
// range.
namespace detail {
size_t ClampLimit(size_t limit);  // at most kMaxListLimit
Status CheckId(std::string_view field, const std::string& value);
Status CheckText(std::string_view field, const std::string& value);
Status CheckOrganisation(const Organisation& o);
Status CheckAccount(const Account& a);
Status CheckToken(const Token& t);
Status CheckCareLink(const CareLink& l);
Status CheckAudit(const std::vector<AuditRecord>& records);
Status CheckAuthorization(const AuthorizationRecord& a);
Status CheckNotification(const Notification& n);
Status CheckWebhook(const Webhook& w);
Status CheckPregnancyReport(const PregnancyReport& r);
Status CheckLot(const Lot& l);
Status CheckReading(const TemperatureReading& r, const StorageRange& range);
}  // namespace detail

std::optional<AuthorizationStatus> ParseAuthorizationStatus(std::string_view text);

// ---- What the two backends share (service_store.cpp)
//
// Every operation of the store is written once, in SQL both SQLite and PostgreSQL understand
// (tables named svc_*, parameters `?`; the PostgreSQL backend turns them into
// isoguard_service.* and $n), over this small interface: a backend runs a function inside one
// transaction on one of its connections and answers queries with their rows.
namespace detail {

struct Cell {
  enum class Type : uint8_t { kNull, kInt, kDouble, kText };
  Type type = Type::kNull;
  int64_t i = 0;
  double d = 0;
  std::string s;  // text, or the bytes of a blob
  bool blob = false;
};

struct Rows {
  std::vector<std::vector<Cell>> rows;
  int64_t affected = 0;  // rows an INSERT/UPDATE changed
  size_t size() const { return rows.size(); }
  bool empty() const { return rows.empty(); }
};

// A query failed because of a UNIQUE or PRIMARY KEY constraint: kConflict; a FOREIGN KEY:
// kNotFound; anything else: kInternal (or kUnavailable).
class SqlTx {
 public:
  virtual ~SqlTx() = default;
  virtual Result<Rows> Query(std::string_view sql, const std::vector<Cell>& params) = 0;
  // Serialises audit appends until the transaction ends, so that ids are committed in order.
  virtual Status SerializeAudit() = 0;
};

class SqlDatabase {
 public:
  virtual ~SqlDatabase() = default;
  // Runs `fn` in one transaction (a write one when `write`), committed when it succeeds and
  // rolled back when it fails. `fn` may be run twice (a read retried on a new connection):
  // it must assign its outputs, not add to them.
  virtual Status Run(bool write, const std::function<Status(SqlTx&)>& fn) = 0;
  // A write transaction committed without waiting for the disk (service_store.h,
  // "Durability").
  virtual Status RunRelaxed(const std::function<Status(SqlTx&)>& fn) = 0;
};

std::unique_ptr<ServiceStore> MakeSqlServiceStore(std::unique_ptr<SqlDatabase> db);

// The SQL of every List* query, as the store runs it (for the query plan checks of the tests).
std::vector<std::string> ListQueries();

}  // namespace detail

}  // namespace isoguard::service
