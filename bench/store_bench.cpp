// Durable appends to the SQLite event store against a plain SQLite insert loop, in the same run
// (issue 3: at least 20,000 events/s with 16 concurrent writers, and at least 0.7 of the plain
// loop). Results and the command are in docs/performance.md ("Event store").
//
// - BM_StoreAppend/W/E: W writer threads, each appending to its own patient's stream with an
//   expected version, E events per append, every append acknowledged only after the commit
//   that holds it (synchronous=FULL). Validation, encryption and hashing are included.
// - BM_StoreAppendToCohortStreams/W/E: the same, but each writer appends in turn to 25
//   patients whose streams are synthetic records (src/cli/synth.h, about 42 entries each,
//   imported before the clock starts): streams of the length a clinic's patients have. In
//   BM_StoreAppend each writer's one stream grows to 400-1,600 entries, and every append
//   rewrites the patient's whole state (projection.h), so the cost of an append grows with it.
// - BM_PlainSqliteInsertLoop: the same rows as 16 writers with 1 event per append write (16
//   patients' streams, sealed and hashed beforehand: the loop does no work of the store's)
//   inserted into the same table, at the same durability (WAL, synchronous=FULL), one
//   transaction per row, by one thread, as a program without group commit would.
//
// Each iteration starts from a fresh database in the system's temporary directory; the rate
// counter `events_per_s` is over the iteration's wall time.
#include <benchmark/benchmark.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "append_bench.h"
#include "cli/synth.h"
#include "store/entry_codec.h"
#include "store/event_store.h"
#include "store/sqlite/sqlite_event_store.h"

namespace isoguard::store {
namespace {

using bench::Die;
using bench::kAppendsPerWriter;
using bench::PatientHeader;
using bench::WeightEvent;

namespace fs = std::filesystem;

// A fresh directory for one iteration, removed afterwards.
class BenchDir {
 public:
  BenchDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() / ("isoguard-store-bench-" + std::to_string(::getpid()) +
                                         "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~BenchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// A store in a directory of its own, for RunConcurrentAppends.
struct SqliteBenchStore {
  BenchDir dir;
  std::string url() const { return "sqlite:" + dir.File("bench.db"); }
};

void BM_StoreAppend(benchmark::State& state) {
  bench::RunConcurrentAppends<SqliteBenchStore>(state);
}
BENCHMARK(BM_StoreAppend)
    ->ArgNames({"writers", "events"})
    ->Args({16, 1})
    ->Args({16, 4})
    ->Args({1, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

void BM_StoreAppendToCohortStreams(benchmark::State& state) {
  constexpr int kPatientsPerWriter = 25;
  const int writers = static_cast<int>(state.range(0));
  const int events_per_append = static_cast<int>(state.range(1));
  auto cohort = isoguard::SynthCohort::Create(isoguard::SynthOptions{});
  if (!cohort.ok()) Die(cohort.error().ToString());
  RecordAppendOptions record_options;
  record_options.actor = Actor{"bench", "system", "bench"};
  int64_t events = 0;
  for (auto _ : state) {
    BenchDir dir;
    auto opened = SqliteEventStore::Open(dir.File("bench.db"));
    if (!opened.ok()) Die(opened.error().ToString());
    SqliteEventStore& store = **opened;
    // writers x 25 patients, each a synthetic record as its stream.
    std::vector<std::string> ids;
    std::vector<int64_t> versions;
    std::vector<PreparedAppend> prepared;
    for (int p = 0; p < writers * kPatientsPerWriter; ++p) {
      auto one =
          SqliteEventStore::PrepareRecord(cohort->Record(static_cast<uint64_t>(p)), record_options);
      if (!one.ok()) Die(one.error().ToString());
      ids.push_back(one->patient_id());
      versions.push_back(static_cast<int64_t>(one->entry_count()));
      prepared.push_back(std::move(*one));
    }
    for (const auto& r : store.AppendPrepared(prepared)) {
      if (!r.ok()) Die(r.error().ToString());
    }
    std::atomic<bool> failed{false};
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int w = 0; w < writers; ++w) {
      threads.emplace_back([&, w] {
        AppendRequest request;
        request.actor = Actor{"bench", "system", "bench"};
        for (int i = 0; i < kAppendsPerWriter; ++i) {
          const size_t p = static_cast<size_t>(w * kPatientsPerWriter + i % kPatientsPerWriter);
          request.patient_id = ids[p];
          request.expected_version = versions[p];
          request.entries.clear();
          for (int e = 0; e < events_per_append; ++e) request.entries.push_back(WeightEvent(i + e));
          auto r = store.Append(request);
          if (!r.ok()) {
            std::cerr << r.error().ToString() << "\n";
            failed = true;
            return;
          }
          versions[p] = r->last_version;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    if (failed) Die("an append failed");
    state.SetIterationTime(elapsed.count());
    events += int64_t{writers} * kAppendsPerWriter * events_per_append;
    opened->reset();
  }
  state.counters["events_per_s"] =
      benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_StoreAppendToCohortStreams)
    ->ArgNames({"writers", "events"})
    ->Args({16, 1})
    ->Args({32, 1})
    ->Args({16, 4})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// The plain loop: rows made as the store makes them, then inserted one transaction each.
void BM_PlainSqliteInsertLoop(benchmark::State& state) {
  constexpr int kRows = 16 * kAppendsPerWriter;
  int64_t events = 0;
  for (auto _ : state) {
    state.PauseTiming();
    BenchDir dir;
    const std::string path = dir.File("plain.db");
    // The store's own schema and the 16 patients' streams, made by the store; then the rows
    // the 16 writers of BM_StoreAppend/writers:16/events:1 would write, in turn.
    constexpr int kPatients = 16;
    {
      auto opened = OpenEventStore("sqlite:" + path);
      if (!opened.ok()) Die(opened.error().ToString());
      for (int p = 0; p < kPatients; ++p) {
        AppendRequest create;
        create.patient_id = "plain-" + std::to_string(p);
        create.expected_version = 0;
        create.entries = {PatientHeader(create.patient_id)};
        create.actor = Actor{"bench", "system", "bench"};
        if (auto r = (*opened)->Append(create); !r.ok()) Die(r.error().ToString());
      }
    }
    const PatientKey key = PatientKey::Generate();
    std::vector<EntryRow> rows(kRows);
    std::vector<Hash> prev(kPatients);
    for (int i = 0; i < kRows; ++i) {
      EntryRow& row = rows[static_cast<size_t>(i)];
      const int p = i % kPatients;
      row.position = 1 + kPatients + i;
      row.patient_id = "plain-" + std::to_string(p);
      row.version = 2 + i / kPatients;
      row.event_id = AssignedEventId(row.patient_id, row.version, 0);
      row.type = "weight";
      row.payload = SealPayload(key, row.patient_id, row.version, WeightEvent(i));
      row.recorded_at_ms = 1789000000000;
      row.actor = Actor{"bench", "system", "bench"};
      row.prev_hash = prev[static_cast<size_t>(p)];
      row.hash = EntryHash(row);
      prev[static_cast<size_t>(p)] = row.hash;
    }
    sqlite3* db = nullptr;
    if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) Die("cannot open " + path);
    sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL", nullptr, nullptr,
                 nullptr);
    // Schema version 4: each append is a commits row (what its entries share) and its entries,
    // keyed by the stream's integer id (the 16 streams were made in order: ids 1..16).
    sqlite3_stmt* insert_commit = nullptr;
    sqlite3_stmt* insert = nullptr;
    sqlite3_stmt* begin = nullptr;
    sqlite3_stmt* commit = nullptr;
    sqlite3_prepare_v2(db,
                       "INSERT INTO commits (stream, first_version, last_version, recorded_at_ms, "
                       "actor_id, actor_role, actor_source, idempotency_key) "
                       "VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, NULL)",
                       -1, &insert_commit, nullptr);
    sqlite3_prepare_v2(db,
                       "INSERT INTO entries (position, stream, version, event_id, type, payload, "
                       "commit_id, prev_hash, hash) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                       -1, &insert, nullptr);
    sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, nullptr);
    sqlite3_prepare_v2(db, "COMMIT", -1, &commit, nullptr);
    if (insert_commit == nullptr || insert == nullptr || begin == nullptr || commit == nullptr) {
      Die(sqlite3_errmsg(db));
    }
    state.ResumeTiming();

    const auto start = std::chrono::steady_clock::now();
    for (const EntryRow& row : rows) {
      sqlite3_step(begin);
      sqlite3_reset(begin);
      const int64_t stream = 1 + (row.position - 1 - kPatients) % kPatients;
      sqlite3_bind_int64(insert_commit, 1, stream);
      sqlite3_bind_int64(insert_commit, 2, row.version);
      sqlite3_bind_int64(insert_commit, 3, row.recorded_at_ms);
      sqlite3_bind_text(insert_commit, 4, "bench", 5, SQLITE_STATIC);
      sqlite3_bind_text(insert_commit, 5, "system", 6, SQLITE_STATIC);
      sqlite3_bind_text(insert_commit, 6, "bench", 5, SQLITE_STATIC);
      if (sqlite3_step(insert_commit) != SQLITE_DONE) Die(sqlite3_errmsg(db));
      sqlite3_reset(insert_commit);
      sqlite3_bind_int64(insert, 1, row.position);
      sqlite3_bind_int64(insert, 2, stream);
      sqlite3_bind_int64(insert, 3, row.version);
      sqlite3_bind_text(insert, 4, row.event_id.data(), static_cast<int>(row.event_id.size()),
                        SQLITE_STATIC);
      sqlite3_bind_text(insert, 5, row.type.data(), static_cast<int>(row.type.size()),
                        SQLITE_STATIC);
      sqlite3_bind_blob(insert, 6, row.payload.data(), static_cast<int>(row.payload.size()),
                        SQLITE_STATIC);
      sqlite3_bind_int64(insert, 7, sqlite3_last_insert_rowid(db));
      sqlite3_bind_blob(insert, 8, row.prev_hash.data(), 32, SQLITE_STATIC);
      sqlite3_bind_blob(insert, 9, row.hash.data(), 32, SQLITE_STATIC);
      if (sqlite3_step(insert) != SQLITE_DONE) Die(sqlite3_errmsg(db));
      sqlite3_reset(insert);
      if (sqlite3_step(commit) != SQLITE_DONE) Die(sqlite3_errmsg(db));
      sqlite3_reset(commit);
    }
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    state.SetIterationTime(elapsed.count());
    events += kRows;

    state.PauseTiming();
    sqlite3_finalize(insert_commit);
    sqlite3_finalize(insert);
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    sqlite3_close(db);
    state.ResumeTiming();
  }
  state.counters["events_per_s"] =
      benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PlainSqliteInsertLoop)->UseManualTime()->Unit(benchmark::kMillisecond);

// The per-entry work of an append, outside the database: what a caller does before queuing
// (checking the entry with the parser) and what the writer does for each entry (sealing and
// hashing).
void BM_CheckAppend(benchmark::State& state) {
  AppendRequest request;
  request.patient_id = "bench-1";
  request.actor = Actor{"bench", "system", "bench"};
  request.entries = {WeightEvent(7)};
  const ParseOptions options;
  for (auto _ : state) {
    auto checked = CheckAppend(request, options);
    benchmark::DoNotOptimize(checked);
  }
}
BENCHMARK(BM_CheckAppend);

void BM_SealAndHash(benchmark::State& state) {
  const PatientKey key = PatientKey::Generate();
  const std::string json = WeightEvent(7);
  EntryRow row;
  row.patient_id = "bench-1";
  row.version = 12;
  row.event_id = "bench-1-12";
  row.type = "weight";
  row.actor = Actor{"bench", "system", "bench"};
  for (auto _ : state) {
    row.payload = SealPayload(key, row.patient_id, row.version, json);
    row.hash = EntryHash(row);
    benchmark::DoNotOptimize(row.hash);
  }
}
BENCHMARK(BM_SealAndHash);

}  // namespace
}  // namespace isoguard::store
