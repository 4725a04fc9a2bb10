// Read latency of the SQLite event store on a store of 1,000,000 synthetic patients (issue: p99
// under 1 ms), as a pharmacy's question meets it: one random patient read and evaluated.
//
// - BM_ReadStreamAndEvaluate: ReadStream (every entry decrypted, re-validated and its hash
//   chain re-checked), the entries folded into a record, ParseRecord, Evaluate.
// - BM_ReadStateAndEvaluate: ReadState (the projection: one row, decrypted), ParseRecord,
//   Evaluate.
//
// Each runs once over ISOGUARD_BENCH_READS (default 100,000) patients drawn at random (fixed
// seed) after 2,000 reads to warm up, one at a time on one thread, and reports the latency's
// percentiles as counters (p50_us, p99_us, p999_us, max_us) and the rate.
//
// The store is built once, by `isoguard import` of `isoguard synth --patients N --seed 1`, and
// kept beside the benchmark binary as bench-1m.db (ISOGUARD_BENCH_STORE names another file,
// ISOGUARD_BENCH_PATIENTS another N). It is built again when its marker file
// (<store>.complete) is missing; the import is resumable, so an interrupted build goes on where
// it stopped. Commands and results: docs/performance.md ("Event store").
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "cli/store_commands.h"
#include "cli/synth.h"
#include "domain/record_parser.h"
#include "rules/evaluate.h"
#include "rules/rulebook_loader.h"
#include "store/event_store.h"
#include "store/projection.h"

namespace isoguard {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "isoguard_bench: " << message << "\n";
  std::exit(1);
}

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (*end != '\0' || value == 0) Die(std::string(name) + ": not a positive number: " + text);
  return value;
}

// Beside the benchmark binary: build/release/bench-1m.db for build/release/isoguard_bench.
std::string DefaultStorePath() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ((ec ? fs::current_path() : self.parent_path()) / "bench-1m.db").string();
}

struct ReadFixture {
  Rulebook rulebook;
  ParseOptions parse;
  EvaluateOptions evaluate;
  std::unique_ptr<store::EventStore> store;
  uint64_t patients = 0;
};

// Builds the store when its marker is missing: the cohort is generated into a file beside the
// store, imported, and removed.
void EnsureStore(const std::string& path, uint64_t patients, const ParseOptions& parse) {
  const std::string marker = path + ".complete";
  if (fs::exists(marker)) return;
  const std::string cohort = path + ".ndjson";
  std::cerr << "isoguard_bench: building " << path << " (" << patients
            << " synthetic patients, seed 1); this takes a few minutes, once\n";
  {
    std::ofstream out(cohort, std::ios::binary);
    SynthOptions synth;
    synth.patients = patients;
    synth.seed = 1;
    if (auto st = WriteSynthCohort(synth, out); !st.ok()) Die(st.error().ToString());
    out.close();
    if (!out) Die("cannot write " + cohort);
  }
  ImportOptions import;
  import.path = cohort;
  import.db = "sqlite:" + path;
  import.parse = parse;
  const auto start = std::chrono::steady_clock::now();
  if (const int code = RunImport(import, std::cerr); code != 0) {
    Die("importing " + cohort + " failed (exit code " + std::to_string(code) + ")");
  }
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  std::cerr << "isoguard_bench: imported in " << took.count() << " s\n";
  std::error_code ec;
  fs::remove(cohort, ec);
  std::ofstream(marker) << patients << " patients, seed 1\n";
}

ReadFixture& TheReadFixture() {
  static ReadFixture* fixture = [] {
    auto* f = new ReadFixture();
    auto rulebook = LoadRulebook(ISOGUARD_SOURCE_DIR);
    if (!rulebook.ok()) Die(rulebook.error().ToString());
    f->rulebook = std::move(rulebook).value();
    const Rulebook* rb = &f->rulebook;
    f->parse.is_known_program = [rb](std::string_view id) {
      return rb->FindProgram(id) != nullptr;
    };
    f->evaluate.at = ParseOffsetTime("2026-11-01T12:00:00Z").value().instant;
    f->patients = EnvNumber("ISOGUARD_BENCH_PATIENTS", 1000000);
    const char* named = std::getenv("ISOGUARD_BENCH_STORE");
    const std::string path = named != nullptr && *named != '\0' ? named : DefaultStorePath();
    EnsureStore(path, f->patients, f->parse);
    store::StoreOptions options;
    options.parse = f->parse;
    auto opened = store::OpenEventStore("sqlite:" + path, options);
    if (!opened.ok()) Die(opened.error().ToString());
    f->store = std::move(*opened);
    return f;
  }();
  return *fixture;
}

std::string PatientId(uint64_t index) { return "s1-p" + std::to_string(index); }

// Reads and evaluates one patient; the evaluation's decision is returned so that the work
// cannot be optimised away.
using ReadAndEvaluate = bool (*)(ReadFixture&, const std::string&);

bool StreamThenEvaluate(ReadFixture& f, const std::string& patient) {
  auto stream = f.store->ReadStream(patient);
  if (!stream.ok()) Die(stream.error().ToString());
  if (stream->version == 0) Die("no patient " + patient + " in the store");
  store::StateText state;
  for (const store::StoredEntry& entry : stream->entries) {
    if (auto st = store::FoldEntry(state, entry.type, entry.json); !st.ok()) {
      Die(st.error().ToString());
    }
  }
  auto text = store::StateRecordJson(state);
  if (!text.ok()) Die(text.error().ToString());
  auto record = ParseRecord(*text, f.parse);
  if (!record.ok()) Die(patient + ": " + record.error().ToString());
  auto evaluation = Evaluate(f.rulebook, *record, f.evaluate);
  if (!evaluation.ok()) Die(evaluation.error().ToString());
  return evaluation->authorization.authorized;
}

bool StateThenEvaluate(ReadFixture& f, const std::string& patient) {
  auto state = f.store->ReadState(patient);
  if (!state.ok()) Die(state.error().ToString());
  if (state->version == 0) Die("no patient " + patient + " in the store");
  auto record = ParseRecord(state->record_json, f.parse);
  if (!record.ok()) Die(patient + ": " + record.error().ToString());
  auto evaluation = Evaluate(f.rulebook, *record, f.evaluate);
  if (!evaluation.ok()) Die(evaluation.error().ToString());
  return evaluation->authorization.authorized;
}

void RunReads(benchmark::State& state, ReadAndEvaluate read) {
  ReadFixture& f = TheReadFixture();
  const uint64_t reads = EnvNumber("ISOGUARD_BENCH_READS", 100000);
  std::mt19937_64 rng(20261126);
  std::uniform_int_distribution<uint64_t> pick(0, f.patients - 1);
  std::vector<double> latency_us;
  latency_us.reserve(reads);
  int64_t authorized = 0;
  for (auto _ : state) {
    for (int i = 0; i < 2000; ++i) authorized += read(f, PatientId(pick(rng)));
    const auto start = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < reads; ++i) {
      const std::string patient = PatientId(pick(rng));
      const auto t0 = std::chrono::steady_clock::now();
      authorized += read(f, patient);
      const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - t0;
      latency_us.push_back(took.count());
    }
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    state.SetIterationTime(elapsed.count());
  }
  benchmark::DoNotOptimize(authorized);
  std::sort(latency_us.begin(), latency_us.end());
  auto percentile = [&](double p) {
    const auto at = static_cast<size_t>(p * static_cast<double>(latency_us.size() - 1));
    return latency_us[at];
  };
  state.counters["p50_us"] = percentile(0.50);
  state.counters["p99_us"] = percentile(0.99);
  state.counters["p999_us"] = percentile(0.999);
  state.counters["max_us"] = latency_us.back();
  state.counters["reads_per_s"] =
      benchmark::Counter(static_cast<double>(latency_us.size()), benchmark::Counter::kIsRate);
}

void BM_ReadStreamAndEvaluate(benchmark::State& state) { RunReads(state, StreamThenEvaluate); }
void BM_ReadStateAndEvaluate(benchmark::State& state) { RunReads(state, StateThenEvaluate); }

BENCHMARK(BM_ReadStreamAndEvaluate)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_ReadStateAndEvaluate)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);

}  // namespace
}  // namespace isoguard
