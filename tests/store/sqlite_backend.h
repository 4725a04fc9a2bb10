// The SQLite backend as the conformance suite sees it, and raw access to a database file for
// the tests that reach behind the store (corruption, integrity_check, fixtures).
#pragma once

#include <sqlite3.h>

#include <string>

#include "store_test_support.h"

namespace isoguard::store::testing {

// A raw connection to a database file, for SQL the store would never run.
class RawSqlite {
 public:
  explicit RawSqlite(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK) {
      ADD_FAILURE() << "cannot open " << path;
    }
    sqlite3_busy_timeout(db_, 10000);
  }
  ~RawSqlite() { sqlite3_close_v2(db_); }
  RawSqlite(const RawSqlite&) = delete;
  RawSqlite& operator=(const RawSqlite&) = delete;

  sqlite3* get() const { return db_; }

  Status Exec(const std::string& sql) {
    char* message = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message) == SQLITE_OK) return {};
    std::string text = message != nullptr ? message : "?";
    sqlite3_free(message);
    return Error::Internal(text + " in: " + sql);
  }

  // The first column of the first row, as text ("" when there is none).
  std::string Text(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    std::string out;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sqlite3_errmsg(db_) << " in: " << sql;
      return out;
    }
    if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0) != nullptr) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
    return out;
  }

 private:
  sqlite3* db_ = nullptr;
};

inline std::string SqlitePathOf(const std::string& url) {
  return url.starts_with("sqlite:") ? url.substr(7) : url;
}

// Flips one byte of a stored column of `entries` (payload, hash, prev_hash, ...). The immutability
// triggers are dropped first, as anyone with the file could; SQLite's own page checks cannot tell.
inline Status CorruptSqliteEntry(const std::string& url, const std::string& patient_id,
                                 int64_t version, const std::string& column) {
  RawSqlite db(SqlitePathOf(url));
  if (auto st = db.Exec("DROP TRIGGER IF EXISTS entries_are_never_updated"); !st.ok()) return st;
  // Entries are keyed by the stream's integer id (schema version 4).
  const std::string stream_of = "(SELECT id FROM streams WHERE patient_id = ?1)";
  // The middle byte of the blob, XOR 0x01.
  sqlite3_stmt* read = nullptr;
  const std::string select =
      "SELECT " + column + " FROM entries WHERE stream = " + stream_of + " AND version = ?2";
  if (sqlite3_prepare_v2(db.get(), select.c_str(), -1, &read, nullptr) != SQLITE_OK) {
    return Error::Internal(sqlite3_errmsg(db.get()));
  }
  sqlite3_bind_text(read, 1, patient_id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(read, 2, version);
  if (sqlite3_step(read) != SQLITE_ROW) {
    sqlite3_finalize(read);
    return Error::NotFound("no such entry");
  }
  std::string bytes(static_cast<const char*>(sqlite3_column_blob(read, 0)),
                    static_cast<size_t>(sqlite3_column_bytes(read, 0)));
  sqlite3_finalize(read);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x01);
  sqlite3_stmt* write = nullptr;
  const std::string update =
      "UPDATE entries SET " + column + " = ?3 WHERE stream = " + stream_of + " AND version = ?2";
  if (sqlite3_prepare_v2(db.get(), update.c_str(), -1, &write, nullptr) != SQLITE_OK) {
    return Error::Internal(sqlite3_errmsg(db.get()));
  }
  sqlite3_bind_text(write, 1, patient_id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(write, 2, version);
  sqlite3_bind_blob(write, 3, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  const int rc = sqlite3_step(write);
  sqlite3_finalize(write);
  if (rc != SQLITE_DONE || sqlite3_changes(db.get()) != 1) {
    return Error::Internal(std::string("update failed: ") + sqlite3_errmsg(db.get()));
  }
  return {};
}

inline StoreBackend SqliteBackend() {
  StoreBackend b;
  b.name = "Sqlite";
  b.new_store_url = [](const std::string& dir) { return "sqlite:" + dir + "/store.db"; };
  b.backup_url = [](const std::string& path) { return "sqlite:" + path; };
  b.corrupt = CorruptSqliteEntry;
  return b;
}

}  // namespace isoguard::store::testing
