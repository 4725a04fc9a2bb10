// What only the SQLite backend has: its file settings, its migrations (a database written by
// an older schema is upgraded on open; a newer one, or someone else's file, is refused), the
// erased key's bytes gone from the file, the triggers that keep entries immutable, the URL
// forms of OpenEventStore, and crash safety: a writer killed with SIGKILL at random moments
// loses nothing it acknowledged and leaves a database that checks clean.
#include "store/sqlite/sqlite_event_store.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "sqlite_backend.h"
#include "store/entry_codec.h"
#include "store/projection.h"
#include "store_test_support.h"

namespace isoguard::store::testing {
namespace {

std::unique_ptr<EventStore> OpenOrDie(const std::string& url) {
  auto opened = OpenEventStore(url);
  EXPECT_TRUE(opened.ok()) << opened.error().ToString();
  return opened.ok() ? std::move(*opened) : nullptr;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(SqliteEventStore, FileIsWalWithStrictTablesAndForeignKeys) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  {
    auto store = OpenOrDie(path);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
  }
  RawSqlite db(path);
  EXPECT_EQ(db.Text("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(db.Text("PRAGMA user_version"), std::to_string(kSqliteSchemaVersion));
  EXPECT_EQ(db.Text("PRAGMA application_id"), std::to_string(kSqliteApplicationId));
  EXPECT_EQ(db.Text("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND "
                    "sql NOT LIKE '%STRICT%'"),
            "0");
  // entries -> streams and entries -> commits (schema version 4).
  EXPECT_EQ(db.Text("SELECT count(*) FROM pragma_foreign_key_list('entries')"), "2");
  EXPECT_EQ(db.Text("SELECT count(*) FROM pragma_foreign_key_list('commits')"), "1");
  EXPECT_EQ(db.Text("PRAGMA foreign_key_check"), "");
  EXPECT_EQ(db.Text("PRAGMA integrity_check"), "ok");
}

TEST(SqliteEventStore, EntriesCannotBeUpdatedOrDeletedEvenBySql) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  {
    auto store = OpenOrDie(path);
    ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1"), WeightEntry(60)}, 0))));
  }
  RawSqlite db(path);
  auto updated = db.Exec("UPDATE entries SET type = 'lab' WHERE version = 2");
  ASSERT_FALSE(updated.ok());
  EXPECT_NE(updated.error().message.find("immutable"), std::string::npos);
  EXPECT_FALSE(db.Exec("DELETE FROM entries").ok());
  auto key_deleted = db.Exec("DELETE FROM patient_keys");
  ASSERT_FALSE(key_deleted.ok());
  EXPECT_NE(key_deleted.error().message.find("only by a recorded erasure"), std::string::npos);
}

TEST(SqliteEventStore, TheAuditTableIsAppendOnly) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  {
    auto store = OpenOrDie(path);
    ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
    ASSERT_TRUE(Ok(store->ErasePatient("p-1", TestActor())));
  }
  RawSqlite db(path);
  EXPECT_EQ(db.Text("SELECT count(*) FROM audit"), "1");
  EXPECT_FALSE(db.Exec("DELETE FROM audit").ok());
  EXPECT_FALSE(db.Exec("UPDATE audit SET actor_id = 'someone else'").ok());
  EXPECT_EQ(db.Text("SELECT actor_id FROM audit"), "dr-test");
}

// Crypto-shredding is only as good as the deletion: the key's bytes must leave the file (and
// its WAL), not just the table.
TEST(SqliteEventStore, ErasureLeavesNoCopyOfTheKeyInTheFiles) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  auto store = OpenOrDie(path);
  ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1"), WeightEntry(60)}, 0))));
  ASSERT_TRUE(Ok(store->Append(Request("p-2", {PatientEntry("p-2")}, 0))));
  std::string key;
  {
    RawSqlite db(path);
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db.get(), "SELECT key FROM patient_keys WHERE patient_id='p-1'",
                                 -1, &stmt, nullptr),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
    key.assign(static_cast<const char*>(sqlite3_column_blob(stmt, 0)), 32);
    sqlite3_finalize(stmt);
  }
  ASSERT_TRUE(ReadFile(path).find(key) != std::string::npos ||
              ReadFile(path + "-wal").find(key) != std::string::npos)
      << "the key should be in the files before the erasure";
  ASSERT_TRUE(Ok(store->ErasePatient("p-1", Actor{"dpo", "privacy_officer", "test"})));
  EXPECT_EQ(ReadFile(path).find(key), std::string::npos);
  EXPECT_EQ(ReadFile(path + "-wal").find(key), std::string::npos);
  store.reset();
  EXPECT_EQ(ReadFile(path).find(key), std::string::npos);
  RawSqlite db(path);
  EXPECT_EQ(db.Text("SELECT actor_id || ' ' || actor_role || ' ' || action FROM audit "
                    "WHERE patient_id = 'p-1'"),
            "dpo privacy_officer erasure");
  EXPECT_EQ(db.Text("SELECT count(*) FROM patient_keys"), "1");
}

// The same with enough patients that the keys table has split across pages (cells moved
// between pages leave no copies either), erasing every third patient.
TEST(SqliteEventStore, ErasureLeavesNoCopyOfAnyKeyAfterPageSplits) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  auto store = OpenOrDie(path);
  constexpr int kPatients = 400;
  for (int i = 0; i < kPatients; ++i) {
    const std::string p = "p-" + std::to_string(i);
    ASSERT_TRUE(Ok(store->Append(Request(p, {PatientEntry(p)}, 0))));
  }
  std::vector<std::string> erased_keys;
  {
    RawSqlite db(path);
    ASSERT_GT(std::stoi(db.Text("SELECT count(*) FROM dbstat WHERE name = 'patient_keys'")), 3)
        << "the keys should span several pages";
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db.get(), "SELECT patient_id, key FROM patient_keys", -1, &stmt,
                                 nullptr),
              SQLITE_OK);
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      const std::string p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
      if (std::stoi(p.substr(2)) % 3 == 0) {
        erased_keys.emplace_back(static_cast<const char*>(sqlite3_column_blob(stmt, 1)), 32);
      }
    }
    sqlite3_finalize(stmt);
  }
  ASSERT_EQ(erased_keys.size(), static_cast<size_t>((kPatients + 2) / 3));
  for (int i = 0; i < kPatients; i += 3) {
    ASSERT_TRUE(Ok(store->ErasePatient("p-" + std::to_string(i), TestActor())));
  }
  store.reset();
  const std::string file = ReadFile(path) + ReadFile(path + "-wal");
  for (const std::string& key : erased_keys) {
    EXPECT_EQ(file.find(key), std::string::npos) << "a destroyed key is still in the file";
  }
}

// Two stores on one file (two processes, in effect): each writer remembers stream heads between
// batches, and must notice when the other has moved a stream on.
TEST(SqliteEventStore, TwoStoresOnOneFileSeeEachOthersAppends) {
  TempDir dir;
  const std::string path = dir.File("shared.db");
  auto a = OpenOrDie(path);
  auto b = OpenOrDie(path);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(Ok(a->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
  ASSERT_TRUE(Ok(a->Append(Request("p-1", {WeightEntry(60)}, 1))));
  ASSERT_TRUE(Ok(b->Append(Request("p-1", {WeightEntry(61)}, 2))));
  EXPECT_TRUE(Fails(a->Append(Request("p-1", {WeightEntry(62)}, 2)), ErrorKind::kConflict,
                    "expected_version", "at version 3"));
  ASSERT_TRUE(Ok(a->Append(Request("p-1", {WeightEntry(62)}, 3))));
  ASSERT_TRUE(Ok(b->Append(Request("p-1", {WeightEntry(63)}))));
  ASSERT_TRUE(Ok(b->ErasePatient("p-1", TestActor())));
  EXPECT_TRUE(Fails(a->Append(Request("p-1", {WeightEntry(64)})), ErrorKind::kBadInput,
                    "patient_id", "was erased"));
  auto report = a->Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  EXPECT_EQ(report->entries_checked, 5);
}

// The queue, the batches and the reader pool at their smallest: callers wait for room, and
// every append still lands once.
TEST(SqliteEventStore, TinyQueueBatchAndReaderPoolOnlySlowThingsDown) {
  TempDir dir;
  SqliteOptions options;
  options.max_queued_requests = 1;
  options.max_batch_requests = 1;
  options.max_readers = 1;
  auto opened = SqliteEventStore::Open(dir.File("tiny.db"), options);
  ASSERT_TRUE(Ok(opened));
  SqliteEventStore& store = **opened;
  constexpr int kThreads = 6;
  constexpr int kAppends = 15;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string p = "q-" + std::to_string(t);
      if (!store.Append(Request(p, {PatientEntry(p)}, 0)).ok()) errors.fetch_add(1);
      for (int i = 0; i < kAppends; ++i) {
        if (!store.Append(Request(p, {WeightEntry(60)}, 1 + i)).ok()) errors.fetch_add(1);
        if (!store.ReadStream(p).ok()) errors.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  auto report = store.Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value());
  EXPECT_EQ(report->entries_checked, kThreads * (1 + kAppends));
}

// ---- URLs

TEST(SqliteEventStore, OpenEventStoreTakesSqliteUrlsAndPlainPaths) {
  TempDir dir;
  {
    auto store = OpenOrDie("sqlite:" + dir.File("a.db"));
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
  }
  auto plain = OpenOrDie(dir.File("a.db"));
  ASSERT_NE(plain, nullptr);
  auto stream = plain->ReadStream("p-1");
  ASSERT_TRUE(Ok(stream));
  EXPECT_EQ(stream->version, 1);

  EXPECT_TRUE(Fails(OpenEventStore("sqlite:"), ErrorKind::kBadInput, "db"));
  EXPECT_TRUE(Fails(OpenEventStore(":memory:"), ErrorKind::kBadInput, "db"));
  auto missing_dir = OpenEventStore(dir.File("no/such/dir/a.db"));
  ASSERT_FALSE(missing_dir.ok());
  EXPECT_EQ(missing_dir.error().kind, ErrorKind::kInternal);
}

// ---- Migrations

// Schema version 1 exactly as that version of isoguard wrote it: the fixture of a database
// made before the audit table existed.
constexpr const char* kSchemaV1 = R"sql(
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
PRAGMA journal_mode = WAL;
PRAGMA user_version = 1;
PRAGMA application_id = 1230196551;
)sql";

// Writes a v1 database holding one stream of `entries`, rows made as v1 made them.
void WriteV1Fixture(const std::string& path, const std::string& patient,
                    const std::vector<std::string>& entries) {
  RawSqlite db(path);
  ASSERT_TRUE(Ok(db.Exec(kSchemaV1)));
  const PatientKey key = PatientKey::Generate();
  sqlite3_stmt* stmt = nullptr;
  ASSERT_TRUE(Ok(db.Exec("INSERT INTO streams VALUES ('" + patient + "', 1789000000000)")));
  ASSERT_EQ(sqlite3_prepare_v2(db.get(), "INSERT INTO patient_keys VALUES (?1, ?2, 1789000000000)",
                               -1, &stmt, nullptr),
            SQLITE_OK);
  sqlite3_bind_text(stmt, 1, patient.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_blob(stmt, 2, key.data(), 32, SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_DONE);
  sqlite3_finalize(stmt);

  ASSERT_EQ(sqlite3_prepare_v2(db.get(),
                               "INSERT INTO entries (patient_id, version, position, event_id, "
                               "type, payload, recorded_at_ms, actor_id, actor_role, "
                               "actor_source, idempotency_key, prev_hash, hash) VALUES (?1, ?2, "
                               "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, ?11, ?12)",
                               -1, &stmt, nullptr),
            SQLITE_OK);
  Hash prev{};
  for (size_t i = 0; i < entries.size(); ++i) {
    auto checked = CheckEntry(entries[i], i, patient, ParseOptions{});
    ASSERT_TRUE(Ok(checked));
    EntryRow row;
    row.patient_id = patient;
    row.version = static_cast<int64_t>(i) + 1;
    row.position = row.version;
    row.event_id = checked->is_patient || checked->event_id.empty()
                       ? AssignedEventId(patient, row.version, 0)
                       : checked->event_id;
    row.type = checked->type;
    row.payload = SealPayload(key, patient, row.version, StoredJson(*checked, row.event_id));
    row.recorded_at_ms = 1789000000000 + row.version;
    row.actor = Actor{"import", "system", "v1"};
    row.prev_hash = prev;
    row.hash = EntryHash(row);
    prev = row.hash;
    sqlite3_bind_text(stmt, 1, row.patient_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 2, row.version);
    sqlite3_bind_int64(stmt, 3, row.position);
    sqlite3_bind_text(stmt, 4, row.event_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 5, row.type.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(stmt, 6, row.payload.data(), static_cast<int>(row.payload.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 7, row.recorded_at_ms);
    sqlite3_bind_text(stmt, 8, row.actor.id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 9, row.actor.role.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 10, row.actor.source.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(stmt, 11, row.prev_hash.data(), 32, SQLITE_TRANSIENT);
    sqlite3_bind_blob(stmt, 12, row.hash.data(), 32, SQLITE_TRANSIENT);
    ASSERT_EQ(sqlite3_step(stmt), SQLITE_DONE) << sqlite3_errmsg(db.get());
    sqlite3_reset(stmt);
  }
  sqlite3_finalize(stmt);
}

// What versions 2 and 3 added to version 1's tables, exactly as they wrote it.
constexpr const char* kSchemaV2 = R"sql(
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
constexpr const char* kSchemaV3 = R"sql(
CREATE TABLE patient_state (
  patient_id TEXT NOT NULL PRIMARY KEY REFERENCES streams (patient_id),
  version INTEGER NOT NULL CHECK (version >= 1),
  position INTEGER NOT NULL,
  state BLOB NOT NULL
) STRICT;
)sql";

// A database of schema version 1, 2 or 3 written row by row as those versions wrote it: each
// append's entries share its time, actor and idempotency key (a keyed append is also in
// `appends`); version 3 keeps each patient's state row at the stream's head.
class OldStoreFile {
 public:
  OldStoreFile(const std::string& path, int version) : db_(path), version_(version) {
    EXPECT_TRUE(Ok(db_.Exec(kSchemaV1)));
    if (version >= 2) {
      EXPECT_TRUE(Ok(db_.Exec(kSchemaV2)));
    }
    if (version >= 3) {
      EXPECT_TRUE(Ok(db_.Exec(kSchemaV3)));
    }
    EXPECT_TRUE(Ok(db_.Exec("PRAGMA user_version = " + std::to_string(version))));
  }

  void Append(const std::string& patient, const std::vector<std::string>& entries,
              const std::string& idempotency_key = {},
              const Actor& actor = Actor{"import", "system", "v1"}) {
    const int64_t now = ++clock_ms_;
    auto [it, is_new] = streams_.try_emplace(patient);
    Stream& s = it->second;
    if (is_new) {
      Run("INSERT INTO streams VALUES (?1, ?2)", {patient}, {now});
      RunBlob("INSERT INTO patient_keys VALUES (?1, ?2, 1789000000000)", patient,
              std::string_view(reinterpret_cast<const char*>(s.key.data()), 32));
    }
    const int64_t first = s.version + 1;
    for (size_t i = 0; i < entries.size(); ++i) {
      auto checked = CheckEntry(entries[i], i, patient, ParseOptions{});
      ASSERT_TRUE(Ok(checked));
      EntryRow row;
      row.patient_id = patient;
      row.version = ++s.version;
      row.position = ++position_;
      row.event_id = checked->is_patient || checked->event_id.empty()
                         ? AssignedEventId(patient, row.version, 0)
                         : checked->event_id;
      row.type = checked->type;
      const std::string stored = StoredJson(*checked, row.event_id);
      row.payload = SealPayload(s.key, patient, row.version, stored);
      row.recorded_at_ms = now;
      row.actor = actor;
      row.idempotency_key = idempotency_key;
      row.prev_hash = s.prev;
      row.hash = EntryHash(row);
      s.prev = row.hash;
      ASSERT_TRUE(Ok(FoldEntry(s.state, row.type, stored)));
      InsertEntry(row);
    }
    if (!idempotency_key.empty()) {
      Run("INSERT INTO appends VALUES (?1, ?2, ?3, ?4)", {patient, idempotency_key},
          {first, s.version});
    }
    if (version_ >= 3) {
      const std::string sealed = SealState(s.key, patient, s.version, s.state);
      Run("DELETE FROM patient_state WHERE patient_id = ?1", {patient}, {});
      sqlite3_stmt* stmt = Prepare("INSERT INTO patient_state VALUES (?1, ?2, ?3, ?4)");
      sqlite3_bind_text(stmt, 1, patient.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(stmt, 2, s.version);
      sqlite3_bind_int64(stmt, 3, position_);
      sqlite3_bind_blob(stmt, 4, sealed.data(), static_cast<int>(sealed.size()), SQLITE_TRANSIENT);
      Finish(stmt);
    }
  }

  // As versions 2 and 3 erased: the audit row, then the key (and the state) deleted.
  void Erase(const std::string& patient) {
    Run("INSERT INTO audit (action, patient_id, actor_id, actor_role, actor_source, at_ms) "
        "VALUES ('erasure', ?1, 'dpo', 'administrator', 'cli', 1789000009999)",
        {patient}, {});
    Run("DELETE FROM patient_keys WHERE patient_id = ?1", {patient}, {});
    if (version_ >= 3) Run("DELETE FROM patient_state WHERE patient_id = ?1", {patient}, {});
  }

 private:
  struct Stream {
    PatientKey key = PatientKey::Generate();
    int64_t version = 0;
    Hash prev{};
    StateText state;
  };

  sqlite3_stmt* Prepare(const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_.get(), sql, -1, &stmt, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db_.get());
    return stmt;
  }
  void Finish(sqlite3_stmt* stmt) {
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_DONE) << sqlite3_errmsg(db_.get());
    sqlite3_finalize(stmt);
  }
  // Texts bound first (?1, ...), then integers.
  void Run(const char* sql, const std::vector<std::string>& texts,
           const std::vector<int64_t>& ints) {
    sqlite3_stmt* stmt = Prepare(sql);
    int i = 0;
    for (const std::string& t : texts)
      sqlite3_bind_text(stmt, ++i, t.c_str(), -1, SQLITE_TRANSIENT);
    for (int64_t v : ints) sqlite3_bind_int64(stmt, ++i, v);
    Finish(stmt);
  }
  void RunBlob(const char* sql, const std::string& text, std::string_view blob) {
    sqlite3_stmt* stmt = Prepare(sql);
    sqlite3_bind_text(stmt, 1, text.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(stmt, 2, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
    Finish(stmt);
  }
  void InsertEntry(const EntryRow& row) {
    sqlite3_stmt* stmt = Prepare(
        "INSERT INTO entries (position, patient_id, version, event_id, type, payload, "
        "recorded_at_ms, actor_id, actor_role, actor_source, idempotency_key, prev_hash, hash) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
    sqlite3_bind_int64(stmt, 1, row.position);
    sqlite3_bind_text(stmt, 2, row.patient_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 3, row.version);
    sqlite3_bind_text(stmt, 4, row.event_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 5, row.type.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(stmt, 6, row.payload.data(), static_cast<int>(row.payload.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 7, row.recorded_at_ms);
    sqlite3_bind_text(stmt, 8, row.actor.id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 9, row.actor.role.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 10, row.actor.source.c_str(), -1, SQLITE_TRANSIENT);
    if (row.idempotency_key.empty()) {
      sqlite3_bind_null(stmt, 11);
    } else {
      sqlite3_bind_text(stmt, 11, row.idempotency_key.c_str(), -1, SQLITE_TRANSIENT);
    }
    sqlite3_bind_blob(stmt, 12, row.prev_hash.data(), 32, SQLITE_TRANSIENT);
    sqlite3_bind_blob(stmt, 13, row.hash.data(), 32, SQLITE_TRANSIENT);
    Finish(stmt);
  }

  RawSqlite db_;
  int version_;
  int64_t position_ = 0;
  int64_t clock_ms_ = 1789000000000;
  std::map<std::string, Stream> streams_;
};

// Every column of every entry, one line each in position order, from `source`: the table
// `entries` of a file before version 4, the view `entry_rows` from version 4.
std::vector<std::string> EveryEntryColumn(const std::string& path, const std::string& source) {
  RawSqlite db(path);
  sqlite3_stmt* stmt = nullptr;
  const std::string sql =
      "SELECT position, patient_id, version, event_id, type, hex(payload), recorded_at_ms, "
      "actor_id, actor_role, actor_source, quote(idempotency_key), hex(prev_hash), hex(hash) "
      "FROM " +
      source + " ORDER BY position";
  std::vector<std::string> rows;
  if (sqlite3_prepare_v2(db.get(), sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << sqlite3_errmsg(db.get());
    return rows;
  }
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    std::string line;
    for (int c = 0; c < 13; ++c) {
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
      line += (c == 0 ? "" : "|") + std::string(text != nullptr ? text : "<null>");
    }
    rows.push_back(std::move(line));
  }
  sqlite3_finalize(stmt);
  return rows;
}

TEST(SqliteMigration, VersionOneDatabaseIsUpgradedOnOpen) {
  TempDir dir;
  const std::string path = dir.File("v1.db");
  WriteV1Fixture(path, "p-1", {PatientEntry("p-1"), PrescriptionEntry("rx-1"), WeightEntry(61)});
  {
    RawSqlite db(path);
    ASSERT_EQ(db.Text("PRAGMA user_version"), "1");
    ASSERT_EQ(db.Text("SELECT count(*) FROM sqlite_schema WHERE name = 'audit'"), "0");
  }
  auto store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  {
    RawSqlite db(path);
    EXPECT_EQ(db.Text("PRAGMA user_version"), std::to_string(kSqliteSchemaVersion));
    EXPECT_EQ(db.Text("SELECT count(*) FROM sqlite_schema WHERE name = 'audit'"), "1");
  }
  // The old entries read and verify; new ones chain onto them; erasure (new in v2) works.
  auto stream = store->ReadStream("p-1");
  ASSERT_TRUE(Ok(stream));
  ASSERT_EQ(stream->version, 3);
  EXPECT_TRUE(SameJson(stream->entries[2].json, WithId(WeightEntry(61), "p-1-3")));
  auto appended = store->Append(Request("p-1", {DispenseEntry("rx-1")}, 3));
  ASSERT_TRUE(Ok(appended));
  EXPECT_EQ(appended->last_position, 4);
  auto report = store->Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  EXPECT_EQ(report->entries_checked, 4);
  EXPECT_TRUE(Ok(store->ErasePatient("p-1", TestActor())));
  report = store->Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value());
}

TEST(SqliteMigration, EmptyVersionZeroFileIsCreatedFromScratch) {
  TempDir dir;
  const std::string path = dir.File("v0.db");
  {
    RawSqlite db(path);
    ASSERT_TRUE(Ok(db.Exec("PRAGMA user_version = 0; VACUUM")));
  }
  auto store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
}

TEST(SqliteMigration, NewerSchemaIsRefusedAndLeftAlone) {
  TempDir dir;
  const std::string path = dir.File("v99.db");
  {
    auto store = OpenOrDie(path);
    ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
  }
  {
    RawSqlite db(path);
    ASSERT_TRUE(Ok(db.Exec("PRAGMA user_version = 99")));
  }
  auto refused = OpenEventStore(path);
  EXPECT_TRUE(Fails(
      refused, ErrorKind::kBadInput, "db",
      "has schema version 99, newer than this build's " + std::to_string(kSqliteSchemaVersion)));
  RawSqlite db(path);
  EXPECT_EQ(db.Text("PRAGMA user_version"), "99");
  EXPECT_EQ(db.Text("SELECT count(*) FROM entries"), "1");
}

TEST(SqliteMigration, SomeoneElsesDatabaseIsRefused) {
  TempDir dir;
  const std::string other = dir.File("other.db");
  {
    RawSqlite db(other);
    ASSERT_TRUE(Ok(db.Exec("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")));
  }
  EXPECT_TRUE(Fails(OpenEventStore(other), ErrorKind::kBadInput, "db", "not an isoguard"));
  const std::string tagged = dir.File("tagged.db");
  {
    RawSqlite db(tagged);
    ASSERT_TRUE(Ok(db.Exec("PRAGMA application_id = 42; PRAGMA user_version = 1")));
  }
  EXPECT_TRUE(Fails(OpenEventStore(tagged), ErrorKind::kBadInput, "db", "not an isoguard"));
  RawSqlite db(other);
  EXPECT_EQ(db.Text("SELECT count(*) FROM sqlite_schema WHERE name = 'entries'"), "0");
}

// ---- Projections

// The record a stream folds into, by hand: what the state must hold.
std::string FoldedByHand(const Stream& stream) {
  json::object patient;
  json::array events;
  for (const StoredEntry& e : stream.entries) {
    json::value v = json::parse(e.json);
    if (e.type == kPatientEntryType) {
      patient = v.as_object();
      patient.erase("type");
    } else {
      events.push_back(v);
    }
  }
  json::object record;
  record["patient"] = patient;
  record["events"] = events;
  return json::serialize(record);
}

// Every patient's state read back and compared with its stream folded by hand.
void ExpectStatesMatchStreams(EventStore& store, const std::vector<std::string>& patients) {
  for (const std::string& p : patients) {
    SCOPED_TRACE(p);
    auto stream = store.ReadStream(p);
    auto state = store.ReadState(p);
    ASSERT_TRUE(Ok(stream));
    ASSERT_TRUE(Ok(state));
    EXPECT_EQ(state->version, stream->version);
    EXPECT_EQ(state->position, stream->entries.back().position);
    EXPECT_TRUE(SameJson(state->record_json, FoldedByHand(*stream)));
  }
}

// Three patients with streams of a few appends each, written through Append.
void WriteThreePatients(EventStore& store) {
  for (const std::string p : {"p-1", "p-2", "p-3"}) {
    ASSERT_TRUE(Ok(store.Append(Request(p, {PatientEntry(p), PrescriptionEntry("rx-1")}, 0))));
    ASSERT_TRUE(Ok(store.Append(Request(p, {WeightEntry(61), DispenseEntry("rx-1")}, 2))));
  }
}

TEST(SqliteProjections, RebuildRepairsADeletedAndAGarbledRowAndRemovesAnOrphan) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  auto store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  WriteThreePatients(*store);
  {
    RawSqlite db(path);
    ASSERT_TRUE(Ok(db.Exec("DELETE FROM patient_state WHERE patient_id = 'p-1'")));
    // One byte of the sealed state flipped: the row no longer opens.
    ASSERT_TRUE(
        Ok(db.Exec("UPDATE patient_state SET state = CAST(substr(state, 1, 40) || "
                   "CASE WHEN substr(state, 41, 1) = x'00' THEN x'01' ELSE x'00' END || "
                   "substr(state, 42) AS BLOB) WHERE patient_id = 'p-2'")));
    ASSERT_EQ(db.Text("SELECT count(*) FROM patient_state"), "2");
    // A row with no stream behind it, as only SQL with the foreign keys off can leave.
    ASSERT_TRUE(
        Ok(db.Exec("PRAGMA foreign_keys = OFF; INSERT INTO patient_state VALUES "
                   "('ghost', 1, 1, x'00')")));
  }
  EXPECT_TRUE(Fails(store->ReadState("p-1"), ErrorKind::kInternal, "",
                    "patient p-1: the state "
                    "is missing"));
  EXPECT_TRUE(Fails(store->ReadState("p-2"), ErrorKind::kInternal, "", "patient p-2"));

  auto report = store->RebuildProjections();
  ASSERT_TRUE(Ok(report));
  EXPECT_EQ(report->patients, 3);
  EXPECT_EQ(report->entries, 12);
  EXPECT_EQ(report->repaired, 2);
  EXPECT_EQ(report->removed, 1);
  ExpectStatesMatchStreams(*store, {"p-1", "p-2", "p-3"});

  auto again = store->RebuildProjections();
  ASSERT_TRUE(Ok(again));
  EXPECT_EQ(again->patients, 3);
  EXPECT_EQ(again->repaired, 0);
  EXPECT_EQ(again->removed, 0);
  RawSqlite db(path);
  EXPECT_EQ(db.Text("SELECT count(*) FROM patient_state"), "3");
}

// The rebuild goes in batches of patients, each its own transaction, with appends between.
TEST(SqliteProjections, RebuildInSmallBatchesBesideWriters) {
  TempDir dir;
  SqliteOptions options;
  options.max_rebuild_patients = 2;
  auto opened = SqliteEventStore::Open(dir.File("s.db"), options);
  ASSERT_TRUE(Ok(opened));
  SqliteEventStore& store = **opened;
  std::vector<std::string> patients;
  for (int i = 0; i < 9; ++i) {
    patients.push_back("q-" + std::to_string(i));
    ASSERT_TRUE(Ok(store.Append(Request(patients.back(), {PatientEntry(patients.back())}, 0))));
  }
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::thread writer([&] {
    for (int i = 0; !stop.load(); ++i) {
      const std::string& p = patients[static_cast<size_t>(i) % patients.size()];
      if (!store.Append(Request(p, {WeightEntry(60 + i % 30)})).ok()) errors.fetch_add(1);
    }
  });
  int64_t repaired = 0;
  for (int round = 0; round < 5; ++round) {
    auto report = store.RebuildProjections();
    ASSERT_TRUE(Ok(report));
    EXPECT_EQ(report->patients, 9);
    repaired += report->repaired;
  }
  stop = true;
  writer.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(repaired, 0) << "the appends kept every state as the log has it";
  ExpectStatesMatchStreams(store, patients);
}

// The state row is a snapshot written every sixteen entries; a read folds in the entries after
// it, checking each, so the state is never behind the log.
TEST(SqliteProjections, TheStateRowIsASnapshotAndReadsFoldInTheNewestEntries) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  auto store = OpenOrDie(path);
  ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
  std::set<std::string> row_versions;
  for (int i = 0; i < 40; ++i) {
    if (i == 10) {  // a fresh writer, which remembers nothing
      store.reset();
      store = OpenOrDie(path);
    }
    ASSERT_TRUE(Ok(store->Append(Request("p-1", {WeightEntry(60 + i)}, 1 + i))));
    ExpectStatesMatchStreams(*store, {"p-1"});
    RawSqlite db(path);
    const std::string row = db.Text("SELECT version FROM patient_state WHERE patient_id = 'p-1'");
    row_versions.insert(row);
    EXPECT_LT(2 + i - std::stoi(row), 16) << "the row lags the stream by too much";
  }
  EXPECT_GE(row_versions.size(), 3u);  // it was rewritten now and then ...
  EXPECT_LE(row_versions.size(), 5u);  // ... not at every append
  // A long stream is snapshotted less often (an eighth of its length), never past 128 entries.
  std::vector<std::string> many;
  for (int i = 0; i < 300; ++i) many.push_back(WeightEntry(50 + i % 40));
  ASSERT_TRUE(Ok(store->Append(Request("p-long", {PatientEntry("p-long")}, 0))));
  ASSERT_TRUE(Ok(store->Append(Request("p-long", many, 1))));
  int64_t lag_seen = 0;
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(Ok(store->Append(Request("p-long", {WeightEntry(60)}, 301 + i))));
    RawSqlite raw(path);
    const int64_t version = 302 + i;
    const int64_t lag =
        version -
        std::stoll(raw.Text("SELECT version FROM patient_state WHERE patient_id = 'p-long'"));
    lag_seen = std::max(lag_seen, lag);
    EXPECT_LT(lag, version / 8);  // the interval is (events + 1) / 8 for this stream
  }
  EXPECT_GT(lag_seen, 16);
  ExpectStatesMatchStreams(*store, {"p-long"});

  // An entry after the snapshot that no longer checks makes the read fail, naming it.
  RawSqlite db(path);
  const int64_t row = std::stoll(db.Text("SELECT version FROM patient_state"));
  ASSERT_LT(row, 41);
  ASSERT_TRUE(Ok(CorruptSqliteEntry(path, "p-1", 41, "payload")));
  EXPECT_TRUE(Fails(store->ReadState("p-1"), ErrorKind::kInternal, "", "patient p-1 version 41"));
}

// An append onto a stream whose state row is gone rebuilds the state from the log.
TEST(SqliteProjections, AnAppendHealsAMissingState) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  auto store = OpenOrDie(path);
  WriteThreePatients(*store);
  {
    RawSqlite db(path);
    ASSERT_TRUE(Ok(db.Exec("DELETE FROM patient_state WHERE patient_id = 'p-3'")));
  }
  ASSERT_TRUE(Ok(store->Append(Request("p-3", {WeightEntry(62)}, 4))));
  ExpectStatesMatchStreams(*store, {"p-3"});
}

TEST(SqliteProjections, ErasureRemovesTheStateRow) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  auto store = OpenOrDie(path);
  WriteThreePatients(*store);
  ASSERT_TRUE(Ok(store->ErasePatient("p-2", TestActor())));
  RawSqlite db(path);
  EXPECT_EQ(db.Text("SELECT count(*) FROM patient_state WHERE patient_id = 'p-2'"), "0");
  auto state = store->ReadState("p-2");
  ASSERT_TRUE(Ok(state));
  EXPECT_TRUE(state->erased);
  EXPECT_EQ(state->version, 4);
  EXPECT_TRUE(Fails(store->ReadState(std::string(kMaxPatientIdBytes + 1, 'x')),
                    ErrorKind::kBadInput, "patient_id"));
}

TEST(SqliteMigration, VersionTwoDatabaseGetsItsStatesOnUpgrade) {
  TempDir dir;
  const std::string path = dir.File("v2.db");
  {
    OldStoreFile old(path, 2);
    for (const std::string p : {"p-1", "p-2", "p-3"}) {
      old.Append(p, {PatientEntry(p), PrescriptionEntry("rx-1")});
    }
    for (const std::string p : {"p-1", "p-2", "p-3"}) {
      old.Append(p, {WeightEntry(61), DispenseEntry("rx-1")});
    }
    // A header update: the state's patient object is the latest one.
    old.Append("p-1",
               {PatientEntry("p-1", R"(, "time_zone": "America/Chicago")"), WeightEntry(63)});
    old.Erase("p-3");
  }
  auto store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  {
    RawSqlite db(path);
    EXPECT_EQ(db.Text("PRAGMA user_version"), std::to_string(kSqliteSchemaVersion));
    EXPECT_EQ(db.Text("SELECT count(*) FROM patient_state"), "2");  // p-3 is erased
  }
  ExpectStatesMatchStreams(*store, {"p-1", "p-2"});
  auto p1 = store->ReadState("p-1");
  ASSERT_TRUE(Ok(p1));
  EXPECT_EQ(json::parse(p1->record_json).at("patient").at("time_zone"), "America/Chicago");
  auto erased = store->ReadState("p-3");
  ASSERT_TRUE(Ok(erased));
  EXPECT_TRUE(erased->erased);
  auto report = store->RebuildProjections();
  ASSERT_TRUE(Ok(report));
  EXPECT_EQ(report->repaired, 0);
}

// Version 4 rebuilds streams and entries: every row comes over unchanged (positions, versions,
// payloads, metadata, hashes), keyed appends become one commit each and are still replayed by
// their key, unkeyed ones one commit per entry; the file checks clean.
TEST(SqliteMigration, VersionThreeDatabaseGetsIntegerStreamsAndCommits) {
  TempDir dir;
  const std::string path = dir.File("v3.db");
  const Actor cli{"import", "system", "cli"};
  {
    OldStoreFile old(path, 3);
    old.Append("p-1", {PatientEntry("p-1"), PrescriptionEntry("rx-1")}, "import:p-1", cli);
    old.Append("p-2", {PatientEntry("p-2")});
    old.Append("p-1", {WeightEntry(61), DispenseEntry("rx-1")}, {}, TestActor());
    old.Append("p-3", {PatientEntry("p-3"), WeightEntry(50)}, "k-3");
    old.Append("p-2", {WeightEntry(62), WeightEntry(63), WeightEntry(64)}, "k-2", TestActor());
    old.Append("p-1", {WeightEntry(65)}, "k-1", TestActor());
    old.Erase("p-3");
  }
  const std::vector<std::string> before = EveryEntryColumn(path, "entries");
  ASSERT_EQ(before.size(), 11u);
  auto store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  {
    RawSqlite db(path);
    EXPECT_EQ(db.Text("PRAGMA user_version"), "4");
    EXPECT_EQ(db.Text("PRAGMA journal_mode"), "wal");
    EXPECT_EQ(db.Text("PRAGMA integrity_check"), "ok");
    EXPECT_EQ(db.Text("PRAGMA foreign_key_check"), "");
    EXPECT_EQ(db.Text("SELECT count(*) FROM sqlite_schema WHERE name IN ('appends', "
                      "'streams_v4', 'entries_v4', 'entry_commit')"),
              "0");
    // Streams numbered in the order they began; four keyed appends, three unkeyed entries.
    EXPECT_EQ(db.Text("SELECT group_concat(patient_id, ',') FROM "
                      "(SELECT patient_id FROM streams ORDER BY id)"),
              "p-1,p-2,p-3");
    EXPECT_EQ(db.Text("SELECT count(*) FROM commits"), "7");
    EXPECT_EQ(db.Text("SELECT count(*) FROM commits WHERE idempotency_key IS NOT NULL"), "4");
    EXPECT_EQ(db.Text("SELECT count(DISTINCT commit_id) FROM entries WHERE stream = "
                      "(SELECT id FROM streams WHERE patient_id = 'p-2')"),
              "2");
    EXPECT_EQ(db.Text("SELECT count(*) FROM patient_keys"), "2");
    EXPECT_EQ(db.Text("SELECT count(*) FROM patient_state"), "2");
    EXPECT_EQ(db.Text("SELECT count(*) FROM audit"), "1");
    EXPECT_FALSE(db.Exec("UPDATE entries SET type = 'lab' WHERE version = 2").ok());
    EXPECT_FALSE(db.Exec("DELETE FROM entries").ok());
    EXPECT_FALSE(db.Exec("UPDATE commits SET actor_id = 'someone else'").ok());
    EXPECT_FALSE(db.Exec("DELETE FROM commits").ok());
  }
  EXPECT_EQ(EveryEntryColumn(path, "entry_rows"), before);

  // The stored entries as the store reads them, field by field.
  auto all = store->ReadAll(0, 100);
  ASSERT_TRUE(Ok(all));
  ASSERT_EQ(all->size(), 11u);
  EXPECT_EQ((*all)[0].idempotency_key, "import:p-1");
  EXPECT_EQ((*all)[0].actor.source, "cli");
  EXPECT_EQ((*all)[3].patient_id, "p-1");
  EXPECT_EQ((*all)[3].version, 3);
  EXPECT_EQ((*all)[3].idempotency_key, "");
  EXPECT_EQ((*all)[3].actor.id, "dr-test");
  EXPECT_TRUE((*all)[5].erased);

  // An old key is replayed: nothing written, the first result.
  auto replayed =
      store->Append(Request("p-2", {WeightEntry(62), WeightEntry(63), WeightEntry(64)}, {}, "k-2"));
  ASSERT_TRUE(Ok(replayed));
  EXPECT_TRUE(replayed->replayed);
  EXPECT_EQ(replayed->first_version, 2);
  EXPECT_EQ(replayed->last_version, 4);
  EXPECT_EQ(replayed->last_position, 10);
  EXPECT_EQ(replayed->event_ids, (std::vector<std::string>{"p-2-2", "p-2-3", "p-2-4"}));
  auto replayed_import = store->Append(
      Request("p-1", {PatientEntry("p-1"), PrescriptionEntry("rx-1")}, 0, "import:p-1"));
  ASSERT_TRUE(Ok(replayed_import));
  EXPECT_TRUE(replayed_import->replayed);
  EXPECT_EQ(replayed_import->last_position, 2);

  // New entries chain onto the old; states, erasure and verify as before.
  auto appended = store->Append(Request("p-1", {WeightEntry(66)}, 5, "k-1b"));
  ASSERT_TRUE(Ok(appended));
  EXPECT_EQ(appended->first_version, 6);
  EXPECT_EQ(appended->last_position, 12);
  ExpectStatesMatchStreams(*store, {"p-1", "p-2"});
  auto erased = store->ReadState("p-3");
  ASSERT_TRUE(Ok(erased));
  EXPECT_TRUE(erased->erased);
  EXPECT_TRUE(Fails(store->Append(Request("p-3", {WeightEntry(51)}, 2)), ErrorKind::kBadInput,
                    "patient_id", "erased"));
  auto report = store->Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  EXPECT_EQ(report->entries_checked, 12);
  EXPECT_EQ(report->streams_checked, 3);
  auto rebuilt = store->RebuildProjections();
  ASSERT_TRUE(Ok(rebuilt));
  EXPECT_EQ(rebuilt->repaired, 0);
  store.reset();
  RawSqlite db(path);
  EXPECT_EQ(db.Text("PRAGMA integrity_check"), "ok");
  EXPECT_EQ(db.Text("PRAGMA foreign_key_check"), "");
}

// The rebuild checks the foreign keys before it commits: a file where one does not hold is
// refused and left as it was.
TEST(SqliteMigration, AVersionThreeFileWhoseForeignKeysDoNotHoldIsLeftAlone) {
  TempDir dir;
  const std::string path = dir.File("v3.db");
  {
    OldStoreFile old(path, 3);
    old.Append("p-1", {PatientEntry("p-1")}, "k-1");
  }
  {
    RawSqlite db(path);  // foreign keys are off on a raw connection
    ASSERT_TRUE(Ok(db.Exec("INSERT INTO patient_keys VALUES ('ghost', zeroblob(32), 1)")));
  }
  EXPECT_TRUE(Fails(OpenEventStore(path), ErrorKind::kInternal, "", "foreign key does not hold"));
  RawSqlite db(path);
  EXPECT_EQ(db.Text("PRAGMA user_version"), "3");
  EXPECT_EQ(db.Text("SELECT count(*) FROM sqlite_schema WHERE name IN ('appends', 'commits')"),
            "1");
  EXPECT_EQ(db.Text("SELECT count(*) FROM entries WHERE patient_id = 'p-1'"), "1");
}

// ---- Restore

TEST(SqliteRestore, RefusesAnExistingStoreAndRestoresABackupThatVerifies) {
  TempDir dir;
  const std::string path = dir.File("live.db");
  const std::string backup = dir.File("backup.db");
  auto store = OpenOrDie(path);
  WriteThreePatients(*store);
  ASSERT_TRUE(Ok(store->Backup(backup)));
  ASSERT_TRUE(Ok(store->Append(Request("p-1", {WeightEntry(64)}, 4))));  // after the backup

  // Never over a store, nor over a stray WAL.
  EXPECT_TRUE(Fails(SqliteEventStore::Restore(backup, path, {}), ErrorKind::kBadInput, "db",
                    "never overwrites"));
  {
    std::ofstream wal(dir.File("stray.db-wal"));
    wal << "x";
  }
  EXPECT_TRUE(Fails(SqliteEventStore::Restore(backup, dir.File("stray.db"), {}),
                    ErrorKind::kBadInput, "db", "write-ahead log"));
  // Only an isoguard backup.
  EXPECT_TRUE(Fails(SqliteEventStore::Restore(dir.File("missing.db"), dir.File("r0.db"), {}),
                    ErrorKind::kBadInput, "backup", "no backup file"));
  {
    RawSqlite other(dir.File("other.db"));
    ASSERT_TRUE(Ok(other.Exec("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")));
  }
  EXPECT_TRUE(Fails(SqliteEventStore::Restore(dir.File("other.db"), dir.File("r1.db"), {}),
                    ErrorKind::kBadInput, "backup", "not a backup of an isoguard"));
  {
    std::ofstream junk(dir.File("junk.db"));
    junk << "this is not a database, however long it goes on for, it is not one at all";
  }
  EXPECT_TRUE(Fails(SqliteEventStore::Restore(dir.File("junk.db"), dir.File("r2.db"), {}),
                    ErrorKind::kBadInput, "backup"));
  for (const char* name : {"r0.db", "r1.db", "r2.db", "r1.db.restore-partial"}) {
    EXPECT_FALSE(std::filesystem::exists(dir.File(name))) << name << " was left behind";
  }

  // An empty file at the target is no store: it is replaced.
  const std::string restored = dir.File("restored.db");
  { std::ofstream empty(restored); }
  ASSERT_TRUE(Ok(SqliteEventStore::Restore(backup, restored, {})));
  EXPECT_FALSE(std::filesystem::exists(restored + ".restore-partial"));
  EXPECT_FALSE(std::filesystem::exists(backup + "-wal")) << "reading the backup left a WAL";
  EXPECT_FALSE(std::filesystem::exists(backup + "-shm"));
  auto back = OpenOrDie(restored);
  ASSERT_NE(back, nullptr);
  auto report = back->Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  EXPECT_EQ(report->streams_checked, 3);
  EXPECT_EQ(report->entries_checked, 12);  // not the append made after the backup
  ExpectStatesMatchStreams(*back, {"p-1", "p-2", "p-3"});
  // The backup itself was only read.
  RawSqlite db(backup);
  EXPECT_EQ(db.Text("SELECT count(*) FROM entries"), "12");
}

// ---- Prepared appends (bulk import)

RecordAppendOptions BulkOptions() {
  RecordAppendOptions options;
  options.actor = Actor{"import", "system", "test"};
  options.idempotency_key_prefix = "import:";
  return options;
}

// A record line and the entries Append would be given for it.
struct RecordCase {
  std::string line;
  std::vector<std::string> entries;
};

RecordCase ExampleRecord(const std::string& patient) {
  RecordCase c;
  c.entries = {PatientEntry(patient),
               PrescriptionEntry("rx-1"),
               DispenseEntry("rx-1"),
               WeightEntry(58.5),
               R"({"type": "weight", "id": null, "at": "2026-09-03T10:00:00Z", "kg": 59})",
               R"({"type": "weight", "id": ")" + patient +
                   R"(-4", "at": "2026-08-01T10:00:00Z", "kg": 57})"};
  json::object patient_object = json::parse(c.entries[0]).as_object();
  patient_object.erase("type");
  json::array events;
  for (size_t i = 1; i < c.entries.size(); ++i) events.push_back(json::parse(c.entries[i]));
  json::object record;
  record["patient"] = patient_object;
  record["events"] = events;
  c.line = json::serialize(record);
  return c;
}

// PrepareRecord + AppendPrepared store what Append stores for the same entries: the same JSON,
// the same ids (an event with "id": null, or none, gets the assigned one, skipping an id that
// an event of the record gives itself), and a state that folds the stream.
TEST(SqlitePreparedAppend, StoresWhatAppendStores) {
  TempDir dir;
  auto opened = SqliteEventStore::Open(dir.File("s.db"));
  ASSERT_TRUE(Ok(opened));
  SqliteEventStore& store = **opened;
  const RecordCase a = ExampleRecord("a-1");
  const RecordCase b = ExampleRecord("b-1");
  auto prepared = SqliteEventStore::PrepareRecord(a.line, BulkOptions());
  ASSERT_TRUE(Ok(prepared));
  EXPECT_EQ(prepared->patient_id(), "a-1");
  EXPECT_EQ(prepared->entry_count(), a.entries.size());
  std::vector<PreparedAppend> batch;
  batch.push_back(std::move(*prepared));
  auto results = store.AppendPrepared(batch);
  ASSERT_EQ(results.size(), 1u);
  ASSERT_TRUE(Ok(results[0]));
  EXPECT_FALSE(results[0]->replayed);
  EXPECT_EQ(results[0]->first_version, 1);
  EXPECT_EQ(results[0]->last_version, 6);
  auto appended = store.Append(Request("b-1", b.entries, 0, "import:b-1"));
  ASSERT_TRUE(Ok(appended));

  auto sa = store.ReadStream("a-1");
  auto sb = store.ReadStream("b-1");
  ASSERT_TRUE(Ok(sa));
  ASSERT_TRUE(Ok(sb));
  ASSERT_EQ(sa->entries.size(), sb->entries.size());
  for (size_t i = 0; i < sa->entries.size(); ++i) {
    SCOPED_TRACE(i);
    std::string event_id_b = sb->entries[i].event_id;
    if (event_id_b.starts_with("b-1")) event_id_b.replace(0, 3, "a-1");
    EXPECT_EQ(sa->entries[i].event_id, event_id_b);
    EXPECT_EQ(sa->entries[i].type, sb->entries[i].type);
    EXPECT_EQ(sa->entries[i].idempotency_key, "import:a-1");
    EXPECT_EQ(sa->entries[i].actor.id, "import");
    json::value ja = json::parse(sa->entries[i].json);
    json::value jb = json::parse(sb->entries[i].json);
    if (ja.as_object().contains("id")) ja.as_object()["id"] = "?";
    if (jb.as_object().contains("id")) jb.as_object()["id"] = "?";
    EXPECT_EQ(ja, jb);
  }
  EXPECT_EQ(results[0]->event_ids.back(), "a-1-4");  // given
  EXPECT_EQ(sa->entries[4].event_id, "a-1-5");       // "id": null
  EXPECT_EQ(sa->entries[3].event_id, "a-1-4.1");     // none: the plain form is given later
  ExpectStatesMatchStreams(store, {"a-1", "b-1"});
  auto report = store.Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  auto rebuilt = store.RebuildProjections();
  ASSERT_TRUE(Ok(rebuilt));
  EXPECT_EQ(rebuilt->repaired, 0);
}

// The same record again is replayed; a stream that another append began is a conflict; an
// erased patient's stream takes nothing. Each outcome is the request's own: the others of the
// batch are written.
TEST(SqlitePreparedAppend, ReplayConflictAndErasureAreEachRequestsOwn) {
  TempDir dir;
  auto opened = SqliteEventStore::Open(dir.File("s.db"));
  ASSERT_TRUE(Ok(opened));
  SqliteEventStore& store = **opened;
  ASSERT_TRUE(Ok(store.Append(Request("taken", {PatientEntry("taken")}, 0))));
  ASSERT_TRUE(Ok(store.Append(Request("gone", {PatientEntry("gone")}, 0, "import:gone"))));
  ASSERT_TRUE(Ok(store.ErasePatient("gone", TestActor())));
  std::vector<PreparedAppend> first;
  for (const std::string p : {"n-1", "n-2"}) {
    auto prepared = SqliteEventStore::PrepareRecord(ExampleRecord(p).line, BulkOptions());
    ASSERT_TRUE(Ok(prepared));
    first.push_back(std::move(*prepared));
  }
  for (const auto& r : store.AppendPrepared(first)) ASSERT_TRUE(Ok(r));

  std::vector<PreparedAppend> second;
  for (const std::string p : {"n-1", "taken", "n-3", "n-2"}) {
    auto prepared = SqliteEventStore::PrepareRecord(ExampleRecord(p).line, BulkOptions());
    ASSERT_TRUE(Ok(prepared));
    second.push_back(std::move(*prepared));
  }
  RecordAppendOptions no_key = BulkOptions();
  no_key.idempotency_key_prefix.clear();
  auto gone = SqliteEventStore::PrepareRecord(ExampleRecord("gone").line, no_key);
  ASSERT_TRUE(Ok(gone));
  second.push_back(std::move(*gone));
  auto results = store.AppendPrepared(second);
  ASSERT_EQ(results.size(), 5u);
  ASSERT_TRUE(Ok(results[0]));
  EXPECT_TRUE(results[0]->replayed);
  EXPECT_EQ(results[0]->event_ids.size(), 6u);
  EXPECT_TRUE(Fails(results[1], ErrorKind::kConflict, "expected_version", "at version 1"));
  ASSERT_TRUE(Ok(results[2]));
  EXPECT_FALSE(results[2]->replayed);
  ASSERT_TRUE(Ok(results[3]));
  EXPECT_TRUE(results[3]->replayed);
  EXPECT_TRUE(Fails(results[4], ErrorKind::kBadInput, "patient_id", "was erased"));
  EXPECT_EQ(store.ReadStream("taken")->version, 1);
  ExpectStatesMatchStreams(store, {"n-1", "n-2", "n-3", "taken"});
  auto report = store.Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
}

// A record is checked as a record: the parser's errors, with the record's field names; then
// the store's own limits, with Append's.
TEST(SqlitePreparedAppend, ABadRecordIsRefusedNamingTheField) {
  const RecordAppendOptions options = BulkOptions();
  json::value bad = json::parse(ExampleRecord("p-1").line);
  bad.at("events").as_array()[2].as_object()["kg"] = 0;
  EXPECT_TRUE(Fails(SqliteEventStore::PrepareRecord(json::serialize(bad), options),
                    ErrorKind::kBadInput, "events[2].kg"));
  EXPECT_TRUE(Fails(SqliteEventStore::PrepareRecord("{not json", options), ErrorKind::kBadInput, "",
                    "not valid JSON"));
  EXPECT_TRUE(Fails(SqliteEventStore::PrepareRecord("[1]", options), ErrorKind::kBadInput, "",
                    "must be a JSON object"));
  const std::string long_id(kMaxPatientIdBytes + 1, 'p');
  EXPECT_TRUE(Fails(
      SqliteEventStore::PrepareRecord(
          R"({"patient":{"id":")" + long_id +
              R"(","birth_date":"2000-05-14","jurisdiction":"US","category":"cannot_get_pregnant"},"events":[]})",
          options),
      ErrorKind::kBadInput, "patient_id", "at most 256"));
  // A record at the format's limit of 10,000 events is one append (with its patient entry, at
  // the store's limit of entries per append); one event more is the record's error.
  auto with_events = [](size_t n) {
    std::string text = R"({"patient":{"id":"p-1","birth_date":"2000-05-14","jurisdiction":"US",)"
                       R"("category":"cannot_get_pregnant"},"events":[)";
    for (size_t i = 0; i < n; ++i) {
      text += std::string(i == 0 ? "" : ",") +
              R"({"type":"weight","at":"2026-09-01T10:00:00Z","kg":60})";
    }
    return text + "]}";
  };
  static_assert(kMaxEntriesPerAppend == 10001);
  EXPECT_TRUE(Ok(SqliteEventStore::PrepareRecord(with_events(10000), options)));
  EXPECT_TRUE(Fails(SqliteEventStore::PrepareRecord(with_events(10001), options),
                    ErrorKind::kBadInput, "events", "10000"));
}

// Records the plain scan does not take apart go through a DOM and are stored all the same.
TEST(SqlitePreparedAppend, EscapedKeysAndAPatientTypeTakeTheGeneralWay) {
  TempDir dir;
  auto opened = SqliteEventStore::Open(dir.File("s.db"));
  ASSERT_TRUE(Ok(opened));
  SqliteEventStore& store = **opened;
  const std::vector<std::string> lines = {
      // "patient" spelled with an escape.
      R"({"pat\u0069ent":{"id":"e-1","birth_date":"2000-05-14","jurisdiction":"US",)"
      R"("category":"cannot_get_pregnant"},"events":[{"type":"weight","at":"2026-09-01T10:00:00Z","kg":60}]})",
      // The patient object carries a "type" of its own, which the entry's replaces.
      R"({"patient":{"type":"someone","id":"e-2","birth_date":"2000-05-14","jurisdiction":"US",)"
      R"("category":"cannot_get_pregnant"},"events":[]})",
      // Strings with escaped quotes and brackets inside events.
      R"({"patient":{"id":"e-3","birth_date":"2000-05-14","jurisdiction":"US",)"
      R"("category":"cannot_get_pregnant","note":"a \"quoted\" ] } word"},)"
      R"("events":[{"type":"weight","at":"2026-09-01T10:00:00Z","kg":60,"note":"x\\"},)"
      R"( {"note":"{[\"","type":"weight","at":"2026-09-02T10:00:00Z","kg":61}]})",
  };
  std::vector<PreparedAppend> batch;
  for (const std::string& line : lines) {
    auto prepared = SqliteEventStore::PrepareRecord(line, BulkOptions());
    ASSERT_TRUE(Ok(prepared)) << line;
    batch.push_back(std::move(*prepared));
  }
  for (const auto& r : store.AppendPrepared(batch)) ASSERT_TRUE(Ok(r));
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string id = "e-" + std::to_string(i + 1);
    auto state = store.ReadState(id);
    ASSERT_TRUE(Ok(state));
    json::value expected = json::parse(lines[i]);
    if (i == 0) {
      json::object renamed;
      renamed["patient"] = expected.at("patient");
      renamed["events"] = expected.at("events");
      expected = renamed;
    }
    expected.at("patient").as_object().erase("type");
    for (json::value& e : expected.at("events").as_array()) {
      if (!e.as_object().contains("id")) {
        e.as_object()["id"] =
            id + "-" + std::to_string(&e - expected.at("events").as_array().data() + 2);
      }
    }
    EXPECT_EQ(json::parse(state->record_json), expected) << state->record_json;
  }
  ExpectStatesMatchStreams(store, {"e-1", "e-2", "e-3"});
}

// ---- Bulk import mode

// `count` records from `first` on, prepared as `isoguard import` prepares them.
std::vector<PreparedAppend> PrepareRecords(int first, int count) {
  std::vector<PreparedAppend> out;
  for (int i = first; i < first + count; ++i) {
    auto prepared = SqliteEventStore::PrepareRecord(ExampleRecord("bulk-" + std::to_string(i)).line,
                                                    BulkOptions());
    EXPECT_TRUE(Ok(prepared));
    if (prepared.ok()) out.push_back(std::move(*prepared));
  }
  return out;
}

TEST(SqliteBulkImport, AloneTheWriterLeavesWalForTheImportAndComesBack) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  auto opened = SqliteEventStore::Open(path);
  ASSERT_TRUE(Ok(opened));
  SqliteEventStore& store = **opened;
  std::vector<PreparedAppend> before = PrepareRecords(0, 10);
  for (const auto& r : store.AppendPrepared(before)) ASSERT_TRUE(Ok(r));
  ASSERT_TRUE(Ok(store.ReadStream("bulk-3")));  // an idle reader connection: closed by the scope
  {
    SqliteEventStore::BulkImportScope scope(store);
    EXPECT_TRUE(scope.rollback_journal());
    std::vector<PreparedAppend> records = PrepareRecords(10, 200);
    for (const auto& r : store.AppendPrepared(records)) ASSERT_TRUE(Ok(r));
    namespace fs = std::filesystem;
    EXPECT_FALSE(fs::exists(path + "-wal"));
    ASSERT_TRUE(fs::exists(path + "-journal"));  // PERSIST keeps it, its header zeroed
    {
      std::ifstream journal(path + "-journal", std::ios::binary);
      char header[28] = {};
      journal.read(header, sizeof header);
      EXPECT_TRUE(std::all_of(std::begin(header), std::end(header), [](char c) { return c == 0; }))
          << "a committed journal must not be hot";
    }
    // Reads still work meanwhile.
    auto stream = store.ReadStream("bulk-150");
    ASSERT_TRUE(Ok(stream));
    EXPECT_EQ(stream->version, 6);
    std::vector<PreparedAppend> again = PrepareRecords(150, 1);
    auto replayed = store.AppendPrepared(again);
    ASSERT_TRUE(Ok(replayed[0]));
    EXPECT_TRUE(replayed[0]->replayed);
  }
  ASSERT_TRUE(Ok(store.Append(Request("bulk-0", {WeightEntry(60)}, 6))));
  auto report = store.Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  EXPECT_EQ(report->streams_checked, 210);
  EXPECT_EQ(report->entries_checked, 210 * 6 + 1);
  ExpectStatesMatchStreams(store, {"bulk-0", "bulk-99", "bulk-209"});
  opened->reset();
  RawSqlite db(path);
  EXPECT_EQ(db.Text("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(db.Text("PRAGMA integrity_check"), "ok");
  EXPECT_EQ(db.Text("PRAGMA foreign_key_check"), "");
}

TEST(SqliteBulkImport, BesideAnotherConnectionTheImportStaysInWal) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  auto opened = SqliteEventStore::Open(path);
  ASSERT_TRUE(Ok(opened));
  SqliteEventStore& store = **opened;
  std::vector<PreparedAppend> before = PrepareRecords(0, 10);
  for (const auto& r : store.AppendPrepared(before)) ASSERT_TRUE(Ok(r));
  RawSqlite other(path);  // another process's connection, say
  ASSERT_EQ(other.Text("SELECT count(*) FROM streams"), "10");
  {
    SqliteEventStore::BulkImportScope scope(store);
    EXPECT_FALSE(scope.rollback_journal());
    std::vector<PreparedAppend> records = PrepareRecords(10, 200);
    for (const auto& r : store.AppendPrepared(records)) ASSERT_TRUE(Ok(r));
    EXPECT_EQ(other.Text("PRAGMA journal_mode"), "wal");
    EXPECT_EQ(other.Text("SELECT count(*) FROM streams"), "210");
  }
  auto report = store.Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  EXPECT_EQ(report->entries_checked, 210 * 6);
  EXPECT_EQ(other.Text("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(other.Text("PRAGMA integrity_check"), "ok");
}

// ---- Crash safety

// The child: four threads append to their own streams (creating them if need be) and report
// each acknowledged (patient, version) on the pipe, one line each, until killed.
[[noreturn]] void AppendUntilKilled(const std::string& path, int fd, unsigned seed) {
  auto opened = OpenEventStore(path);
  if (!opened.ok()) {
    const std::string line = "error " + opened.error().ToString() + "\n";
    (void)!::write(fd, line.data(), line.size());
    ::_exit(1);
  }
  EventStore& store = **opened;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&store, fd, t, seed] {
      // A stream per round: a record holds at most 10,000 events, and rounds of a fast writer
      // would fill one stream past it.
      const std::string patient = "crash-" + std::to_string(seed) + "-" + std::to_string(t);
      std::mt19937 rng(seed * 31 + static_cast<unsigned>(t));
      auto stream = store.ReadStream(patient);
      if (!stream.ok()) ::_exit(2);
      int64_t version = stream->version;
      for (;;) {
        std::vector<std::string> entries;
        if (version == 0) entries.push_back(PatientEntry(patient));
        const int n = 1 + static_cast<int>(rng() % 5);
        for (int i = 0; i < n; ++i)
          entries.push_back(WeightEntry(static_cast<double>(40 + rng() % 60)));
        auto r = store.Append(Request(patient, entries, version));
        if (!r.ok()) {
          const std::string line = "error " + r.error().ToString() + "\n";
          (void)!::write(fd, line.data(), line.size());
          ::_exit(3);
        }
        version = r->last_version;
        // One short line per write: atomic on a pipe, so lines from threads do not mix.
        const std::string line = patient + " " + std::to_string(version) + "\n";
        if (::write(fd, line.data(), line.size()) < 0) ::_exit(4);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ::_exit(0);
}

TEST(SqliteCrashSafety, AcknowledgedAppendsSurviveSigkillAtRandomMoments) {
  TempDir dir;
  const std::string path = dir.File("crash.db");
  std::mt19937 rng(20261126);
  std::map<std::string, int64_t> acknowledged;  // patient -> highest acknowledged version
  int64_t total_lines = 0;
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    std::fflush(nullptr);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(fds[0]);
      AppendUntilKilled(path, fds[1], static_cast<unsigned>(round));
    }
    ::close(fds[1]);

    std::string received;
    auto drain = [&](int timeout_ms) {
      pollfd p{fds[0], POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return false;
      char buffer[4096];
      const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
      if (n <= 0) return false;
      received.append(buffer, static_cast<size_t>(n));
      return true;
    };
    // Kill at a random moment: sometimes while it is still opening (or migrating) the store.
    const auto kill_at = std::chrono::steady_clock::now() +
                         std::chrono::milliseconds(std::uniform_int_distribution<int>(5, 250)(rng));
    while (std::chrono::steady_clock::now() < kill_at) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          kill_at - std::chrono::steady_clock::now());
      drain(static_cast<int>(std::max<int64_t>(1, left.count())));
    }
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    while (drain(0)) {
    }
    ::close(fds[0]);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the child stopped by itself: "
        << received.substr(received.rfind("error") == std::string::npos ? received.size()
                                                                        : received.rfind("error"));

    // Complete lines only: a line cut by the kill was never fully reported.
    std::istringstream lines(received.substr(0, received.rfind('\n') + 1));
    std::string patient;
    int64_t version = 0;
    while (lines >> patient >> version) {
      ASSERT_TRUE(patient.starts_with("crash-")) << patient;
      acknowledged[patient] = std::max(acknowledged[patient], version);
      ++total_lines;
    }

    auto store = OpenOrDie(path);
    ASSERT_NE(store, nullptr);
    for (const auto& [p, v] : acknowledged) {
      auto stream = store->ReadStream(p);
      ASSERT_TRUE(Ok(stream)) << p;
      EXPECT_GE(stream->version, v) << p << ": an acknowledged append is missing";
    }
    auto report = store->Verify();
    ASSERT_TRUE(Ok(report));
    EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
    store.reset();
    RawSqlite db(path);
    EXPECT_EQ(db.Text("PRAGMA integrity_check"), "ok");
    EXPECT_EQ(db.Text("PRAGMA foreign_key_check"), "");
  }
  RecordProperty("acknowledged_appends", static_cast<int>(total_lines));
  EXPECT_GT(total_lines, 0);
}

// The child of the bulk import crash test: imports `records` records in groups, in bulk import
// mode, reporting its journal mode ("mode persist") and each acknowledged group ("upto N").
constexpr int kCrashImportRecords = 6000;
constexpr int kCrashImportGroup = 200;

[[noreturn]] void ImportUntilKilled(const std::string& path, int fd) {
  auto say = [fd](const std::string& line) {
    if (::write(fd, line.data(), line.size()) < 0) ::_exit(4);
  };
  auto opened = SqliteEventStore::Open(path);
  if (!opened.ok()) {
    say("error " + opened.error().ToString() + "\n");
    ::_exit(1);
  }
  SqliteEventStore& store = **opened;
  SqliteEventStore::BulkImportScope scope(store);
  say(scope.rollback_journal() ? "mode persist\n" : "mode wal\n");
  for (int first = 0; first < kCrashImportRecords; first += kCrashImportGroup) {
    std::vector<PreparedAppend> group = PrepareRecords(first, kCrashImportGroup);
    for (const auto& r : store.AppendPrepared(group)) {
      if (!r.ok()) {
        say("error " + r.error().ToString() + "\n");
        ::_exit(3);
      }
    }
    say("upto " + std::to_string(first + kCrashImportGroup) + "\n");
  }
  ::_exit(0);
}

// An import in bulk import mode (a rollback journal) killed at a random moment: the next open
// rolls the hot journal back and puts the file in WAL again; every acknowledged group is
// there, the file checks clean, and a re-run of the import writes the rest.
TEST(SqliteCrashSafety, BulkImportKilledAtRandomMomentsIsCompletedByARerun) {
  std::mt19937 rng(20261127);
  int rounds_in_rollback_mode = 0;
  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    TempDir dir;
    const std::string path = dir.File("import.db");
    {
      // The file exists (and is in WAL) before the import begins, as after a first import.
      auto opened = SqliteEventStore::Open(path);
      ASSERT_TRUE(Ok(opened));
    }
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    std::fflush(nullptr);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(fds[0]);
      ImportUntilKilled(path, fds[1]);
    }
    ::close(fds[1]);
    std::string received;
    auto drain = [&](int timeout_ms) {
      pollfd p{fds[0], POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return false;
      char buffer[4096];
      const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
      if (n <= 0) return false;
      received.append(buffer, static_cast<size_t>(n));
      return true;
    };
    const auto kill_at =
        std::chrono::steady_clock::now() +
        std::chrono::milliseconds(std::uniform_int_distribution<int>(20, 600)(rng));
    while (std::chrono::steady_clock::now() < kill_at) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          kill_at - std::chrono::steady_clock::now());
      drain(static_cast<int>(std::max<int64_t>(1, left.count())));
    }
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    while (drain(0)) {
    }
    ::close(fds[0]);
    ASSERT_EQ(received.find("error"), std::string::npos) << received;
    if (received.find("mode persist") != std::string::npos) ++rounds_in_rollback_mode;
    int acknowledged = 0;
    std::istringstream lines(received.substr(0, received.rfind('\n') + 1));
    std::string word;
    while (lines >> word) {
      if (word == "upto") lines >> acknowledged;
    }

    auto opened = SqliteEventStore::Open(path);
    ASSERT_TRUE(Ok(opened));
    SqliteEventStore& store = **opened;
    auto report = store.Verify();
    ASSERT_TRUE(Ok(report));
    EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
    EXPECT_GE(report->streams_checked, acknowledged) << "an acknowledged record is missing";
    EXPECT_EQ(report->entries_checked, 6 * report->streams_checked);
    {
      RawSqlite db(path);
      EXPECT_EQ(db.Text("PRAGMA journal_mode"), "wal");
      EXPECT_EQ(db.Text("PRAGMA integrity_check"), "ok");
      EXPECT_EQ(db.Text("PRAGMA foreign_key_check"), "");
    }
    // The re-run: what was written is replayed, the rest imported.
    int replayed = 0;
    {
      SqliteEventStore::BulkImportScope scope(store);
      for (int first = 0; first < kCrashImportRecords; first += kCrashImportGroup) {
        std::vector<PreparedAppend> group = PrepareRecords(first, kCrashImportGroup);
        for (const auto& r : store.AppendPrepared(group)) {
          ASSERT_TRUE(Ok(r));
          replayed += r->replayed ? 1 : 0;
        }
      }
    }
    EXPECT_EQ(replayed, report->streams_checked);
    report = store.Verify();
    ASSERT_TRUE(Ok(report));
    EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
    EXPECT_EQ(report->streams_checked, kCrashImportRecords);
    ExpectStatesMatchStreams(store, {"bulk-0", "bulk-" + std::to_string(kCrashImportRecords - 1)});
    opened->reset();
    RawSqlite db(path);
    EXPECT_EQ(db.Text("PRAGMA journal_mode"), "wal");
    EXPECT_EQ(db.Text("PRAGMA integrity_check"), "ok");
  }
  EXPECT_GT(rounds_in_rollback_mode, 0);
}

}  // namespace
}  // namespace isoguard::store::testing
