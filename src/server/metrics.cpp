#include "server/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <deque>
#include <stdexcept>

namespace isoguard::server {
namespace {

enum FamilyType { kCounterType = 0, kGaugeType = 1, kHistogramType = 2 };

bool IsValidName(std::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void AppendValue(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buffer[64];
    // general: "0.0005" rather than "5e-04", as people write bucket bounds.
    auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v, std::chars_format::general);
    out.append(buffer, ec == std::errc() ? end : buffer);
  }
}

void AppendValue(std::string& out, uint64_t v) {
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v);
  out.append(buffer, ec == std::errc() ? end : buffer);
}

// {a="x",b="y"} with an optional extra label (le), or nothing for no labels.
void AppendLabels(std::string& out, const Labels& labels, std::string_view extra_name = {},
                  std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return;
  out.push_back('{');
  bool first = true;
  for (const auto& [name, value] : labels) {
    if (!first) out.push_back(',');
    first = false;
    out += name;
    out += "=\"";
    out += EscapeLabelValue(value);
    out.push_back('"');
  }
  if (!extra_name.empty()) {
    if (!first) out.push_back(',');
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out.push_back('"');
  }
  out.push_back('}');
}

}  // namespace

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end()) ||
      std::adjacent_find(bounds_.begin(), bounds_.end()) != bounds_.end()) {
    throw std::logic_error("histogram bounds must be strictly increasing");
  }
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  // The first bound >= v: Prometheus buckets are "less than or equal".
  size_t index =
      static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snapshot;
  snapshot.cumulative.reserve(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    snapshot.cumulative.push_back(running);
  }
  // The count is the +Inf bucket, so the two always agree in one rendering.
  snapshot.count = running;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

std::vector<double> DefaultLatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

struct Metrics::Family {
  std::string name;
  std::string help;
  int type = kCounterType;
  std::vector<std::string> label_names;
  std::vector<double> upper_bounds;  // histograms: those of the first series

  mutable std::shared_mutex mu;
  struct Series {
    Labels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  std::deque<Series> series;  // a deque: references to elements survive push_back
};

Metrics::Metrics() = default;
Metrics::~Metrics() = default;

Metrics::Family& Metrics::FindOrAddFamily(std::string_view name, std::string_view help, int type,
                                          const Labels& labels) {
  auto check = [&](Family& family) -> Family& {
    bool same_labels = family.label_names.size() == labels.size();
    for (size_t i = 0; same_labels && i < labels.size(); ++i) {
      same_labels = family.label_names[i] == labels[i].first;
    }
    if (family.type != type || !same_labels) {
      throw std::logic_error("metric " + std::string(name) +
                             " registered again with another type or other label names");
    }
    return family;
  };
  {
    std::shared_lock lock(mu_);
    for (auto& family : families_) {
      if (family->name == name) return check(*family);
    }
  }
  std::unique_lock lock(mu_);
  for (auto& family : families_) {
    if (family->name == name) return check(*family);
  }
  if (!IsValidName(name, true)) throw std::logic_error("invalid metric name: " + std::string(name));
  auto family = std::make_unique<Family>();
  family->name = std::string(name);
  family->help = std::string(help);
  family->type = type;
  for (const auto& [label, value] : labels) {
    if (!IsValidName(label, false) || label.starts_with("__") ||
        (type == kHistogramType && label == "le")) {
      throw std::logic_error("invalid label name " + label + " on metric " + std::string(name));
    }
    family->label_names.push_back(label);
  }
  families_.push_back(std::move(family));
  return *families_.back();
}

void* Metrics::FindOrAddSeries(Family& family, const Labels& labels,
                               const std::vector<double>* upper_bounds) {
  auto same_values = [&](const Family::Series& s) {
    for (size_t i = 0; i < labels.size(); ++i) {
      if (s.labels[i].second != labels[i].second) return false;
    }
    return true;
  };
  auto pointer = [&](Family::Series& s) -> void* {
    if (s.counter) return s.counter.get();
    if (s.gauge) return s.gauge.get();
    return s.histogram.get();
  };
  {
    std::shared_lock lock(family.mu);
    for (auto& s : family.series) {
      if (same_values(s)) return pointer(s);
    }
  }
  std::unique_lock lock(family.mu);
  for (auto& s : family.series) {
    if (same_values(s)) return pointer(s);
  }
  Family::Series s;
  s.labels = labels;
  switch (family.type) {
    case kCounterType:
      s.counter = std::make_unique<Counter>();
      break;
    case kGaugeType:
      s.gauge = std::make_unique<Gauge>();
      break;
    default:
      if (family.series.empty()) family.upper_bounds = *upper_bounds;
      s.histogram = std::make_unique<Histogram>(family.upper_bounds);
  }
  family.series.push_back(std::move(s));
  return pointer(family.series.back());
}

Counter& Metrics::counter(std::string_view name, std::string_view help, const Labels& labels) {
  Family& family = FindOrAddFamily(name, help, kCounterType, labels);
  return *static_cast<Counter*>(FindOrAddSeries(family, labels, nullptr));
}

Gauge& Metrics::gauge(std::string_view name, std::string_view help, const Labels& labels) {
  Family& family = FindOrAddFamily(name, help, kGaugeType, labels);
  return *static_cast<Gauge*>(FindOrAddSeries(family, labels, nullptr));
}

Histogram& Metrics::histogram(std::string_view name, std::string_view help, const Labels& labels,
                              const std::vector<double>& upper_bounds) {
  Family& family = FindOrAddFamily(name, help, kHistogramType, labels);
  return *static_cast<Histogram*>(FindOrAddSeries(family, labels, &upper_bounds));
}

std::string Metrics::Render() const {
  std::string out;
  std::shared_lock lock(mu_);
  for (const auto& family_pointer : families_) {
    const Family& family = *family_pointer;
    std::shared_lock family_lock(family.mu);
    out += "# HELP ";
    out += family.name;
    out.push_back(' ');
    out += EscapeHelp(family.help);
    out += "\n# TYPE ";
    out += family.name;
    out += family.type == kCounterType ? " counter\n"
           : family.type == kGaugeType ? " gauge\n"
                                       : " histogram\n";
    for (const auto& s : family.series) {
      if (s.counter) {
        out += family.name;
        AppendLabels(out, s.labels);
        out.push_back(' ');
        AppendValue(out, s.counter->value());
        out.push_back('\n');
      } else if (s.gauge) {
        out += family.name;
        AppendLabels(out, s.labels);
        out.push_back(' ');
        AppendValue(out, s.gauge->value());
        out.push_back('\n');
      } else {
        Histogram::Snapshot snapshot = s.histogram->Read();
        const auto& bounds = s.histogram->upper_bounds();
        for (size_t i = 0; i <= bounds.size(); ++i) {
          std::string le;
          if (i < bounds.size()) {
            AppendValue(le, bounds[i]);
          } else {
            le = "+Inf";
          }
          out += family.name;
          out += "_bucket";
          AppendLabels(out, s.labels, "le", le);
          out.push_back(' ');
          AppendValue(out, snapshot.cumulative[i]);
          out.push_back('\n');
        }
        out += family.name;
        out += "_sum";
        AppendLabels(out, s.labels);
        out.push_back(' ');
        AppendValue(out, snapshot.sum);
        out.push_back('\n');
        out += family.name;
        out += "_count";
        AppendLabels(out, s.labels);
        out.push_back(' ');
        AppendValue(out, snapshot.count);
        out.push_back('\n');
      }
    }
  }
  return out;
}

Handler MetricsHandler(const Metrics& metrics) {
  return [&metrics](const HttpRequest&, const PathParams&) {
    HttpResponse response;
    response.content_type = std::string(kMetricsContentType);
    response.body = metrics.Render();
    return response;
  };
}

}  // namespace isoguard::server
