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

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "sqlite_backend.h"
#include "store/entry_codec.h"
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
  EXPECT_EQ(db.Text("SELECT count(*) FROM pragma_foreign_key_list('entries')"), "1");
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

  auto pg = OpenEventStore("postgresql://localhost:5432/isoguard");
  EXPECT_TRUE(Fails(pg, ErrorKind::kBadInput, "db", "PostgreSQL backend is not built yet"));
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
      const std::string patient = "crash-" + std::to_string(t);
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

}  // namespace
}  // namespace isoguard::store::testing
