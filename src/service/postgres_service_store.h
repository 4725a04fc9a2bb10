// The PostgreSQL backend of the ServiceStore (service_store.h), through libpq: the schema
// isoguard_service with its own schema_version table, migrated on open under an advisory
// lock (several processes may open the database at once). Ids are BIGINT identity columns,
// hashes BYTEA, instants BIGINT milliseconds since 1970 (the *_ms columns), doubles double
// precision. Triggers refuse UPDATE, DELETE and TRUNCATE of the append-only tables (audit,
// temperature_readings, quarantine_events, pregnancy_reports).
//
// Connections: a small pool; each call takes one, runs its operation in one transaction
// (READ COMMITTED) and gives it back. A connection found broken is re-established once per
// call: before its transaction began, for any call; after, only for reads (a write whose
// commit may have happened is not repeated; its error says the connection was lost).
// Passwords in the URL never appear in messages.
//
// Thread safety: every method may be called from many threads at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "service/service_store.h"

namespace isoguard::service {

// The isoguard_service schema version this build creates and understands.
inline constexpr int kPostgresServiceSchemaVersion = 1;

struct PostgresServiceOptions {
  size_t max_connections = 4;  // more callers wait for one
  int connect_timeout_s = 10;
};

class PostgresServiceStore {
 public:
  // Opens (creating or migrating) the schema isoguard_service in the database `url` names
  // (kBadInput when its schema version is newer than this build's).
  static Result<std::unique_ptr<ServiceStore>> Open(const std::string& url,
                                                    const PostgresServiceOptions& options = {});
};

}  // namespace isoguard::service
