// What only the PostgreSQL backend has: its schema and triggers, its migrations (an older
// schema is upgraded on open, a newer one refused), several stores (processes) on one database
// keeping the global order in commit order, the projection rows and their rebuild, restore,
// the URL forms and their errors, and crash safety: the server stopped with
// `pg_ctl stop -m immediate` at random moments while a child process appends loses nothing it
// acknowledged and leaves a log that verifies.
#include "store/postgres/postgres_event_store.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "postgres_backend.h"
#include "store_test_support.h"

namespace isoguard::store::testing {
namespace {

std::unique_ptr<EventStore> OpenOrDie(const std::string& url) {
  auto opened = OpenEventStore(url);
  EXPECT_TRUE(opened.ok()) << opened.error().ToString();
  return opened.ok() ? std::move(*opened) : nullptr;
}

TEST(PostgresEventStore, SchemaHoldsEveryTableWithPatientIdAndItsTriggers) {
  ISOGUARD_REQUIRE_PG();
  const std::string url = FreshPgDatabase();
  {
    auto store = OpenOrDie(url);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
  }
  RawPg db(url);
  EXPECT_EQ(db.Text("SELECT version FROM isoguard.schema_version"),
            std::to_string(kPostgresSchemaVersion));
  EXPECT_EQ(db.Text("SELECT string_agg(table_name, ',' ORDER BY table_name) FROM "
                    "information_schema.tables WHERE table_schema = 'isoguard'"),
            "appends,audit,entries,log_head,patient_keys,patient_state,schema_version,streams");
  // Every table of patient data has the distribution key.
  EXPECT_EQ(db.Text("SELECT count(*) FROM information_schema.tables t WHERE table_schema = "
                    "'isoguard' AND table_name NOT IN ('schema_version', 'log_head') AND NOT "
                    "EXISTS (SELECT 1 FROM information_schema.columns c WHERE c.table_schema = "
                    "t.table_schema AND c.table_name = t.table_name AND c.column_name = "
                    "'patient_id')"),
            "0");
  EXPECT_EQ(db.Text("SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger t JOIN "
                    "pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = "
                    "c.relnamespace WHERE n.nspname = 'isoguard' AND NOT t.tgisinternal"),
            "audit_is_never_deleted,audit_is_never_truncated,audit_is_never_updated,"
            "entries_are_never_deleted,entries_are_never_truncated,entries_are_never_updated,"
            "keys_are_deleted_only_by_erasure,keys_are_never_truncated");
  EXPECT_EQ(db.Text("SELECT position FROM isoguard.log_head"), "1");
  EXPECT_EQ(db.Text("SELECT count(*) FROM isoguard.patient_state"), "1");
  EXPECT_EQ(db.Text("SHOW synchronous_commit"), "on");
}

TEST(PostgresEventStore, EntriesCannotBeUpdatedOrDeletedEvenBySql) {
  ISOGUARD_REQUIRE_PG();
  const std::string url = FreshPgDatabase();
  {
    auto store = OpenOrDie(url);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1"), WeightEntry(60)}, 0))));
    ASSERT_TRUE(Ok(store->Append(Request("p-2", {PatientEntry("p-2")}, 0))));
    ASSERT_TRUE(Ok(store->ErasePatient("p-2", TestActor())));
  }
  RawPg db(url);
  auto updated = db.Exec("UPDATE isoguard.entries SET type = 'lab' WHERE version = 2");
  ASSERT_FALSE(updated.ok());
  EXPECT_NE(updated.error().message.find("immutable"), std::string::npos);
  EXPECT_FALSE(db.Exec("DELETE FROM isoguard.entries").ok());
  EXPECT_FALSE(db.Exec("TRUNCATE isoguard.entries CASCADE").ok());
  auto key_deleted = db.Exec("DELETE FROM isoguard.patient_keys");
  ASSERT_FALSE(key_deleted.ok());
  EXPECT_NE(key_deleted.error().message.find("only by a recorded erasure"), std::string::npos);
  EXPECT_FALSE(db.Exec("DELETE FROM isoguard.audit").ok());
  EXPECT_FALSE(db.Exec("UPDATE isoguard.audit SET actor_id = 'someone else'").ok());
  EXPECT_EQ(db.Text("SELECT actor_id || ' ' || action FROM isoguard.audit"), "dr-test erasure");
  EXPECT_EQ(db.Text("SELECT count(*) FROM isoguard.entries"), "3");
  EXPECT_EQ(db.Text("SELECT count(*) FROM isoguard.patient_keys"), "1");
  // The erased patient's key and state are gone, and VACUUM has pruned the dead key row.
  EXPECT_EQ(db.Text("SELECT count(*) FROM isoguard.patient_state WHERE patient_id = 'p-2'"), "0");
}

// ---- Migrations

// Takes a store back to schema version 1, as that version made it: no audit table, no key
// rule, no projections. (Migrations never change, so what migration 1 creates is version 1.)
void DowngradeToVersionOne(const std::string& url) {
  RawPg db(url);
  ASSERT_TRUE(Ok(db.Exec(R"sql(
    DROP TABLE isoguard.patient_state;
    DROP TRIGGER keys_are_deleted_only_by_erasure ON isoguard.patient_keys;
    DROP TRIGGER keys_are_never_truncated ON isoguard.patient_keys;
    DROP FUNCTION isoguard.key_deleted_only_by_erasure();
    DROP TABLE isoguard.audit;
    UPDATE isoguard.schema_version SET version = 1;
  )sql")));
}

TEST(PostgresMigration, VersionOneStoreIsUpgradedOnOpenAndItsProjectionsFilled) {
  ISOGUARD_REQUIRE_PG();
  const std::string url = FreshPgDatabase();
  {
    auto store = OpenOrDie(url);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(Ok(store->Append(
        Request("p-1", {PatientEntry("p-1"), PrescriptionEntry("rx-1"), WeightEntry(61)}, 0))));
    ASSERT_TRUE(Ok(store->Append(Request("p-2", {PatientEntry("p-2")}, 0))));
  }
  DowngradeToVersionOne(url);
  {
    RawPg db(url);
    ASSERT_EQ(db.Text("SELECT to_regclass('isoguard.audit') IS NULL"), "t");
  }
  auto store = OpenOrDie(url);
  ASSERT_NE(store, nullptr);
  {
    RawPg db(url);
    EXPECT_EQ(db.Text("SELECT version FROM isoguard.schema_version"),
              std::to_string(kPostgresSchemaVersion));
    EXPECT_EQ(db.Text("SELECT count(*) FROM isoguard.patient_state"), "2");
  }
  auto state = store->ReadState("p-1");
  ASSERT_TRUE(Ok(state));
  EXPECT_EQ(state->version, 3);
  ASSERT_FALSE(state->record_json.empty());
  auto appended = store->Append(Request("p-1", {DispenseEntry("rx-1")}, 3));
  ASSERT_TRUE(Ok(appended));
  EXPECT_EQ(appended->last_position, 5);
  EXPECT_TRUE(Ok(store->ErasePatient("p-1", TestActor())));  // new in version 2
  auto report = store->Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  EXPECT_EQ(report->entries_checked, 5);
}

TEST(PostgresMigration, NewerSchemaIsRefusedAndLeftAlone) {
  ISOGUARD_REQUIRE_PG();
  const std::string url = FreshPgDatabase();
  {
    auto store = OpenOrDie(url);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
  }
  {
    RawPg db(url);
    ASSERT_TRUE(Ok(db.Exec("UPDATE isoguard.schema_version SET version = 99")));
  }
  EXPECT_TRUE(Fails(
      OpenEventStore(url), ErrorKind::kBadInput, "db",
      "has schema version 99, newer than this build's " + std::to_string(kPostgresSchemaVersion)));
  RawPg db(url);
  EXPECT_EQ(db.Text("SELECT version FROM isoguard.schema_version"), "99");
  EXPECT_EQ(db.Text("SELECT count(*) FROM isoguard.entries"), "1");
}

TEST(PostgresMigration, SomeoneElsesIsoguardSchemaIsRefusedButOtherSchemasAreFine) {
  ISOGUARD_REQUIRE_PG();
  const std::string other = FreshPgDatabase();
  {
    RawPg db(other);
    ASSERT_TRUE(Ok(db.Exec("CREATE SCHEMA isoguard; CREATE TABLE isoguard.invoices (id int)")));
  }
  EXPECT_TRUE(Fails(OpenEventStore(other), ErrorKind::kBadInput, "db", "not an isoguard"));
  // A database that holds other applications' tables (outside the isoguard schema) is fine.
  const std::string shared = FreshPgDatabase();
  {
    RawPg db(shared);
    ASSERT_TRUE(Ok(db.Exec("CREATE TABLE public.invoices (id int)")));
  }
  auto store = OpenOrDie(shared);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
}

// ---- Several stores on one database (several processes, in effect)

TEST(PostgresEventStore, TwoStoresOnOneDatabaseSeeEachOthersAppends) {
  ISOGUARD_REQUIRE_PG();
  const std::string url = FreshPgDatabase();
  auto a = OpenOrDie(url);
  ASSERT_NE(a, nullptr);
  auto b = OpenOrDie(url);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(Ok(a->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
  ASSERT_TRUE(Ok(a->Append(Request("p-1", {WeightEntry(60)}, 1))));
  ASSERT_TRUE(Ok(b->Append(Request("p-1", {WeightEntry(61)}, 2))));
  EXPECT_TRUE(Fails(a->Append(Request("p-1", {WeightEntry(62)}, 2)), ErrorKind::kConflict,
                    "expected_version", "at version 3"));
  ASSERT_TRUE(Ok(a->Append(Request("p-1", {WeightEntry(62)}, 3))));
  ASSERT_TRUE(Ok(b->Append(Request("p-1", {WeightEntry(63)}))));
  auto state = a->ReadState("p-1");
  ASSERT_TRUE(Ok(state));
  EXPECT_EQ(state->version, 5);
  ASSERT_TRUE(Ok(b->ErasePatient("p-1", TestActor())));
  EXPECT_TRUE(Fails(a->Append(Request("p-1", {WeightEntry(64)})), ErrorKind::kBadInput,
                    "patient_id", "was erased"));
  auto report = a->Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  EXPECT_EQ(report->entries_checked, 5);
}

// Positions follow commit order: a follower that reads the log's tail with ReadAll(after)
// while two stores write never skips an entry (which it would if a transaction holding a
// smaller position committed after one holding a larger).
TEST(PostgresEventStore, FollowerOfTheLogMissesNothingWhileTwoStoresWrite) {
  ISOGUARD_REQUIRE_PG();
  const std::string url = FreshPgDatabase();
  auto a = OpenOrDie(url);
  ASSERT_NE(a, nullptr);
  auto b = OpenOrDie(url);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  constexpr int kWritersPerStore = 4;
  constexpr int kAppendsEach = 30;
  std::atomic<int> errors{0};
  std::atomic<bool> writing{true};
  std::vector<std::thread> writers;
  for (int s = 0; s < 2; ++s) {
    for (int t = 0; t < kWritersPerStore; ++t) {
      writers.emplace_back([&, s, t] {
        EventStore& store = s == 0 ? *a : *b;
        const std::string p = "s" + std::to_string(s) + "-" + std::to_string(t);
        if (!store.Append(Request(p, {PatientEntry(p)}, 0)).ok()) errors.fetch_add(1);
        for (int i = 0; i < kAppendsEach; ++i) {
          if (!store.Append(Request(p, {WeightEntry(60), WeightEntry(61)})).ok()) {
            errors.fetch_add(1);
          }
        }
      });
    }
  }
  std::vector<int64_t> seen;
  auto follow = [&](EventStore& store) {
    for (;;) {
      auto page = store.ReadAll(seen.empty() ? 0 : seen.back(), 1000);
      if (!page.ok()) {
        ADD_FAILURE() << page.error().ToString();
        return;
      }
      if (page->empty()) return;
      for (const StoredEntry& e : *page) seen.push_back(e.position);
    }
  };
  std::thread follower([&] {
    auto reader = OpenOrDie(url);
    ASSERT_NE(reader, nullptr);
    while (writing.load()) follow(*reader);
    follow(*reader);
  });
  for (std::thread& w : writers) w.join();
  writing = false;
  follower.join();
  EXPECT_EQ(errors.load(), 0);
  const int64_t total = 2 * kWritersPerStore * (1 + 2 * kAppendsEach);
  ASSERT_EQ(static_cast<int64_t>(seen.size()), total);
  for (size_t i = 0; i < seen.size(); ++i) {
    ASSERT_EQ(seen[i], static_cast<int64_t>(i) + 1) << "positions are gap-free, in order";
  }
  auto report = a->Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
}

// An append of events without ids is written without looking the stream's ids up; when the
// id it assigns was taken earlier by a given id of the same form, the unique key refuses the
// write and the append is made again with the next form, its positions unchanged.
TEST(PostgresEventStore, AssignedIdTakenByAnEarlierGivenIdMovesToTheNextForm) {
  ISOGUARD_REQUIRE_PG();
  auto store = OpenOrDie(FreshPgDatabase());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
  ASSERT_TRUE(Ok(store->Append(Request(
      "p-1", {R"({"type": "weight", "id": "p-1-3", "at": "2026-09-01T10:00:00Z", "kg": 60})"},
      1))));
  ASSERT_TRUE(Ok(store->Append(Request("p-2", {PatientEntry("p-2")}, 0))));
  auto r = store->Append(Request("p-1", {WeightEntry(61), WeightEntry(62)}, 2));
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->event_ids, (std::vector<std::string>{"p-1-3.1", "p-1-4"}));
  EXPECT_EQ(r->last_position, 5);
  auto all = store->ReadAll(0, 100);
  ASSERT_TRUE(Ok(all));
  ASSERT_EQ(all->size(), 5u);
  for (size_t i = 0; i < all->size(); ++i)
    EXPECT_EQ((*all)[i].position, static_cast<int64_t>(i) + 1);
  auto state = store->ReadState("p-1");
  ASSERT_TRUE(Ok(state));
  EXPECT_EQ(state->version, 4);
  auto report = store->Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
}

// The same under load: eight writers whose every append takes an id that an earlier given id
// holds, so that writes fail and are made again in the middle of shared batches; the requests
// after a failed write are looked up and written again, and positions stay gap-free.
TEST(PostgresEventStore, WritesRetriedInsideSharedBatchesKeepPositionsGapFree) {
  ISOGUARD_REQUIRE_PG();
  auto store = OpenOrDie(FreshPgDatabase());
  ASSERT_NE(store, nullptr);
  constexpr int kWriters = 8;
  constexpr int kSeeded = 30;
  for (int t = 0; t < kWriters; ++t) {
    const std::string p = "q" + std::to_string(t);
    std::vector<std::string> seed = {PatientEntry(p)};
    // Versions 2..31 carry the ids the store would assign to versions 32..61.
    for (int v = 2; v < 2 + kSeeded; ++v) {
      seed.push_back(R"({"type": "weight", "id": ")" + p + "-" + std::to_string(v + kSeeded) +
                     R"(", "at": "2026-09-01T10:00:00Z", "kg": 60})");
    }
    ASSERT_TRUE(Ok(store->Append(Request(p, seed, 0))));
  }
  std::atomic<int> errors{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      const std::string p = "q" + std::to_string(t);
      for (int i = 0; i < kSeeded; ++i) {
        auto r = store->Append(Request(p, {WeightEntry(61)}, 1 + kSeeded + i));
        const std::string expected = p + "-" + std::to_string(2 + kSeeded + i) + ".1";
        if (!r.ok() || r->event_ids != std::vector<std::string>{expected}) errors.fetch_add(1);
      }
    });
  }
  for (std::thread& w : writers) w.join();
  EXPECT_EQ(errors.load(), 0);
  int64_t count = 0;
  for (int64_t after = 0;;) {
    auto page = store->ReadAll(after, 1000);
    ASSERT_TRUE(Ok(page));
    if (page->empty()) break;
    for (const StoredEntry& e : *page) {
      ASSERT_EQ(e.position, ++count) << "positions are gap-free";
    }
    after = page->back().position;
  }
  EXPECT_EQ(count, kWriters * (1 + 2 * kSeeded));
  for (int t = 0; t < kWriters; ++t) {
    auto state = store->ReadState("q" + std::to_string(t));
    ASSERT_TRUE(Ok(state));
    EXPECT_EQ(state->version, 1 + 2 * kSeeded);
  }
  auto report = store->Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
}

// Connections that die while idle (a server restart, a failover, an administrator's
// pg_terminate_backend) are made again by the next request, which then succeeds.
TEST(PostgresEventStore, ConnectionsKilledWhileIdleAreMadeAgain) {
  ISOGUARD_REQUIRE_PG();
  const std::string url = FreshPgDatabase();
  auto store = OpenOrDie(url);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
  ASSERT_TRUE(Ok(store->ReadStream("p-1")));
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    {
      RawPg db(url);
      EXPECT_NE(db.Text("SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 10000) FROM "
                        "pg_stat_activity WHERE datname = current_database() AND pid <> "
                        "pg_backend_pid()) AS killed"),
                "0");
    }
    ASSERT_TRUE(Ok(store->Append(Request("p-1", {WeightEntry(60)}, 1 + round))));
    auto stream = store->ReadStream("p-1");
    ASSERT_TRUE(Ok(stream));
    EXPECT_EQ(stream->version, 2 + round);
  }
}

// ---- Projections

TEST(PostgresProjection, DeletedOrGarbledStateRowsAreRepairedByRebuild) {
  ISOGUARD_REQUIRE_PG();
  const std::string url = FreshPgDatabase();
  auto store = OpenOrDie(url);
  ASSERT_NE(store, nullptr);
  for (const std::string p : {"p-1", "p-2", "p-3", "p-4"}) {
    ASSERT_TRUE(Ok(store->Append(Request(p, {PatientEntry(p), PrescriptionEntry("rx-1")}, 0))));
    ASSERT_TRUE(Ok(store->Append(Request(p, {DispenseEntry("rx-1"), WeightEntry(60)}, 2))));
  }
  std::map<std::string, PatientState> before;
  for (const std::string p : {"p-1", "p-2", "p-3"}) {
    auto state = store->ReadState(p);
    ASSERT_TRUE(Ok(state));
    EXPECT_EQ(state->version, 4);
    before[p] = *state;
  }
  ASSERT_TRUE(Ok(store->ErasePatient("p-4", TestActor())));
  {
    RawPg db(url);
    ASSERT_TRUE(Ok(db.Exec("DELETE FROM isoguard.patient_state WHERE patient_id = 'p-1'")));
    ASSERT_TRUE(
        Ok(db.Exec("UPDATE isoguard.patient_state SET state = set_byte(state, 30, "
                   "get_byte(state, 30) # 1) WHERE patient_id = 'p-2'")));
    // A state row left for an erased patient: the rebuild removes it.
    ASSERT_TRUE(
        Ok(db.Exec("INSERT INTO isoguard.patient_state SELECT 'p-4', version, position, "
                   "state FROM isoguard.patient_state WHERE patient_id = 'p-3'")));
  }
  auto missing = store->ReadState("p-1");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind, ErrorKind::kInternal);
  EXPECT_NE(missing.error().message.find("patient p-1"), std::string::npos);
  auto garbled = store->ReadState("p-2");
  ASSERT_FALSE(garbled.ok());
  EXPECT_NE(garbled.error().message.find("patient p-2"), std::string::npos);

  auto report = store->RebuildProjections();
  ASSERT_TRUE(Ok(report));
  EXPECT_EQ(report->patients, 3);
  EXPECT_EQ(report->entries, 12);
  EXPECT_EQ(report->repaired, 2);
  EXPECT_EQ(report->removed, 1);
  for (const std::string p : {"p-1", "p-2", "p-3"}) {
    auto state = store->ReadState(p);
    ASSERT_TRUE(Ok(state)) << p;
    EXPECT_EQ(state->version, before[p].version);
    EXPECT_EQ(state->position, before[p].position);
    EXPECT_EQ(state->record_json, before[p].record_json);
  }
  auto erased = store->ReadState("p-4");
  ASSERT_TRUE(Ok(erased));
  EXPECT_TRUE(erased->erased);
  EXPECT_TRUE(erased->record_json.empty());
  // A second rebuild finds nothing to do.
  report = store->RebuildProjections();
  ASSERT_TRUE(Ok(report));
  EXPECT_EQ(report->repaired, 0);
  EXPECT_EQ(report->removed, 0);
}

// A rebuild while four writers append: each patient is rebuilt in a transaction that locks
// its stream row, as every append does first, so the rows it writes are never behind the log
// (and writers and rebuild do not deadlock: both lock the stream row before the state row).
TEST(PostgresProjection, RebuildWhileWritersAppendLeavesEveryStateAtItsHead) {
  ISOGUARD_REQUIRE_PG();
  const std::string url = FreshPgDatabase();
  auto store = OpenOrDie(url);
  ASSERT_NE(store, nullptr);
  constexpr int kWriters = 4;
  for (int t = 0; t < kWriters; ++t) {
    const std::string p = "r-" + std::to_string(t);
    ASSERT_TRUE(Ok(store->Append(Request(p, {PatientEntry(p)}, 0))));
  }
  {
    RawPg db(url);  // every state row lost: the rebuild has work to do under load
    ASSERT_TRUE(Ok(db.Exec("DELETE FROM isoguard.patient_state")));
  }
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      const std::string p = "r-" + std::to_string(t);
      while (!stop.load()) {
        if (!store->Append(Request(p, {WeightEntry(60)})).ok()) errors.fetch_add(1);
      }
    });
  }
  int64_t repaired = 0;
  for (int i = 0; i < 5; ++i) {
    auto report = store->RebuildProjections();
    ASSERT_TRUE(Ok(report));
    repaired += report->repaired;
  }
  stop = true;
  for (std::thread& w : writers) w.join();
  EXPECT_EQ(errors.load(), 0);
  RecordProperty("repaired", static_cast<int>(repaired));
  for (int t = 0; t < kWriters; ++t) {
    const std::string p = "r-" + std::to_string(t);
    auto stream = store->ReadStream(p);
    ASSERT_TRUE(Ok(stream));
    auto state = store->ReadState(p);
    ASSERT_TRUE(Ok(state)) << p;
    EXPECT_EQ(state->version, stream->version) << p;
  }
  auto again = store->RebuildProjections();
  ASSERT_TRUE(Ok(again));
  EXPECT_EQ(again->repaired, 0);
}

TEST(PostgresMigration, StoresOpenedAtOnceOnANewDatabaseMigrateItOnce) {
  ISOGUARD_REQUIRE_PG();
  const std::string url = FreshPgDatabase();
  std::vector<std::unique_ptr<EventStore>> stores(4);
  std::vector<std::thread> openers;
  for (size_t i = 0; i < stores.size(); ++i) {
    openers.emplace_back([&, i] { stores[i] = OpenOrDie(url); });
  }
  for (std::thread& t : openers) t.join();
  for (size_t i = 0; i < stores.size(); ++i) {
    ASSERT_NE(stores[i], nullptr);
    const std::string p = "p-" + std::to_string(i);
    EXPECT_TRUE(Ok(stores[i]->Append(Request(p, {PatientEntry(p)}, 0))));
  }
  RawPg db(url);
  EXPECT_EQ(db.Text("SELECT count(*) FROM isoguard.entries"), "4");
}

TEST(PostgresProjection, AppendAfterALostStateRowFoldsTheWholeStream) {
  ISOGUARD_REQUIRE_PG();
  const std::string url = FreshPgDatabase();
  auto store = OpenOrDie(url);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1"), WeightEntry(60)}, 0))));
  {
    RawPg db(url);
    ASSERT_TRUE(Ok(db.Exec("DELETE FROM isoguard.patient_state")));
  }
  ASSERT_TRUE(Ok(store->Append(Request("p-1", {WeightEntry(61)}, 2))));
  auto state = store->ReadState("p-1");
  ASSERT_TRUE(Ok(state));
  EXPECT_EQ(state->version, 3);
  EXPECT_TRUE(SameJson(state->record_json,
                       R"({"patient": {"id": "p-1", "birth_date": "2000-05-14",
                           "jurisdiction": "US", "category": "can_get_pregnant"},
                           "events": [)" +
                           WithId(WeightEntry(60), "p-1-2") + "," +
                           WithId(WeightEntry(61), "p-1-3") + "]}"));
}

// ---- Restore and URLs

TEST(PostgresEventStore, RestoreRefusesADatabaseThatHoldsAStoreAndLoadsAnEmptyOne) {
  ISOGUARD_REQUIRE_PG();
  TempDir dir;
  const std::string url = FreshPgDatabase();
  auto store = OpenOrDie(url);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1"), WeightEntry(60)}, 0))));
  const std::string dump = dir.File("backup.dump");
  ASSERT_TRUE(Ok(store->Backup(dump)));
  EXPECT_TRUE(Fails(RestoreEventStore(dump, url), ErrorKind::kBadInput, "db", "never overwrites"));
  const std::string target = FreshPgDatabase();
  auto restored = RestoreEventStore(dump, target);
  ASSERT_TRUE(Ok(restored));
  EXPECT_EQ(restored->entries_checked, 2);
  auto copy = OpenOrDie(target);
  ASSERT_NE(copy, nullptr);
  auto state = copy->ReadState("p-1");
  ASSERT_TRUE(Ok(state));
  EXPECT_EQ(state->version, 2);
  EXPECT_TRUE(Fails(RestoreEventStore(dir.File("no-such.dump"), FreshPgDatabase()),
                    ErrorKind::kBadInput, "backup " + dir.File("no-such.dump")));
}

TEST(PostgresEventStore, UrlFormsAndConnectionErrorsWithoutThePassword) {
  ISOGUARD_REQUIRE_PG();
  const std::string url = FreshPgDatabase();
  ASSERT_TRUE(url.starts_with("postgresql://"));
  {
    auto store = OpenOrDie(url + "?target_session_attrs=read-write&application_name=t");
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
  }
  auto short_form = OpenOrDie("postgres://" + url.substr(std::string("postgresql://").size()));
  ASSERT_NE(short_form, nullptr);
  auto stream = short_form->ReadStream("p-1");
  ASSERT_TRUE(Ok(stream));
  EXPECT_EQ(stream->version, 1);

  // Port 1 on loopback: nothing listens; the message is libpq's, the password is not in it.
  const std::string secret = "s3cret-Pa55";
  auto refused = OpenEventStore("postgresql://someone:" + secret + "@127.0.0.1:1/db");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, ErrorKind::kInternal);
  EXPECT_NE(refused.error().message.find("cannot connect"), std::string::npos)
      << refused.error().message;
  EXPECT_EQ(refused.error().message.find(secret), std::string::npos) << refused.error().message;
  auto with_param = OpenEventStore("postgresql://127.0.0.1:1/db?password=" + secret);
  ASSERT_FALSE(with_param.ok());
  EXPECT_EQ(with_param.error().message.find(secret), std::string::npos);
  EXPECT_TRUE(Fails(OpenEventStore("postgresql://127.0.0.1:1/db?nonsense=1"), ErrorKind::kBadInput,
                    "db", "libpq"));
  EXPECT_EQ(RedactedPostgresUrl("postgresql://u:" + secret + "@h/db"), "postgresql://u:***@h/db");
  EXPECT_EQ(RedactedPostgresUrl("postgresql://h/db?password=" + secret),
            "postgresql://h/db?password=***");
}

// ---- Crash safety

constexpr const char* kCrashChildUrl = "ISOGUARD_PG_CRASH_CHILD_URL";
constexpr const char* kCrashChildFd = "ISOGUARD_PG_CRASH_CHILD_FD";

// The child, run as its own process by the crash test (this binary, executed again with this
// test as its filter): four threads append to their own streams, retrying an append that
// failed with the same idempotency key until it succeeds (the server comes back), and report
// each acknowledged append on the pipe as "patient last_version", until killed. The key names
// the number of entries of its append, so that the parent can see every append whole.
TEST(PostgresCrashSafety, ChildAppendsUntilKilled) {
  const char* url = std::getenv(kCrashChildUrl);
  const char* fd_text = std::getenv(kCrashChildFd);
  if (url == nullptr || fd_text == nullptr) {
    GTEST_SKIP() << "runs only as the child of PostgresCrashSafety.AcknowledgedAppendsSurvive...";
  }
  const int fd = std::atoi(fd_text);
  // The server may be down (or recovering) at any moment, even while the store is opened.
  auto opened = OpenEventStore(url);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!opened.ok() &&
         (opened.error().kind == ErrorKind::kInternal ||
          opened.error().kind == ErrorKind::kUnavailable) &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    opened = OpenEventStore(url);
  }
  if (!opened.ok()) {
    const std::string line = "error " + opened.error().ToString() + "\n";
    (void)!::write(fd, line.data(), line.size());
    ::_exit(1);
  }
  EventStore& store = **opened;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&store, fd, t] {
      // A record holds at most 10,000 events: a long run moves on to a new stream of its own
      // before its stream is full.
      constexpr int64_t kStreamRoom = 9000;
      int generation = 0;
      std::string patient = "crash-" + std::to_string(t) + "-0";
      std::mt19937 rng(static_cast<unsigned>(::getpid()) * 31 + static_cast<unsigned>(t));
      int64_t version = -1;
      for (int64_t n = 0;; ++n) {
        if (version > kStreamRoom) {
          patient = "crash-" + std::to_string(t) + "-" + std::to_string(++generation);
          version = -1;
        }
        while (version < 0) {
          auto stream = store.ReadStream(patient);
          if (stream.ok()) {
            version = stream->version;
          } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the server is down
          }
        }
        std::vector<std::string> entries;
        if (version == 0) entries.push_back(PatientEntry(patient));
        const int extra = 1 + static_cast<int>(rng() % 5);
        for (int i = 0; i < extra; ++i) {
          entries.push_back(WeightEntry(static_cast<double>(40 + rng() % 60)));
        }
        const std::string key = patient + "-" + std::to_string(::getpid()) + "-" +
                                std::to_string(n) + "-n" + std::to_string(entries.size());
        for (;;) {
          auto r = store.Append(Request(patient, entries, version, key));
          if (r.ok()) {
            version = r->last_version;
            break;
          }
          // The server down is kUnavailable; a commit whose outcome is unknown kInternal.
          if (r.error().kind != ErrorKind::kInternal &&
              r.error().kind != ErrorKind::kUnavailable) {
            const std::string line = "error " + r.error().ToString() + "\n";
            (void)!::write(fd, line.data(), line.size());
            ::_exit(3);
          }
          // The server is down or restarting: wait for it, then retry with the same key.
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        const std::string line = patient + " " + std::to_string(version) + "\n";
        if (::write(fd, line.data(), line.size()) < 0) ::_exit(4);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ::_exit(0);
}

TEST(PostgresCrashSafety, AcknowledgedAppendsSurviveImmediateShutdownAtRandomMoments) {
  ISOGUARD_REQUIRE_PG();
  // A cluster of its own, beside the shared one (whose URL file must be readable: a missing
  // one fails here rather than starting a cluster somewhere unexpected): stopping the shared
  // one would fail the tests running beside.
  ASSERT_FALSE(PgAdminUrl().empty());
  const std::string cluster = PgClusterDir() + "-crash";
  ASSERT_EQ(RunPgTestCluster({"start", cluster}), 0);
  struct StopCluster {
    std::string dir;
    ~StopCluster() { (void)RunPgTestCluster({"stop", dir}); }
  } stop_cluster{cluster};
  std::string url;
  {
    std::ifstream in(cluster + "/url");
    std::getline(in, url);
  }
  ASSERT_FALSE(url.empty());

  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::fflush(nullptr);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(fds[0]);
    ::setenv(kCrashChildUrl, url.c_str(), 1);
    ::setenv(kCrashChildFd, std::to_string(fds[1]).c_str(), 1);
    const char* argv[] = {"/proc/self/exe",
                          "--gtest_filter=PostgresCrashSafety.ChildAppendsUntilKilled", nullptr};
    ::execv(argv[0], const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(fds[1]);
  struct KillChild {
    pid_t pid;
    ~KillChild() {
      ::kill(pid, SIGKILL);
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
  } kill_child{child};

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
  std::map<std::string, int64_t> acknowledged;  // patient -> highest acknowledged version
  int64_t total_lines = 0;
  size_t parsed = 0;
  auto take_lines = [&] {
    const size_t end = received.rfind('\n');
    if (end == std::string::npos || end + 1 <= parsed) return;
    std::istringstream lines(received.substr(parsed, end + 1 - parsed));
    parsed = end + 1;
    std::string patient;
    std::string version;
    while (lines >> patient >> version) {
      ASSERT_TRUE(patient.starts_with("crash-")) << patient << " " << version;
      acknowledged[patient] = std::max<int64_t>(acknowledged[patient], std::stoll(version));
      ++total_lines;
    }
  };

  // The rounds begin once the child is appending (a sanitizer build starts slowly).
  const auto started_by = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (received.find('\n') == std::string::npos &&
         std::chrono::steady_clock::now() < started_by) {
    drain(100);
  }
  ASSERT_NE(received.find('\n'), std::string::npos) << "the child did not start appending";
  ASSERT_EQ(received.find("error"), std::string::npos) << received;

  std::mt19937 rng(20261126);
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    // Stop the server at a random moment of the child's appending.
    const auto crash_at =
        std::chrono::steady_clock::now() +
        std::chrono::milliseconds(std::uniform_int_distribution<int>(30, 300)(rng));
    while (std::chrono::steady_clock::now() < crash_at) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          crash_at - std::chrono::steady_clock::now());
      drain(static_cast<int>(std::max<int64_t>(1, left.count())));
    }
    ASSERT_EQ(RunPgTestCluster({"crash", cluster}), 0);
    while (drain(0)) {
    }
    ASSERT_EQ(RunPgTestCluster({"restart", cluster}), 0);
    while (drain(0)) {
    }
    take_lines();
    ASSERT_EQ(received.find("error"), std::string::npos) << received.substr(received.find("error"));

    // Every acknowledged append is there, every append is whole, and each state row is at
    // its stream's head: in SQL, one snapshot, every round.
    {
      RawPg db(url);
      for (const auto& [p, v] : acknowledged) {
        const std::string stored =
            db.Text("SELECT coalesce(max(version), 0) FROM isoguard.entries WHERE patient_id = '" +
                    p + "'");
        EXPECT_GE(std::stoll(stored.empty() ? "0" : stored), v)
            << p << ": an acknowledged append is missing";
      }
      EXPECT_EQ(db.Text("SELECT count(*) FROM (SELECT idempotency_key, count(*) AS n FROM "
                        "isoguard.entries GROUP BY idempotency_key) g WHERE "
                        "regexp_replace(idempotency_key, '^.*-n', '')::bigint <> g.n"),
                "0")
          << "an append is not whole";
      EXPECT_EQ(db.Text("SELECT count(*) FROM isoguard.streams s LEFT JOIN isoguard.patient_state "
                        "st USING (patient_id) WHERE st.version IS DISTINCT FROM s.version OR "
                        "st.position IS DISTINCT FROM s.position OR s.version <> (SELECT "
                        "max(version) FROM isoguard.entries e WHERE e.patient_id = s.patient_id)"),
                "0");
    }
    // Through the store, which decrypts and checks every entry (slower, so every fifth round
    // and the last): the streams read, the states open, the log verifies.
    if (round % 5 != 4) continue;
    auto store = OpenOrDie(url);
    ASSERT_NE(store, nullptr);
    for (const auto& [p, v] : acknowledged) {
      auto stream = store->ReadStream(p);
      ASSERT_TRUE(Ok(stream)) << p;
      EXPECT_GE(stream->version, v) << p << ": an acknowledged append is missing";
      auto state = store->ReadState(p);
      ASSERT_TRUE(Ok(state)) << p;
      EXPECT_GE(state->version, stream->version) << p;  // the child goes on appending
    }
    auto report = store->Verify();
    ASSERT_TRUE(Ok(report));
    EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  }
  ::close(fds[0]);
  RecordProperty("acknowledged_appends", static_cast<int>(total_lines));
  EXPECT_GT(total_lines, 20);
}

}  // namespace
}  // namespace isoguard::store::testing
