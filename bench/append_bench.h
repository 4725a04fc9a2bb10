// What the store benchmarks of both backends share: example entries and the concurrent-append
// benchmark itself, so that SQLite and PostgreSQL are measured by the same loop
// (bench/store_bench.cpp, bench/postgres_bench.cpp; results in docs/performance.md).
#pragma once

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "store/event_store.h"

namespace isoguard::store::bench {

// Appends per writer per iteration: enough for the rate to settle (a few hundred commits).
inline constexpr int kAppendsPerWriter = 400;

[[noreturn]] inline void Die(const std::string& message) {
  std::cerr << "isoguard_bench: " << message << "\n";
  std::exit(1);
}

inline std::string WeightEvent(int i) {
  return R"({"type": "weight", "at": "2026-09-01T10:00:00-04:00", "kg": )" +
         std::to_string(50 + i % 40) + "}";
}
inline std::string PatientHeader(const std::string& id) {
  return R"({"type": "patient", "id": ")" + id +
         R"(", "birth_date": "2000-05-14", "jurisdiction": "US", "category": "can_get_pregnant"})";
}

// state.range(0) writer threads, each appending kAppendsPerWriter times to its own patient's
// stream with an expected version, state.range(1) events per append; each append acknowledged
// only once durable. `Storage` makes a fresh, empty store per iteration (its url()) and removes
// it when destroyed. The counter `events_per_s` is over the appends' wall time.
template <typename Storage>
void RunConcurrentAppends(benchmark::State& state) {
  const int writers = static_cast<int>(state.range(0));
  const int events_per_append = static_cast<int>(state.range(1));
  int64_t events = 0;
  for (auto _ : state) {
    Storage storage;
    auto opened = OpenEventStore(storage.url());
    if (!opened.ok()) Die(opened.error().ToString());
    EventStore& store = **opened;
    for (int w = 0; w < writers; ++w) {
      AppendRequest create;
      create.patient_id = "bench-" + std::to_string(w);
      create.expected_version = 0;
      create.entries = {PatientHeader(create.patient_id)};
      create.actor = Actor{"bench", "system", "bench"};
      if (auto r = store.Append(create); !r.ok()) Die(r.error().ToString());
    }
    std::atomic<bool> failed{false};
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int w = 0; w < writers; ++w) {
      threads.emplace_back([&, w] {
        AppendRequest request;
        request.patient_id = "bench-" + std::to_string(w);
        request.actor = Actor{"bench", "system", "bench"};
        int64_t version = 1;
        for (int i = 0; i < kAppendsPerWriter; ++i) {
          request.expected_version = version;
          request.entries.clear();
          for (int e = 0; e < events_per_append; ++e) request.entries.push_back(WeightEvent(i + e));
          auto r = store.Append(request);
          if (!r.ok()) {
            std::cerr << r.error().ToString() << "\n";
            failed = true;
            return;
          }
          version = r->last_version;
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

}  // namespace isoguard::store::bench
