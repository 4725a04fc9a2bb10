// A small metrics registry rendered in the Prometheus text exposition format 0.0.4.
//
// Families (a name, a help text, a type and fixed label names) hold series (one per set of
// label values). `counter`, `gauge` and `histogram` find or create a series and return a
// reference that stays valid as long as the Metrics object: look a series up once and keep the
// reference — updating it is a few relaxed atomic operations, with no lock. Lookups take a
// shared lock on the family (an exclusive one only to create a series), so they are cheap too.
// All members are thread-safe. Misuse (the same name with another type or other label names,
// an invalid name) is a programmer error and throws std::logic_error.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/http.h"

namespace isoguard::server {

// Label name -> value, e.g. {{"route", "/v1/patients/{patient_id}"}, {"status", "200"}}.
using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  void Inc() { Add(1); }
  void Dec() { Add(-1); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  // `upper_bounds` sorted ascending, +Inf implied.
  explicit Histogram(std::vector<double> upper_bounds);

  void Observe(double v);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;
  const std::vector<double>& upper_bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1, not cumulative
  std::atomic<double> sum_{0};
};

// 0.0005 s to 10 s, for request and storage latencies.
std::vector<double> DefaultLatencyBuckets();

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});
  // The buckets of the family's first series are used for all its series.
  Histogram& histogram(std::string_view name, std::string_view help, const Labels& labels = {},
                       const std::vector<double>& upper_bounds = DefaultLatencyBuckets());

  // Every family, in registration order, in exposition format 0.0.4.
  std::string Render() const;

 private:
  struct Family;
  Family& FindOrAddFamily(std::string_view name, std::string_view help, int type,
                          const Labels& labels);
  void* FindOrAddSeries(Family& family, const Labels& labels,
                        const std::vector<double>* upper_bounds);

  mutable std::shared_mutex mu_;
  std::vector<std::unique_ptr<Family>> families_;
};

// The content type of Metrics::Render()'s text.
inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// A handler for GET /metrics (mark its route inline_on_io_thread). `metrics` must outlive it.
Handler MetricsHandler(const Metrics& metrics);

// Escapes a label value for the exposition format: backslash, double quote and newline.
std::string EscapeLabelValue(std::string_view value);

}  // namespace isoguard::server
