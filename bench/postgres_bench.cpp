// The PostgreSQL backend under load: durable appends with concurrent writers, and a patient's
// state read and evaluated. Registered only when ISOGUARD_BENCH_PG_URL names a server (a
// throwaway cluster from scripts/pg-test-cluster; the commands are in docs/scaling.md), so
// `make bench` without one runs the other benchmarks as before.
//
// - BM_PostgresAppend/W/E: as BM_StoreAppend of the SQLite store (store_bench.cpp): W writer
//   threads, each appending to its own patient's stream with an expected version, E events per
//   append, each acknowledged only after the commit that holds it (synchronous_commit on).
//   Each iteration runs on a fresh database on the same server, dropped afterwards.
// - BM_PostgresReadAndEvaluate/how: on the store that the URL's own database holds (an
//   imported synthetic cohort), one patient at random at a time: `state` reads the projection
//   row (ReadState), `stream` reads and decrypts the stream (ReadStream) and assembles the
//   record; then the record is parsed and evaluated. p50/p99 over the samples, in
//   microseconds, as counters. Skipped when that database holds no store.
#include <benchmark/benchmark.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "append_bench.h"
#include "domain/record_parser.h"
#include "rules/evaluate.h"
#include "rules/rulebook_loader.h"
#include "store/event_store.h"

namespace isoguard::store {
namespace {

using bench::Die;
using bench::kAppendsPerWriter;
using bench::PatientHeader;
using bench::WeightEvent;

constexpr int kReadSamples = 2000;

std::string BenchUrl() {
  const char* url = std::getenv("ISOGUARD_BENCH_PG_URL");
  return url == nullptr ? std::string() : std::string(url);
}

std::string WithDatabase(const std::string& url, const std::string& database) {
  const size_t authority = url.find("://");
  const size_t path = url.find('/', authority == std::string::npos ? 0 : authority + 3);
  const size_t query = url.find('?', path == std::string::npos ? 0 : path);
  const std::string head = path == std::string::npos ? url.substr(0, query) : url.substr(0, path);
  const std::string tail = query == std::string::npos ? "" : url.substr(query);
  return head + "/" + database + tail;
}

// Runs one statement on the URL's database; its first value ("" when none).
std::string Sql(const std::string& url, const std::string& sql) {
  PGconn* c = PQconnectdb(url.c_str());
  if (PQstatus(c) != CONNECTION_OK) Die(std::string("cannot connect: ") + PQerrorMessage(c));
  PGresult* r = PQexec(c, sql.c_str());
  const ExecStatusType status = PQresultStatus(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    Die(std::string(PQresultErrorMessage(r)) + " in: " + sql);
  }
  std::string out = PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "";
  PQclear(r);
  PQfinish(c);
  return out;
}

// A database of its own for one iteration, dropped afterwards.
class BenchDatabase {
 public:
  BenchDatabase() {
    static int counter = 0;
    name_ = "isoguard_bench_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
    Sql(BenchUrl(), "CREATE DATABASE " + name_);
  }
  ~BenchDatabase() { Sql(BenchUrl(), "DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)"); }
  std::string url() const { return WithDatabase(BenchUrl(), name_); }

 private:
  std::string name_;
};

void BM_PostgresAppend(benchmark::State& state) {
  bench::RunConcurrentAppends<BenchDatabase>(state);
}

// The record a stream holds: the latest patient entry (without "type") and the events.
std::string RecordOf(const Stream& stream) {
  std::string patient;
  std::string events;
  for (const StoredEntry& e : stream.entries) {
    if (e.type == kPatientEntryType) {
      boost::json::value v = boost::json::parse(e.json);
      v.as_object().erase("type");
      patient = boost::json::serialize(v);
    } else {
      if (!events.empty()) events.push_back(',');
      events += e.json;
    }
  }
  return R"({"patient":)" + patient + R"(,"events":[)" + events + "]}";
}

void BM_PostgresReadAndEvaluate(benchmark::State& state) {
  const bool from_state = state.range(0) == 0;
  const std::string url = BenchUrl();
  if (Sql(url, "SELECT to_regclass('isoguard.streams') IS NOT NULL") != "t") {
    state.SkipWithError("the database of ISOGUARD_BENCH_PG_URL holds no store (import a cohort)");
    return;
  }
  // Patients picked at random (fixed seed), their ids read once.
  std::vector<std::string> patients;
  {
    PGconn* c = PQconnectdb(url.c_str());
    PGresult* r = PQexec(c,
                         "SELECT patient_id FROM isoguard.streams WHERE patient_id IN (SELECT "
                         "patient_id FROM isoguard.patient_keys) ORDER BY md5(patient_id) LIMIT "
                         "5000");
    for (int i = 0; i < PQntuples(r); ++i) patients.emplace_back(PQgetvalue(r, i, 0));
    PQclear(r);
    PQfinish(c);
  }
  if (patients.empty()) {
    state.SkipWithError("the store holds no patients");
    return;
  }
  auto rulebook = LoadRulebook(ISOGUARD_SOURCE_DIR);
  if (!rulebook.ok()) Die(rulebook.error().ToString());
  ParseOptions parse;
  const Rulebook* rb = &*rulebook;
  parse.is_known_program = [rb](std::string_view id) { return rb->FindProgram(id) != nullptr; };
  StoreOptions store_options;
  store_options.parse = parse;
  auto opened = OpenEventStore(url, store_options);
  if (!opened.ok()) Die(opened.error().ToString());
  EventStore& store = **opened;
  EvaluateOptions evaluate;
  evaluate.at = ParseOffsetTime("2026-11-01T12:00:00Z").value().instant;

  std::vector<double> latencies_us;
  std::mt19937 rng(1);
  int64_t events = 0;
  for (auto _ : state) {
    latencies_us.clear();
    for (int i = 0; i < kReadSamples; ++i) {
      const std::string& patient = patients[rng() % patients.size()];
      const auto start = std::chrono::steady_clock::now();
      std::string record_json;
      if (from_state) {
        auto s = store.ReadState(patient);
        if (!s.ok()) Die(s.error().ToString());
        record_json = std::move(s->record_json);
      } else {
        auto s = store.ReadStream(patient);
        if (!s.ok()) Die(s.error().ToString());
        record_json = RecordOf(*s);
      }
      auto record = ParseRecord(record_json, parse);
      if (!record.ok()) Die(patient + ": " + record.error().ToString());
      auto evaluation = Evaluate(*rulebook, *record, evaluate);
      if (!evaluation.ok()) Die(patient + ": " + evaluation.error().ToString());
      benchmark::DoNotOptimize(evaluation);
      const std::chrono::duration<double, std::micro> took =
          std::chrono::steady_clock::now() - start;
      latencies_us.push_back(took.count());
      events += static_cast<int64_t>(record->events.size());
    }
  }
  std::sort(latencies_us.begin(), latencies_us.end());
  auto at = [&](double q) {
    return latencies_us[std::min(
        latencies_us.size() - 1,
        static_cast<size_t>(q * static_cast<double>(latencies_us.size())))];
  };
  state.counters["p50_us"] = at(0.50);
  state.counters["p99_us"] = at(0.99);
  state.counters["max_us"] = latencies_us.back();
  state.counters["events_per_record"] =
      static_cast<double>(events) / static_cast<double>(state.iterations() * kReadSamples);
}

// Registered only with a server to run against.
[[maybe_unused]] const bool kRegistered = [] {
  if (BenchUrl().empty()) return false;
  benchmark::RegisterBenchmark("BM_PostgresAppend", BM_PostgresAppend)
      ->ArgNames({"writers", "events"})
      ->Args({16, 1})
      ->Args({16, 4})
      ->Args({1, 1})
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_PostgresReadAndEvaluate", BM_PostgresReadAndEvaluate)
      ->ArgName("from_stream")
      ->Arg(0)
      ->Arg(1)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  return true;
}();

}  // namespace
}  // namespace isoguard::store
