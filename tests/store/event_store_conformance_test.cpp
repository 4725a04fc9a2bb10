// The event store's conformance suite: what every backend must do, written against the
// EventStore interface alone (event_store.h) and run once per backend. Round trips,
// optimistic concurrency, idempotency, id assignment, rejected entries, the hash chain and
// its verification, the global order, erasure, backup under load, and concurrent writers.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "core/time.h"
#include "domain/record_parser.h"
#include "rules/evaluate.h"
#include "rules/rulebook_loader.h"
#include "sqlite_backend.h"
#include "store_test_support.h"

namespace isoguard::store::testing {
namespace {

using ::testing::Values;

// ---- Round trip

TEST_P(EventStoreConformance, AppendThenReadGivesBackTheSameJson) {
  const std::vector<std::string> entries = {
      PatientEntry("p-1", R"(, "time_zone": "America/Chicago", "target_mg_per_kg": [100, 140])"),
      PrescriptionEntry("rx-1"),
      DispenseEntry("rx-1"),
      // Unknown fields are kept: the store keeps what it was given.
      R"({"type": "medication", "at": "2026-09-03T08:00:00+02:00", "name": "St. John’s Wort",
          "action": "start", "note": {"free": ["text", 1, null]}})",
      WeightEntry(58.25),
      R"({"type": "lab", "id": "lab-7", "at": "2026-09-04T08:00:00Z", "test": "TG",
          "value": 2.1, "unit": "mmol/L"})",
  };
  const auto before = std::chrono::system_clock::now() - std::chrono::seconds(1);
  auto appended = store().Append(Request("p-1", entries, 0, "first-visit"));
  ASSERT_TRUE(Ok(appended));
  EXPECT_EQ(appended->first_version, 1);
  EXPECT_EQ(appended->last_version, 6);
  EXPECT_FALSE(appended->replayed);
  const std::vector<std::string> ids = {"p-1-1", "rx-1", "p-1-3", "p-1-4", "p-1-5", "lab-7"};
  EXPECT_EQ(appended->event_ids, ids);

  Reopen();  // what was acknowledged is on disk, not only in the writer's memory
  auto stream = store().ReadStream("p-1");
  ASSERT_TRUE(Ok(stream));
  EXPECT_EQ(stream->patient_id, "p-1");
  EXPECT_EQ(stream->version, 6);
  ASSERT_EQ(stream->entries.size(), 6u);
  const std::vector<std::string> types = {"patient",    "prescription", "dispense",
                                          "medication", "weight",       "lab"};
  for (size_t i = 0; i < 6; ++i) {
    const StoredEntry& e = stream->entries[i];
    SCOPED_TRACE(i);
    EXPECT_EQ(e.version, static_cast<int64_t>(i) + 1);
    EXPECT_EQ(e.patient_id, "p-1");
    EXPECT_EQ(e.event_id, ids[i]);
    EXPECT_EQ(e.type, types[i]);
    EXPECT_FALSE(e.erased);
    EXPECT_EQ(e.actor.id, "dr-test");
    EXPECT_EQ(e.actor.role, "prescriber");
    EXPECT_EQ(e.actor.source, "test");
    EXPECT_EQ(e.idempotency_key, "first-visit");
    EXPECT_GE(e.recorded_at, before);
    EXPECT_LE(e.recorded_at, std::chrono::system_clock::now());
    // Events the store gave an id carry it in their JSON; the rest is as given.
    const bool assigned = i == 2 || i == 3 || i == 4;
    EXPECT_TRUE(SameJson(e.json, assigned ? WithId(entries[i], ids[i]) : entries[i]));
    if (i > 0) {
      EXPECT_GT(e.position, stream->entries[i - 1].position);
    }
  }
  EXPECT_EQ(stream->entries.back().position, appended->last_position);
}

TEST_P(EventStoreConformance, UnknownPatientIsAnEmptyStream) {
  auto stream = store().ReadStream("nobody");
  ASSERT_TRUE(Ok(stream));
  EXPECT_EQ(stream->version, 0);
  EXPECT_TRUE(stream->entries.empty());
}

TEST_P(EventStoreConformance, HeaderUpdatesAndLaterAppendsContinueTheStream) {
  Create("p-1");
  auto r = store().Append(Request("p-1", {WeightEntry(60)}, 1));
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->first_version, 2);
  r = store().Append(Request("p-1", {R"({"type": "patient", "id": "p-1", "birth_date": "2000-05-14",
                  "jurisdiction": "US", "category": "cannot_get_pregnant"})"},
                             2));
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->first_version, 3);
  auto stream = store().ReadStream("p-1");
  ASSERT_TRUE(Ok(stream));
  EXPECT_EQ(stream->version, 3);
  EXPECT_EQ(stream->entries[2].type, "patient");
}

// ---- Optimistic concurrency

TEST_P(EventStoreConformance, StaleExpectedVersionIsAConflictAndWritesNothing) {
  Create("p-1");
  EXPECT_TRUE(Fails(store().Append(Request("p-1", {PatientEntry("p-1")}, 0)), ErrorKind::kConflict,
                    "expected_version", "at version 1"));
  EXPECT_TRUE(Fails(store().Append(Request("p-1", {WeightEntry(60)}, 5)), ErrorKind::kConflict,
                    "expected_version", "expected version 5"));
  EXPECT_EQ(VersionOf("p-1"), 1);
  EXPECT_TRUE(Ok(store().Append(Request("p-1", {WeightEntry(60)}, 1))));
  EXPECT_TRUE(Fails(store().Append(Request("p-1", {WeightEntry(61)}, 1)), ErrorKind::kConflict,
                    "expected_version"));
  // No expected version: appended wherever the stream is.
  EXPECT_TRUE(Ok(store().Append(Request("p-1", {WeightEntry(62)}))));
  EXPECT_EQ(VersionOf("p-1"), 3);
}

// ---- Idempotency

TEST_P(EventStoreConformance, SameIdempotencyKeyReturnsTheFirstResultAndWritesNothing) {
  Create("p-1");
  auto first = store().Append(Request("p-1", {WeightEntry(60), WeightEntry(61)}, 1, "k-1"));
  ASSERT_TRUE(Ok(first));
  EXPECT_FALSE(first->replayed);
  // The same key again: even with other entries or a stale expected version, the first result.
  auto again = store().Append(Request("p-1", {WeightEntry(99)}, 1, "k-1"));
  ASSERT_TRUE(Ok(again));
  EXPECT_TRUE(again->replayed);
  EXPECT_EQ(again->first_version, first->first_version);
  EXPECT_EQ(again->last_version, first->last_version);
  EXPECT_EQ(again->last_position, first->last_position);
  EXPECT_EQ(again->event_ids, first->event_ids);
  EXPECT_EQ(VersionOf("p-1"), 3);
  // After a restart too.
  Reopen();
  auto later = store().Append(Request("p-1", {WeightEntry(99)}, std::nullopt, "k-1"));
  ASSERT_TRUE(Ok(later));
  EXPECT_TRUE(later->replayed);
  EXPECT_EQ(later->event_ids, first->event_ids);
  EXPECT_EQ(VersionOf("p-1"), 3);
  // Keys belong to a patient: another patient's "k-1" is a new append.
  auto other = store().Append(Request("p-2", {PatientEntry("p-2")}, 0, "k-1"));
  ASSERT_TRUE(Ok(other));
  EXPECT_FALSE(other->replayed);
}

TEST_P(EventStoreConformance, RejectedAppendDoesNotUseUpItsIdempotencyKey) {
  Create("p-1");
  EXPECT_FALSE(store().Append(Request("p-1", {WeightEntry(60)}, 7, "k-1")).ok());
  auto retry = store().Append(Request("p-1", {WeightEntry(60)}, 1, "k-1"));
  ASSERT_TRUE(Ok(retry));
  EXPECT_FALSE(retry->replayed);
  EXPECT_EQ(retry->first_version, 2);
}

// ---- Event ids

TEST_P(EventStoreConformance, EventsWithoutIdGetOneAndGivenIdsAreKept) {
  Create("p-1");
  // An explicit id that happens to be the form the store would assign to version 3.
  auto r = store().Append(
      Request("p-1",
              {R"({"type": "weight", "id": "p-1-3", "at": "2026-09-01T10:00:00Z", "kg": 60})",
               R"({"type": "weight", "id": null, "at": "2026-09-01T10:00:00Z", "kg": 61})"},
              1));
  ASSERT_TRUE(Ok(r));
  ASSERT_EQ(r->event_ids.size(), 2u);
  EXPECT_EQ(r->event_ids[0], "p-1-3");
  EXPECT_EQ(r->event_ids[1], "p-1-3.1");  // version 3's plain id was taken
  auto stream = store().ReadStream("p-1");
  ASSERT_TRUE(Ok(stream));
  EXPECT_EQ(stream->entries[0].event_id, "p-1-1");  // the patient entry's
  EXPECT_TRUE(SameJson(stream->entries[2].json,
                       R"({"type": "weight", "id": "p-1-3.1", "at": "2026-09-01T10:00:00Z",
                           "kg": 61})"));
}

// ---- Rejected entries: nothing written, the message names the entry and field

TEST_P(EventStoreConformance, RejectedEntryWritesNothingAndNamesIndexAndField) {
  Create("p-1");
  auto before = store().ReadAll(0, 1000);
  ASSERT_TRUE(Ok(before));
  auto r = store().Append(
      Request("p-1", {WeightEntry(60), PrescriptionEntry("rx-1"),
                      R"({"type": "weight", "at": "2026-09-01T10:00:00Z", "kg": 0})"}));
  EXPECT_TRUE(Fails(r, ErrorKind::kBadInput, "entries[2].kg", "must be in (0, 500] kg"));
  EXPECT_EQ(VersionOf("p-1"), 1);
  auto after = store().ReadAll(0, 1000);
  ASSERT_TRUE(Ok(after));
  EXPECT_EQ(after->size(), before->size());
}

TEST_P(EventStoreConformance, EveryKindOfBadEntryIsRejected) {
  Create("p-1");
  Create("p-2");
  ASSERT_TRUE(Ok(store().Append(Request("p-1", {PrescriptionEntry("rx-1")}, 1))));
  struct Case {
    std::string patient;
    std::vector<std::string> entries;
    std::string field;
    std::string words;
  };
  const std::vector<Case> cases = {
      {"p-1", {WeightEntry(60), "{not json"}, "entries[1]", "not valid JSON"},
      {"p-1", {"[1, 2]"}, "entries[0]", "must be a JSON object, got an array"},
      {"p-1", {R"({"at": "2026-09-01T10:00:00Z"})"}, "entries[0].type", "missing"},
      {"p-1", {R"({"type": 7})"}, "entries[0].type", "must be a string"},
      {"p-1",
       {R"({"type": "bogus", "at": "2026-09-01T10:00:00Z"})"},
       "entries[0].type",
       "unknown event type"},
      {"p-1",
       {R"({"type": "weight", "at": "2026-09-01T10:00:00", "kg": 60})"},
       "entries[0].at",
       "offset"},
      {"p-1",
       {R"({"type": "patient", "id": "p-1", "birth_date": "1899-12-31",
                   "jurisdiction": "US", "category": "can_get_pregnant"})"},
       "entries[0].birth_date",
       ""},
      {"p-1", {PatientEntry("p-9")}, "entries[0].id", "names patient 'p-9'"},
      {"p-1",
       {PrescriptionEntry("rx-2"), PrescriptionEntry("rx-2")},
       "entries[1].id",
       "duplicate id 'rx-2' (also entries[0])"},
      {"p-1", {PrescriptionEntry("rx-1")}, "entries[0].id", "already used"},
      {"p-1",
       {WeightEntry(60), DispenseEntry("rx-9")},
       "entries[1].prescription",
       "not in the patient's stream"},
      // A prescription of another patient does not count.
      {"p-2", {DispenseEntry("rx-1")}, "entries[0].prescription", "not in the patient's stream"},
      {"p-3", {WeightEntry(60)}, "entries[0].type", "begins with the patient entry"},
      {"p-1", {}, "entries", "at least one"},
      {"", {WeightEntry(60)}, "patient_id", "empty"},
      {std::string(kMaxPatientIdBytes + 1, 'p'), {WeightEntry(60)}, "patient_id", "at most 256"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field + " " + c.words);
    EXPECT_TRUE(Fails(store().Append(Request(c.patient, c.entries)), ErrorKind::kBadInput, c.field,
                      c.words));
  }
  // A dispense of a prescription given in the same append, before or after it, is fine.
  EXPECT_TRUE(
      Ok(store().Append(Request("p-2", {DispenseEntry("rx-5"), PrescriptionEntry("rx-5")}, 1))));
  // The actor is required.
  AppendRequest no_actor = Request("p-1", {WeightEntry(60)});
  no_actor.actor = Actor{};
  EXPECT_TRUE(Fails(store().Append(no_actor), ErrorKind::kBadInput, "actor.id"));
  EXPECT_EQ(VersionOf("p-1"), 2);
  EXPECT_EQ(VersionOf("p-2"), 3);
  EXPECT_EQ(VersionOf("p-3"), 0);
}

TEST_P(EventStoreConformance, LimitsHoldAtTheLimitAndFailOnePast) {
  // A whole record in one append: its patient entry and 10,000 events (10,001 entries):
  // accepted; one entry more: rejected.
  std::vector<std::string> many(kMaxEntriesPerAppend - 1, WeightEntry(60));
  many.insert(many.begin(), PatientEntry("p-1"));
  many.push_back(WeightEntry(60));
  EXPECT_TRUE(Fails(store().Append(Request("p-1", many)), ErrorKind::kBadInput, "entries",
                    "at most 10001"));
  many.pop_back();
  auto at_limit = store().Append(Request("p-1", many, 0));
  ASSERT_TRUE(Ok(at_limit));
  EXPECT_EQ(at_limit->last_version, static_cast<int64_t>(kMaxEntriesPerAppend));
  // The record is full: one more event would make it unreadable as a record, so it is refused
  // (a new patient entry, which adds no event, still goes in).
  EXPECT_TRUE(Fails(store().Append(Request("p-1", {WeightEntry(61)})), ErrorKind::kBadInput,
                    "entries", "holds 10000 events"));
  EXPECT_TRUE(Ok(store().Append(Request("p-1", {PatientEntry("p-1")}))));
  auto state = store().ReadState("p-1");
  ASSERT_TRUE(Ok(state));
  EXPECT_EQ(state->version, 1 + static_cast<int64_t>(kMaxEntriesPerAppend));
  // An entry of 1 MiB: accepted; one byte more: rejected (unknown fields pad it).
  Create("p-2");
  const std::string head = R"({"type": "weight", "at": "2026-09-01T10:00:00Z", "kg": 60, "pad": ")";
  std::string big = head + std::string(kMaxEntryBytes - head.size() - 2, 'x') + "\"}";
  ASSERT_EQ(big.size(), kMaxEntryBytes);
  EXPECT_TRUE(Ok(store().Append(Request("p-2", {big}))));
  big.insert(head.size(), "x");
  EXPECT_TRUE(Fails(store().Append(Request("p-2", {big})), ErrorKind::kBadInput, "entries[0]",
                    "at most 1048576"));
  // Ten entries of 1 MiB go past the append's 10 MiB.
  big.erase(head.size(), 1);
  std::vector<std::string> heavy(11, big);
  EXPECT_TRUE(Fails(store().Append(Request("p-2", heavy)), ErrorKind::kBadInput, "entries",
                    "at most 10485760"));
  EXPECT_EQ(VersionOf("p-2"), 2);
}

// ---- The hash chain and Verify

TEST_P(EventStoreConformance, EachEntryChainsToThePreviousOneOfItsStream) {
  Create("p-1");
  Create("p-2");
  ASSERT_TRUE(Ok(store().Append(Request("p-1", {WeightEntry(60), WeightEntry(61)}))));
  ASSERT_TRUE(Ok(store().Append(Request("p-2", {WeightEntry(70)}))));
  ASSERT_TRUE(Ok(store().Append(Request("p-1", {WeightEntry(62)}))));
  auto stream = store().ReadStream("p-1");
  ASSERT_TRUE(Ok(stream));
  ASSERT_EQ(stream->entries.size(), 4u);
  EXPECT_EQ(stream->entries[0].prev_hash, Hash{});
  for (size_t i = 1; i < stream->entries.size(); ++i) {
    EXPECT_EQ(stream->entries[i].prev_hash, stream->entries[i - 1].hash);
    EXPECT_NE(stream->entries[i].hash, stream->entries[i - 1].hash);
  }
  auto report = store().Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  EXPECT_EQ(report->streams_checked, 2);
  EXPECT_EQ(report->entries_checked, 6);
}

TEST_P(EventStoreConformance, VerifyNamesAnEntryWhosePayloadWasChanged) {
  Create("p-1");
  Create("p-2");
  ASSERT_TRUE(Ok(store().Append(Request("p-2", {WeightEntry(60), WeightEntry(61)}))));
  ASSERT_TRUE(Ok(store().Append(Request("p-1", {WeightEntry(62)}))));
  store_.reset();
  ASSERT_TRUE(Ok(GetParam().corrupt(url(), "p-2", 2, "payload")));
  Reopen();
  auto report = store().Verify();
  ASSERT_TRUE(Ok(report));
  ASSERT_TRUE(report->first_problem.has_value());
  EXPECT_NE(report->first_problem->find("patient p-2 version 2"), std::string::npos)
      << *report->first_problem;
  EXPECT_NE(report->first_problem->find("hash does not match"), std::string::npos)
      << *report->first_problem;
  // Reading the stream refuses the damaged entry, naming it; other streams read fine.
  auto stream = store().ReadStream("p-2");
  ASSERT_FALSE(stream.ok());
  EXPECT_EQ(stream.error().kind, ErrorKind::kInternal);
  EXPECT_NE(stream.error().message.find("patient p-2 version 2"), std::string::npos);
  EXPECT_TRUE(Ok(store().ReadStream("p-1")));
  EXPECT_FALSE(store().ReadAll(0, 100).ok());
}

TEST_P(EventStoreConformance, VerifyNamesAnEntryWhoseHashWasChanged) {
  Create("p-1");
  ASSERT_TRUE(Ok(store().Append(Request("p-1", {WeightEntry(60), WeightEntry(61)}))));
  store_.reset();
  ASSERT_TRUE(Ok(GetParam().corrupt(url(), "p-1", 2, "hash")));
  Reopen();
  auto report = store().Verify();
  ASSERT_TRUE(Ok(report));
  ASSERT_TRUE(report->first_problem.has_value());
  EXPECT_NE(report->first_problem->find("patient p-1 version 2"), std::string::npos)
      << *report->first_problem;
}

// ---- The global order

TEST_P(EventStoreConformance, ReadAllGivesEveryEntryInCommitOrderAndPages) {
  std::vector<std::pair<std::string, int64_t>> written;
  for (int round = 0; round < 5; ++round) {
    for (const std::string p : {"p-a", "p-b", "p-c"}) {
      auto r = round == 0 ? store().Append(Request(p, {PatientEntry(p)}, 0))
                          : store().Append(Request(p, {WeightEntry(50 + round), WeightEntry(60)}));
      ASSERT_TRUE(Ok(r));
      for (int64_t v = r->first_version; v <= r->last_version; ++v) written.emplace_back(p, v);
    }
  }
  auto all = store().ReadAll(0, 1000);
  ASSERT_TRUE(Ok(all));
  ASSERT_EQ(all->size(), written.size());
  for (size_t i = 0; i < written.size(); ++i) {
    EXPECT_EQ((*all)[i].patient_id, written[i].first);
    EXPECT_EQ((*all)[i].version, written[i].second);
    EXPECT_FALSE((*all)[i].json.empty());
    if (i > 0) {
      EXPECT_GT((*all)[i].position, (*all)[i - 1].position);
    }
  }
  // Pages of 4 put together give the same list.
  std::vector<StoredEntry> paged;
  int64_t after = 0;
  for (;;) {
    auto page = store().ReadAll(after, 4);
    ASSERT_TRUE(Ok(page));
    if (page->empty()) break;
    EXPECT_LE(page->size(), 4u);
    after = page->back().position;
    for (StoredEntry& e : *page) paged.push_back(std::move(e));
  }
  ASSERT_EQ(paged.size(), all->size());
  for (size_t i = 0; i < paged.size(); ++i) EXPECT_EQ(paged[i].position, (*all)[i].position);
  auto none = store().ReadAll(0, 0);
  ASSERT_TRUE(Ok(none));
  EXPECT_TRUE(none->empty());
}

// ---- Erasure

TEST_P(EventStoreConformance, ErasureMakesPayloadsUnreadableAndTheChainStillVerifies) {
  Create("p-1");
  Create("p-2");
  auto appended = store().Append(
      Request("p-1", {PrescriptionEntry("rx-1"), WeightEntry(60)}, std::nullopt, "k-e"));
  ASSERT_TRUE(Ok(appended));
  ASSERT_TRUE(Ok(store().Append(Request("p-2", {WeightEntry(61)}))));
  auto before = store().ReadStream("p-1");
  ASSERT_TRUE(Ok(before));

  ASSERT_TRUE(Ok(store().ErasePatient("p-1", Actor{"dpo-1", "privacy_officer", "test"})));
  Reopen();
  auto after = store().ReadStream("p-1");
  ASSERT_TRUE(Ok(after));
  ASSERT_EQ(after->entries.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const StoredEntry& e = after->entries[i];
    EXPECT_TRUE(e.erased);
    EXPECT_TRUE(e.json.empty());
    // The structure stays: versions, ids, types, hashes.
    EXPECT_EQ(e.version, before->entries[i].version);
    EXPECT_EQ(e.event_id, before->entries[i].event_id);
    EXPECT_EQ(e.type, before->entries[i].type);
    EXPECT_EQ(e.hash, before->entries[i].hash);
  }
  auto report = store().Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  EXPECT_EQ(report->entries_checked, 5);

  // The other patient is untouched; ReadAll shows which entries are erased.
  auto other = store().ReadStream("p-2");
  ASSERT_TRUE(Ok(other));
  EXPECT_FALSE(other->entries.back().erased);
  auto all = store().ReadAll(0, 100);
  ASSERT_TRUE(Ok(all));
  for (const StoredEntry& e : *all) EXPECT_EQ(e.erased, e.patient_id == "p-1");

  // The stream is closed; erasing again changes nothing; an unknown patient is not found.
  EXPECT_TRUE(Fails(store().Append(Request("p-1", {WeightEntry(60)})), ErrorKind::kBadInput,
                    "patient_id", "was erased"));
  EXPECT_TRUE(Ok(store().ErasePatient("p-1", TestActor())));
  EXPECT_TRUE(Fails(store().ErasePatient("p-9", TestActor()), ErrorKind::kNotFound, "patient_id"));
  EXPECT_TRUE(Fails(store().ErasePatient("p-2", Actor{}), ErrorKind::kBadInput, "actor.id"));
  // A retry of an append made before the erasure still gets its answer.
  auto replayed = store().Append(Request("p-1", {WeightEntry(60)}, std::nullopt, "k-e"));
  ASSERT_TRUE(Ok(replayed));
  EXPECT_TRUE(replayed->replayed);
  EXPECT_EQ(replayed->event_ids, appended->event_ids);
  report = store().Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value());
}

// ---- Backup

TEST_P(EventStoreConformance, BackupTakenWhileFourThreadsWriteHoldsEveryEarlierAppend) {
  constexpr int kWriters = 4;
  for (int t = 0; t < kWriters; ++t) Create("w-" + std::to_string(t));
  std::mutex mu;
  std::vector<std::pair<std::string, int64_t>> acknowledged;
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      const std::string patient = "w-" + std::to_string(t);
      while (!stop.load()) {
        auto r = store().Append(Request(patient, {WeightEntry(60), WeightEntry(61)}));
        if (!r.ok()) {
          failures.fetch_add(1);
          return;
        }
        std::lock_guard lock(mu);
        acknowledged.emplace_back(patient, r->last_version);
      }
    });
  }
  // Let the writers get going, then note what was acknowledged before the backup started.
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::lock_guard lock(mu);
    if (acknowledged.size() >= 40) break;
  }
  std::map<std::string, int64_t> before_backup;
  {
    std::lock_guard lock(mu);
    for (const auto& [p, v] : acknowledged) before_backup[p] = std::max(before_backup[p], v);
  }
  const std::string copy = dir().File("backup.db");
  Status backed_up = store().Backup(copy);
  size_t acknowledged_during;
  {
    std::lock_guard lock(mu);
    acknowledged_during = acknowledged.size();
  }
  // Writers kept going during the backup.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  stop = true;
  for (std::thread& w : writers) w.join();
  ASSERT_TRUE(Ok(backed_up));
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(acknowledged.size(), acknowledged_during);

  auto opened = OpenEventStore(GetParam().backup_url(copy));
  ASSERT_TRUE(opened.ok()) << opened.error().ToString();
  EventStore& backup = **opened;
  auto report = backup.Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value()) << *report->first_problem;
  for (const auto& [patient, version] : before_backup) {
    auto stream = backup.ReadStream(patient);
    ASSERT_TRUE(Ok(stream));
    EXPECT_GE(stream->version, version) << patient;
  }
  // A backup never overwrites.
  EXPECT_TRUE(Fails(store().Backup(copy), ErrorKind::kBadInput, "backup " + copy, "exists"));
}

// ---- Concurrent writers

TEST_P(EventStoreConformance, EightWritersOnOneStreamLoseNoUpdate) {
  constexpr int kWriters = 8;
  constexpr int kAppendsEach = 25;
  Create("shared");
  std::atomic<int> conflicts{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kAppendsEach; ++i) {
        const std::string entry = R"({"type": "weight", "id": "w-)" + std::to_string(t) + "-" +
                                  std::to_string(i) +
                                  R"(", "at": "2026-09-01T10:00:00Z", "kg": 60})";
        for (;;) {
          auto stream = store().ReadStream("shared");
          if (!stream.ok()) {
            errors.fetch_add(1);
            return;
          }
          auto r = store().Append(Request("shared", {entry}, stream->version));
          if (r.ok()) break;
          if (r.error().kind != ErrorKind::kConflict) {
            errors.fetch_add(1);
            return;
          }
          conflicts.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& w : writers) w.join();
  EXPECT_EQ(errors.load(), 0);
  auto stream = store().ReadStream("shared");
  ASSERT_TRUE(Ok(stream));
  ASSERT_EQ(stream->version, 1 + kWriters * kAppendsEach);
  std::set<std::string> ids;
  for (size_t i = 0; i < stream->entries.size(); ++i) {
    EXPECT_EQ(stream->entries[i].version, static_cast<int64_t>(i) + 1);
    ids.insert(stream->entries[i].event_id);
  }
  // Every writer's every entry, once.
  EXPECT_EQ(ids.size(), stream->entries.size());
  for (int t = 0; t < kWriters; ++t) {
    for (int i = 0; i < kAppendsEach; ++i) {
      EXPECT_TRUE(ids.contains("w-" + std::to_string(t) + "-" + std::to_string(i)));
    }
  }
  RecordProperty("conflicts", conflicts.load());
}

TEST_P(EventStoreConformance, EightWritersOnTheirOwnStreamsAllSucceed) {
  constexpr int kWriters = 8;
  constexpr int kAppendsEach = 40;
  std::atomic<int> errors{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      const std::string patient = "own-" + std::to_string(t);
      if (!store().Append(Request(patient, {PatientEntry(patient)}, 0)).ok()) errors.fetch_add(1);
      for (int i = 0; i < kAppendsEach; ++i) {
        auto r = store().Append(Request(patient, {WeightEntry(60)}, 1 + i));
        if (!r.ok() || r->last_version != 2 + i) errors.fetch_add(1);
      }
    });
  }
  for (std::thread& w : writers) w.join();
  EXPECT_EQ(errors.load(), 0);
  for (int t = 0; t < kWriters; ++t) EXPECT_EQ(VersionOf("own-" + std::to_string(t)), 41);
  auto report = store().Verify();
  ASSERT_TRUE(Ok(report));
  EXPECT_FALSE(report->first_problem.has_value());
  EXPECT_EQ(report->entries_checked, kWriters * (1 + kAppendsEach));
}

// Strings that become columns must be valid UTF-8 without NUL (PostgreSQL's text takes nothing
// else, and both backends refuse the same requests): other bytes are the request's error
// (kBadInput naming the field), found before the request joins a batch, so that the others of
// its batch are written.
TEST_P(EventStoreConformance, StringsThatAreNotCleanTextAreTheRequestsError) {
  EventStore* store = &this->store();
  ASSERT_TRUE(Ok(store->Append(Request("p-1", {PatientEntry("p-1")}, 0))));
  const std::string bad_id = std::string("p-\xff", 3);
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::string p = "g-" + std::to_string(t);
      if (store->Append(Request(p, {PatientEntry(p)}, 0)).ok()) good.fetch_add(1);
    });
  }
  EXPECT_TRUE(Fails(store->Append(Request(bad_id, {WeightEntry(60)})), ErrorKind::kBadInput,
                    "patient_id", "UTF-8"));
  EXPECT_TRUE(Fails(store->Append(Request("p-1", {R"({"type": "weight", "id": "w\u0000",
                                                       "at": "2026-09-01T10:00:00Z", "kg": 60})"})),
                    ErrorKind::kBadInput, "entries[0].id", "NUL"));
  EXPECT_TRUE(
      Fails(store->Append(Request("p-1", {WeightEntry(60)}, std::nullopt, std::string("k\0", 2))),
            ErrorKind::kBadInput, "idempotency_key"));
  AppendRequest bad_actor = Request("p-1", {WeightEntry(60)});
  bad_actor.actor.role = "\xc0\xaf";  // an overlong '/'
  EXPECT_TRUE(Fails(store->Append(bad_actor), ErrorKind::kBadInput, "actor.role"));
  EXPECT_TRUE(Fails(store->ErasePatient(bad_id, TestActor()), ErrorKind::kBadInput, "patient_id"));
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(good.load(), 4);
  auto unknown = store->ReadStream(bad_id);
  ASSERT_TRUE(Ok(unknown));
  EXPECT_EQ(unknown->version, 0);
  auto no_state = store->ReadState(bad_id);
  ASSERT_TRUE(Ok(no_state));
  EXPECT_EQ(no_state->version, 0);
  // Non-ASCII that is valid is fine.
  EXPECT_TRUE(Ok(store->Append(Request("p-ü-1", {PatientEntry("p-ü-1")}, 0))));
  EXPECT_EQ(store->ReadStream("p-1")->version, 1);
}

// ---- Projections: each patient's current state

// What the state must be: the stream read whole, folded by hand into a record.
std::string RecordFromStream(const Stream& stream) {
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

TEST_P(EventStoreConformance, StateIsTheStreamFoldedIntoARecord) {
  Create("p-1");
  Create("p-2");
  ASSERT_TRUE(Ok(store().Append(Request("p-1", {WeightEntry(60), PrescriptionEntry("rx-1")}))));
  ASSERT_TRUE(Ok(store().Append(Request("p-2", {WeightEntry(70)}))));
  // A header update replaces the record's patient object; later events still follow.
  ASSERT_TRUE(Ok(store().Append(Request(
      "p-1", {R"({"id":"p-1","type":"patient","birth_date":"2000-05-14","jurisdiction":"US",)"
              R"("category":"cannot_get_pregnant"})",
              DispenseEntry("rx-1")}))));
  Reopen();
  for (const std::string patient : {"p-1", "p-2"}) {
    auto stream = store().ReadStream(patient);
    auto state = store().ReadState(patient);
    ASSERT_TRUE(Ok(stream));
    ASSERT_TRUE(Ok(state));
    EXPECT_EQ(state->patient_id, patient);
    EXPECT_EQ(state->version, stream->version);
    EXPECT_EQ(state->position, stream->entries.back().position);
    EXPECT_FALSE(state->erased);
    EXPECT_TRUE(SameJson(state->record_json, RecordFromStream(*stream)));
    // The engine reads it as it reads any record.
    auto record = ParseRecord(state->record_json, ParseOptions{});
    ASSERT_TRUE(Ok(record)) << state->record_json;
    EXPECT_EQ(record->patient.id, patient);
  }
  auto p1 = store().ReadState("p-1");
  ASSERT_TRUE(Ok(p1));
  auto record = json::parse(p1->record_json);
  EXPECT_EQ(record.at("patient").at("category"), "cannot_get_pregnant");
  EXPECT_FALSE(record.at("patient").as_object().contains("type"));
  EXPECT_EQ(record.at("events").as_array().size(), 3u);
}

TEST_P(EventStoreConformance, UnknownPatientHasNoStateAndAnErasedOneNoRecord) {
  auto unknown = store().ReadState("nobody");
  ASSERT_TRUE(Ok(unknown));
  EXPECT_EQ(unknown->version, 0);
  EXPECT_TRUE(unknown->record_json.empty());
  EXPECT_FALSE(unknown->erased);

  Create("p-1");
  ASSERT_TRUE(Ok(store().Append(Request("p-1", {WeightEntry(60)}))));
  ASSERT_TRUE(Ok(store().ErasePatient("p-1", TestActor())));
  auto erased = store().ReadState("p-1");
  ASSERT_TRUE(Ok(erased));
  EXPECT_TRUE(erased->erased);
  EXPECT_TRUE(erased->record_json.empty());
}

TEST_P(EventStoreConformance, VersionsAreTheStreamsHeadsInTheOrderAsked) {
  Create("p-1");
  Create("p-2");
  ASSERT_TRUE(Ok(store().Append(Request("p-1", {WeightEntry(60), WeightEntry(61)}))));
  ASSERT_TRUE(Ok(store().Append(Request("p-2", {WeightEntry(70)}))));
  ASSERT_TRUE(Ok(store().ErasePatient("p-2", TestActor())));
  // Unknown ids, an id asked twice and one no patient can have (not UTF-8) are answered too.
  const std::vector<std::string> ids = {"p-2", "nobody", "p-1", std::string("p-\xff", 3), "p-1"};
  auto versions = store().ReadVersions(ids);
  ASSERT_TRUE(Ok(versions));
  ASSERT_EQ(versions->size(), ids.size());
  EXPECT_EQ((*versions)[0].version, store().ReadStream("p-2")->version);
  EXPECT_TRUE((*versions)[0].erased);
  EXPECT_EQ((*versions)[1].version, 0);
  EXPECT_FALSE((*versions)[1].erased);
  for (size_t i : {size_t{2}, size_t{4}}) {
    EXPECT_EQ((*versions)[i].version, 3);
    EXPECT_FALSE((*versions)[i].erased);
  }
  EXPECT_EQ((*versions)[3].version, 0);
  auto none = store().ReadVersions({});
  ASSERT_TRUE(Ok(none));
  EXPECT_TRUE(none->empty());
  // Limits: the number of ids and each id's length, named.
  EXPECT_TRUE(Ok(store().ReadVersions(std::vector<std::string>(kMaxVersionsPerRead, "p-1"))));
  EXPECT_TRUE(Fails(store().ReadVersions(std::vector<std::string>(kMaxVersionsPerRead + 1, "p-1")),
                    ErrorKind::kBadInput, "patient_ids"));
  EXPECT_TRUE(Fails(store().ReadVersions({"p-1", std::string(kMaxPatientIdBytes + 1, 'x')}),
                    ErrorKind::kBadInput, "patient_ids[1]"));
}

TEST_P(EventStoreConformance, StateKeepsUpWithConcurrentWriters) {
  Create("shared");
  constexpr int kWriters = 4, kAppendsEach = 15;
  std::atomic<int> errors{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kAppendsEach; ++i) {
        if (!store().Append(Request("shared", {WeightEntry(50 + t + i * 0.5)})).ok()) ++errors;
      }
    });
  }
  for (std::thread& w : writers) w.join();
  ASSERT_EQ(errors.load(), 0);
  auto stream = store().ReadStream("shared");
  auto state = store().ReadState("shared");
  ASSERT_TRUE(Ok(stream));
  ASSERT_TRUE(Ok(state));
  EXPECT_EQ(state->version, 1 + kWriters * kAppendsEach);
  EXPECT_TRUE(SameJson(state->record_json, RecordFromStream(*stream)));
}

TEST_P(EventStoreConformance, RebuildOfAConsistentStoreRepairsNothingAndChangesNoState) {
  for (int p = 0; p < 5; ++p) {
    const std::string id = "p-" + std::to_string(p);
    Create(id);
    for (int i = 0; i <= p; ++i) ASSERT_TRUE(Ok(store().Append(Request(id, {WeightEntry(60)}))));
  }
  ASSERT_TRUE(Ok(store().ErasePatient("p-4", TestActor())));
  auto before = store().ReadState("p-3");
  ASSERT_TRUE(Ok(before));

  auto report = store().RebuildProjections();
  ASSERT_TRUE(Ok(report));
  EXPECT_EQ(report->patients, 4);  // the erased patient has no state to rebuild
  EXPECT_EQ(report->repaired, 0);
  EXPECT_EQ(report->removed, 0);
  EXPECT_GE(report->entries, 1 + 1 + 1 + 2 + 1 + 3 + 1 + 4);

  auto after = store().ReadState("p-3");
  ASSERT_TRUE(Ok(after));
  EXPECT_EQ(after->version, before->version);
  EXPECT_EQ(after->record_json, before->record_json);
  auto erased = store().ReadState("p-4");
  ASSERT_TRUE(Ok(erased));
  EXPECT_TRUE(erased->erased);
}

// ---- Corrections

// A correction is a new entry naming the one it corrects; the original stays as it was, and
// the engine, reading the patient's state, treats the corrected event as never recorded.
TEST_P(EventStoreConformance, CorrectionIsANewEntryAndTheEngineHonoursIt) {
  std::ifstream file(std::string(ISOGUARD_SOURCE_DIR) +
                     "/examples/us-2026-first-prescription.json");
  std::stringstream text;
  text << file.rdbuf();
  json::object example = json::parse(text.str()).as_object();
  json::object patient = example.at("patient").as_object();
  const std::string id(patient.at("id").as_string());
  patient.emplace("type", "patient");
  std::vector<std::string> entries{json::serialize(patient)};
  for (const json::value& e : example.at("events").as_array())
    entries.push_back(json::serialize(e));
  ASSERT_TRUE(Ok(store().Append(Request(id, entries, 0))));

  auto rulebook = LoadRulebook(ISOGUARD_SOURCE_DIR);
  ASSERT_TRUE(Ok(rulebook));
  EvaluateOptions at;
  at.at = ParseOffsetTime("2026-09-14T10:00:00-04:00")->instant;
  auto evaluate = [&](const std::string& record_json) {
    auto record = ParseRecord(record_json, ParseOptions{});
    EXPECT_TRUE(Ok(record)) << record_json;
    auto evaluation = Evaluate(*rulebook, *record, at);
    EXPECT_TRUE(Ok(evaluation));
    return EvaluationToJson(*evaluation, *record, false);
  };
  auto state = store().ReadState(id);
  ASSERT_TRUE(Ok(state));
  const std::string before = evaluate(state->record_json);
  EXPECT_NE(before.find(R"("decision":"authorized")"), std::string::npos) << before;

  // Withdraw the latest pregnancy test.
  auto stream = store().ReadStream(id);
  ASSERT_TRUE(Ok(stream));
  const StoredEntry* test = nullptr;
  for (const StoredEntry& e : stream->entries) {
    if (e.type == "pregnancy_test") test = &e;
  }
  ASSERT_NE(test, nullptr);
  const StoredEntry original = *test;
  ASSERT_TRUE(Ok(store().Append(
      Request(id, {R"({"type":"entered_in_error","at":"2026-09-12T09:00:00-04:00","target":")" +
                   original.event_id + R"("})"}))));

  auto corrected = store().ReadStream(id);
  ASSERT_TRUE(Ok(corrected));
  ASSERT_EQ(corrected->version, stream->version + 1);
  const StoredEntry& kept = corrected->entries[static_cast<size_t>(original.version - 1)];
  EXPECT_EQ(kept.json, original.json);
  EXPECT_EQ(kept.hash, original.hash);

  state = store().ReadState(id);
  ASSERT_TRUE(Ok(state));
  const std::string after = evaluate(state->record_json);
  EXPECT_NE(after.find(R"("decision":"denied")"), std::string::npos) << after;
  // Exactly as if the test had never been recorded.
  json::array without;
  for (const StoredEntry& e : stream->entries) {
    if (e.type != kPatientEntryType && e.event_id != original.event_id) {
      without.push_back(json::parse(e.json));
    }
  }
  json::object record;
  record["patient"] = example.at("patient");
  record["events"] = without;
  EXPECT_EQ(after, evaluate(json::serialize(record)));
}

INSTANTIATE_TEST_SUITE_P(Sqlite, EventStoreConformance, Values(SqliteBackend()),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace isoguard::store::testing
