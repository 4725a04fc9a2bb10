// OpenEventStore and RestoreEventStore: the one place that maps a store URL to a backend.
#include <string_view>

#include "store/event_store.h"
#include "store/postgres/postgres_event_store.h"
#include "store/sqlite/sqlite_event_store.h"

namespace isoguard::store {
namespace {

bool IsPostgresUrl(std::string_view u) {
  return u.starts_with("postgresql://") || u.starts_with("postgres://");
}

// The file a SQLite URL names ("sqlite:PATH" or a plain path).
Result<std::string> SqlitePath(const std::string& url) {
  const std::string_view u = url;
  std::string path = url;
  if (u.starts_with("sqlite:")) path = url.substr(std::string_view("sqlite:").size());
  if (path.empty()) return Error::BadInput("names no database file", "db");
  if (path == ":memory:" || path.starts_with("file:")) {
    return Error::BadInput("the event store needs a database file path, not " + path, "db");
  }
  return path;
}

}  // namespace

Result<std::unique_ptr<EventStore>> OpenEventStore(const std::string& url,
                                                   const StoreOptions& options) {
  if (IsPostgresUrl(url)) {
    PostgresOptions postgres_options;
    postgres_options.store = options;
    auto store = PostgresEventStore::Open(url, postgres_options);
    if (!store.ok()) return store.error();
    return std::unique_ptr<EventStore>(std::move(*store));
  }
  auto path = SqlitePath(url);
  if (!path.ok()) return path.error();
  SqliteOptions sqlite_options;
  sqlite_options.store = options;
  auto store = SqliteEventStore::Open(*path, sqlite_options);
  if (!store.ok()) return store.error();
  return std::unique_ptr<EventStore>(std::move(*store));
}

Result<VerifyReport> RestoreEventStore(const std::string& backup_path, const std::string& url,
                                       const StoreOptions& options) {
  if (IsPostgresUrl(url)) {
    if (auto st = PostgresEventStore::Restore(backup_path, url); !st.ok()) return st.error();
  } else {
    auto path = SqlitePath(url);
    if (!path.ok()) return path.error();
    SqliteOptions sqlite_options;
    sqlite_options.store = options;
    if (auto st = SqliteEventStore::Restore(backup_path, *path, sqlite_options); !st.ok()) {
      return st.error();
    }
  }
  // Opening runs the migrations (an older backup is upgraded); then every stream is walked.
  auto store = OpenEventStore(url, options);
  if (!store.ok()) return store.error();
  auto report = (*store)->Verify();
  if (!report.ok()) return report.error();
  if (report->first_problem) {
    return Error::Internal("the restored store does not verify: " + *report->first_problem);
  }
  return report;
}

}  // namespace isoguard::store
