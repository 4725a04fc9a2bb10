// Microbenchmarks of the engine's hot path and of batch evaluation. Results and the commands
// that produced them are in docs/performance.md.
//
// The record under test is a synthetic one (src/cli/synth.h, seed 1): the first US patient who
// can get pregnant, is in treatment with a prescription waiting at the pharmacy, and has about
// 40 events -- the common case of a pharmacy's question.
#include <benchmark/benchmark.h>

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parser.hpp>
#include <boost/json/value.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <streambuf>
#include <string>
#include <system_error>

#include "cli/batch.h"
#include "cli/synth.h"
#include "domain/record_parser.h"
#include "rules/evaluate.h"
#include "rules/rulebook_loader.h"

namespace isoguard {
namespace {

// A stream that discards what is written, so that the batch benchmark measures evaluation.
class NullBuffer : public std::streambuf {
 protected:
  int overflow(int c) override { return c; }
  std::streamsize xsputn(const char*, std::streamsize n) override { return n; }
};

struct Fixture {
  Rulebook rulebook;
  ParseOptions parse;
  EvaluateOptions evaluate;
  std::string text;  // the record's JSON
  Record record;
  uint64_t synth_index = 0;
};

// The first block of a record's DOM in the DOM benchmarks (the size batch workers used when
// they built one).
constexpr size_t kArenaBytes = size_t{256} << 10;

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "isoguard_bench: " << message << "\n";
  std::exit(1);
}

const Fixture& TheFixture() {
  static const Fixture* fixture = [] {
    auto* f = new Fixture();
    auto rulebook = LoadRulebook(ISOGUARD_SOURCE_DIR);
    if (!rulebook.ok()) Die(rulebook.error().ToString());
    f->rulebook = std::move(rulebook).value();
    const Rulebook* rb = &f->rulebook;
    f->parse.is_known_program = [rb](std::string_view id) {
      return rb->FindProgram(id) != nullptr;
    };
    SynthOptions synth;
    auto cohort = SynthCohort::Create(synth);
    if (!cohort.ok()) Die(cohort.error().ToString());
    f->evaluate.at = ParseOffsetTime("2026-11-01T12:00:00Z").value().instant;
    for (uint64_t i = 0; i < 100000; ++i) {
      std::string text = cohort->Record(i);
      auto record = ParseRecord(text, f->parse);
      if (!record.ok())
        Die("synthetic record " + std::to_string(i) + ": " + record.error().ToString());
      if (record->patient.jurisdiction != Jurisdiction::kUS ||
          record->patient.category != Category::kCanGetPregnant || record->events.size() < 38 ||
          record->events.size() > 42) {
        continue;
      }
      auto evaluation = Evaluate(f->rulebook, *record, f->evaluate);
      if (!evaluation.ok() || evaluation->state != TreatmentState::kInTreatment ||
          !evaluation->authorization.prescription || evaluation->course_dispenses.size() < 3) {
        continue;
      }
      f->text = std::move(text);
      f->record = std::move(record).value();
      f->synth_index = i;
      return f;
    }
    Die("no suitable synthetic record");
  }();
  return *fixture;
}

void Label(benchmark::State& state, const Fixture& f) {
  state.SetLabel("synth seed 1 #" + std::to_string(f.synth_index) + ", " +
                 std::to_string(f.record.events.size()) + " events, " +
                 std::to_string(f.text.size()) + " bytes");
}

void BM_Evaluate(benchmark::State& state) {
  const Fixture& f = TheFixture();
  for (auto _ : state) {
    auto evaluation = Evaluate(f.rulebook, f.record, f.evaluate);
    benchmark::DoNotOptimize(evaluation);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  Label(state, f);
}
BENCHMARK(BM_Evaluate);

void BM_Parse(benchmark::State& state) {
  const Fixture& f = TheFixture();
  for (auto _ : state) {
    auto record = ParseRecord(f.text, f.parse);
    benchmark::DoNotOptimize(record);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.text.size()));
  Label(state, f);
}
BENCHMARK(BM_Parse);

// A Boost.JSON DOM of the record alone, with a reused parser and arena. ParseRecord no longer
// builds one (it reads the text with a SAX parser); this is what a DOM costs, for comparison.
void BM_JsonDom(benchmark::State& state) {
  const Fixture& f = TheFixture();
  boost::json::parser parser;
  auto buffer = std::make_unique<unsigned char[]>(kArenaBytes);
  for (auto _ : state) {
    boost::json::monotonic_resource arena(buffer.get(), kArenaBytes);
    parser.reset(&arena);
    boost::system::error_code ec;
    parser.write(f.text.data(), f.text.size(), ec);
    boost::json::value doc = parser.release();
    benchmark::DoNotOptimize(doc);
    parser.reset();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.text.size()));
}
BENCHMARK(BM_JsonDom);

void BM_EvaluationToJson(benchmark::State& state) {
  const Fixture& f = TheFixture();
  auto evaluation = Evaluate(f.rulebook, f.record, f.evaluate);
  if (!evaluation.ok()) Die(evaluation.error().ToString());
  for (auto _ : state) {
    std::string json = EvaluationToJson(*evaluation, f.record, /*include_patient_id=*/true);
    benchmark::DoNotOptimize(json);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_EvaluationToJson);

// JSON text in, result JSON out: the single-record path (ParseRecord), as `isoguard evaluate`.
void BM_ParseAndEvaluate(benchmark::State& state) {
  const Fixture& f = TheFixture();
  for (auto _ : state) {
    auto record = ParseRecord(f.text, f.parse);
    auto evaluation = Evaluate(f.rulebook, *record, f.evaluate);
    std::string json = EvaluationToJson(*evaluation, *record, true);
    benchmark::DoNotOptimize(json);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  Label(state, f);
}
BENCHMARK(BM_ParseAndEvaluate);

// The same through a DOM: a reused parser and arena, then ParseRecordObject (the path for
// callers that hold a DOM already; batch took it before it read lines with ParseRecord).
void BM_ParseAndEvaluateReusedParser(benchmark::State& state) {
  const Fixture& f = TheFixture();
  boost::json::parser parser;
  auto buffer = std::make_unique<unsigned char[]>(kArenaBytes);
  for (auto _ : state) {
    boost::json::monotonic_resource arena(buffer.get(), kArenaBytes);
    parser.reset(&arena);
    boost::system::error_code ec;
    parser.write(f.text.data(), f.text.size(), ec);
    boost::json::value doc = parser.release();
    auto record = ParseRecordObject(doc.get_object(), f.parse);
    auto evaluation = Evaluate(f.rulebook, *record, f.evaluate);
    std::string json = EvaluationToJson(*evaluation, *record, true);
    benchmark::DoNotOptimize(json);
    parser.reset();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_ParseAndEvaluateReusedParser);

void BM_SynthRecord(benchmark::State& state) {
  auto cohort = SynthCohort::Create(SynthOptions{});
  if (!cohort.ok()) Die(cohort.error().ToString());
  uint64_t i = 0;
  std::string out;
  for (auto _ : state) {
    out.clear();
    cohort->AppendRecord(i++, out);
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_SynthRecord);

// RunBatch over 20,000 synthetic records (all stages, ~4.9 KB each) from a file in the page
// cache, results discarded; the argument is the number of workers.
std::string BatchInputPath() {
  return std::filesystem::temp_directory_path() / "isoguard_bench_batch.ndjson";
}

void BM_Batch(benchmark::State& state) {
  const Fixture& f = TheFixture();
  constexpr uint64_t kPatients = 20000;
  static const std::string path = [] {
    std::string p = BatchInputPath();
    std::ofstream file(p, std::ios::binary);
    SynthOptions synth;
    synth.patients = kPatients;
    auto status = WriteSynthCohort(synth, file);
    if (!status.ok() || !file) Die("cannot write " + p);
    return p;
  }();
  BatchOptions options;
  options.path = path;
  options.evaluate = f.evaluate;
  options.parse = f.parse;
  options.threads = static_cast<unsigned>(state.range(0));
  NullBuffer null_buffer;
  std::ostream out(&null_buffer);
  for (auto _ : state) {
    const int code = RunBatch(f.rulebook, options, out, std::cerr);
    if (code != 0) Die("RunBatch exited " + std::to_string(code));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kPatients));
}
BENCHMARK(BM_Batch)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace isoguard

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::error_code ignored;  // BM_Batch's input, if it ran
  std::filesystem::remove(isoguard::BatchInputPath(), ignored);
  return 0;
}
