// OpenEventStore: the one place that maps a store URL to a backend.
#include <string_view>

#include "store/event_store.h"
#include "store/sqlite/sqlite_event_store.h"

namespace isoguard::store {

Result<std::unique_ptr<EventStore>> OpenEventStore(const std::string& url,
                                                   const StoreOptions& options) {
  const std::string_view u = url;
  if (u.starts_with("postgresql://") || u.starts_with("postgres://")) {
    return Error::BadInput(
        "the PostgreSQL backend is not built yet; use sqlite:PATH (or a plain path)", "db");
  }
  std::string path = url;
  if (u.starts_with("sqlite:")) path = url.substr(std::string_view("sqlite:").size());
  if (path.empty()) return Error::BadInput("names no database file", "db");
  if (path == ":memory:" || path.starts_with("file:")) {
    return Error::BadInput("the event store needs a database file path, not " + path, "db");
  }
  SqliteOptions sqlite_options;
  sqlite_options.store = options;
  auto store = SqliteEventStore::Open(path, sqlite_options);
  if (!store.ok()) return store.error();
  return std::unique_ptr<EventStore>(std::move(*store));
}

}  // namespace isoguard::store
