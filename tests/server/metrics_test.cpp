#include "server/metrics.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>
#include <vector>

#include "metrics_exposition.h"

namespace isoguard::server {
namespace {

TEST(MetricsTest, RendersCountersAndGaugesWithLabels) {
  Metrics metrics;
  metrics
      .counter("isoguard_authorizations_total", "Authorizations by decision.",
               {{"decision", "allow"}})
      .Inc(3);
  metrics
      .counter("isoguard_authorizations_total", "Authorizations by decision.",
               {{"decision", "deny"}})
      .Inc();
  metrics.gauge("isoguard_things", "Things.").Set(2.5);
  EXPECT_EQ(metrics.Render(),
            "# HELP isoguard_authorizations_total Authorizations by decision.\n"
            "# TYPE isoguard_authorizations_total counter\n"
            "isoguard_authorizations_total{decision=\"allow\"} 3\n"
            "isoguard_authorizations_total{decision=\"deny\"} 1\n"
            "# HELP isoguard_things Things.\n"
            "# TYPE isoguard_things gauge\n"
            "isoguard_things 2.5\n");
}

TEST(MetricsTest, RendersHistogramsCumulatively) {
  Metrics metrics;
  Histogram& h = metrics.histogram("isoguard_store_append_seconds", "Append latency.",
                                   {{"backend", "sqlite"}}, {0.01, 0.1, 1});
  h.Observe(0.005);
  h.Observe(0.01);  // on a bound: counts in that bucket (le is "less than or equal")
  h.Observe(0.5);
  h.Observe(20);
  EXPECT_EQ(metrics.Render(),
            "# HELP isoguard_store_append_seconds Append latency.\n"
            "# TYPE isoguard_store_append_seconds histogram\n"
            "isoguard_store_append_seconds_bucket{backend=\"sqlite\",le=\"0.01\"} 2\n"
            "isoguard_store_append_seconds_bucket{backend=\"sqlite\",le=\"0.1\"} 2\n"
            "isoguard_store_append_seconds_bucket{backend=\"sqlite\",le=\"1\"} 3\n"
            "isoguard_store_append_seconds_bucket{backend=\"sqlite\",le=\"+Inf\"} 4\n"
            "isoguard_store_append_seconds_sum{backend=\"sqlite\"} 20.515\n"
            "isoguard_store_append_seconds_count{backend=\"sqlite\"} 4\n");
  EXPECT_EQ(testing::FirstInvalidExpositionLine(metrics.Render()), "");
}

TEST(MetricsTest, EscapesLabelValuesAndHelp) {
  Metrics metrics;
  metrics.counter("x_total", "Help with \\ and\nnewline.", {{"v", "a\"b\\c\nd"}}).Inc();
  std::string text = metrics.Render();
  EXPECT_NE(text.find("# HELP x_total Help with \\\\ and\\nnewline.\n"), std::string::npos);
  EXPECT_NE(text.find("x_total{v=\"a\\\"b\\\\c\\nd\"} 1\n"), std::string::npos);
  EXPECT_EQ(testing::FirstInvalidExpositionLine(text), "");
}

TEST(MetricsTest, ExpositionCheckerRejectsMalformedLines) {
  using testing::FirstInvalidExpositionLine;
  EXPECT_EQ(FirstInvalidExpositionLine("a_total{k=\"v\"} 1\n"), "");
  EXPECT_NE(FirstInvalidExpositionLine("a_total{k=\"v} 1\n"), "");
  EXPECT_NE(FirstInvalidExpositionLine("a_total{k=\"a\\qb\"} 1\n"), "");
  EXPECT_NE(FirstInvalidExpositionLine("a total 1\n"), "");
  EXPECT_NE(FirstInvalidExpositionLine("a_total one\n"), "");
  EXPECT_NE(FirstInvalidExpositionLine("# TYPE a_total countr\n"), "");
  EXPECT_NE(FirstInvalidExpositionLine("a_total 1"), "");
}

TEST(MetricsTest, ReturnsStableReferences) {
  Metrics metrics;
  Counter& first = metrics.counter("c_total", "C.", {{"k", "0"}});
  for (int i = 1; i < 1000; ++i) metrics.counter("c_total", "C.", {{"k", std::to_string(i)}});
  EXPECT_EQ(&first, &metrics.counter("c_total", "C.", {{"k", "0"}}));
  Histogram& h = metrics.histogram("h_seconds", "H.", {{"k", "0"}});
  for (int i = 1; i < 100; ++i) metrics.histogram("h_seconds", "H.", {{"k", std::to_string(i)}});
  EXPECT_EQ(&h, &metrics.histogram("h_seconds", "H.", {{"k", "0"}}));
  EXPECT_EQ(h.upper_bounds().front(), 0.0005);
  EXPECT_EQ(h.upper_bounds().back(), 10);
}

TEST(MetricsTest, CountsExactlyUnderConcurrency) {
  Metrics metrics;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&metrics, t] {
      for (int i = 0; i < 10000; ++i) {
        metrics.counter("n_total", "N.", {{"k", std::to_string(i % 3)}}).Inc();
        metrics.histogram("d_seconds", "D.", {}).Observe(0.001 * t);
        if (i % 1000 == 0) (void)metrics.Render();
      }
    });
  }
  for (auto& t : threads) t.join();
  uint64_t total = 0;
  for (int k = 0; k < 3; ++k) {
    total += metrics.counter("n_total", "N.", {{"k", std::to_string(k)}}).value();
  }
  EXPECT_EQ(total, 40000u);
  EXPECT_EQ(metrics.histogram("d_seconds", "D.", {}).Read().count, 40000u);
}

TEST(MetricsTest, RefusesMisuse) {
  Metrics metrics;
  metrics.counter("a_total", "A.", {{"k", "v"}});
  EXPECT_THROW(metrics.gauge("a_total", "A."), std::logic_error);
  EXPECT_THROW(metrics.counter("a_total", "A.", {{"other", "v"}}), std::logic_error);
  EXPECT_THROW(metrics.counter("bad name", "A."), std::logic_error);
  EXPECT_THROW(metrics.counter("b_total", "B.", {{"1x", "v"}}), std::logic_error);
  EXPECT_THROW(metrics.histogram("h", "H.", {{"le", "1"}}), std::logic_error);
  EXPECT_THROW(metrics.histogram("h2", "H.", {}, {1, 0.5}), std::logic_error);
}

TEST(MetricsTest, HandlerServesExpositionText) {
  Metrics metrics;
  metrics.counter("a_total", "A.").Inc();
  HttpResponse r = MetricsHandler(metrics)(HttpRequest{}, PathParams{});
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(r.body.find("a_total 1\n"), std::string::npos);
}

}  // namespace
}  // namespace isoguard::server
