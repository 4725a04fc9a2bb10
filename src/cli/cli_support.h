// What the isoguard subcommands share: reporting an error, opening the event store named by
// --db.
#pragma once

#include <iosfwd>
#include <memory>
#include <string>

#include "core/result.h"
#include "domain/record_parser.h"
#include "store/event_store.h"

namespace isoguard {

// Writes "isoguard: <error>" and returns the contract's exit code for its kind (1 internal,
// 2 otherwise).
int Fail(std::ostream& err, const Error& error);

// Whether `db` names a PostgreSQL store ("postgresql://..." or "postgres://...").
bool IsPostgresUrl(const std::string& db);

// Opens the store named by `db` ("sqlite:PATH", a plain path, or a PostgreSQL URL). With
// `must_exist`, a SQLite file that does not exist is an error naming --db rather than a new
// empty store (a mistyped path would otherwise "verify clean"). Errors name --db.
Result<std::unique_ptr<store::EventStore>> OpenStore(const std::string& db,
                                                     const ParseOptions& parse, bool must_exist);

// {"entries_checked", "streams_checked", "ok", "first_problem"}: what verify and restore print.
std::string VerifyReportJson(const store::VerifyReport& report);

}  // namespace isoguard
