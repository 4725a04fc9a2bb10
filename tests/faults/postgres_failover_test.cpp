// `isoguard serve` on a PostgreSQL primary with a synchronous hot standby
// (scripts/pg-failover-pair), through a multi-host URL with target_session_attrs=read-write.
// Clients append under load; the primary is stopped with `pg_ctl stop -m immediate` and the
// standby promoted. The service must find the new primary by itself (no restart), every append
// it acknowledged must be on the promoted server, and the appends the clients retried with their
// idempotency keys must be there once each. The outage the clients saw is measured and printed
// (docs/reliability.md), not asserted.
//
// The test starts its own pair of clusters, so it runs in a ctest entry of its own
// (postgres_failover), which sets ISOGUARD_TEST_PG_FAILOVER=1; without it the test is skipped.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../store/store_test_support.h"
#include "fault_test_support.h"

namespace isoguard::faults {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using server::testing::TestConnection;

// The pair of clusters, stopped and removed when the test ends however it ends.
class FailoverPair {
 public:
  explicit FailoverPair(std::string dir) : dir_(std::move(dir)) {}
  ~FailoverPair() { Run("stop"); }
  FailoverPair(const FailoverPair&) = delete;
  FailoverPair& operator=(const FailoverPair&) = delete;

  CommandResult Run(const std::string& command) const {
    return RunCommand(std::string(ISOGUARD_SOURCE_DIR) + "/scripts/pg-failover-pair " + command +
                      " " + dir_ + " 2>&1");
  }
  std::string Url() const {
    std::ifstream in(dir_ + "/url");
    std::string url;
    std::getline(in, url);
    return url;
  }

 private:
  std::string dir_;
};

// One client's appends: each sent until it is acknowledged, on a new connection after any
// failure, with the same idempotency key.
struct WriterLog {
  std::vector<Attempt> attempts;
  std::vector<Clock::time_point> acked_at;  // when each attempt was acknowledged
  std::map<int, int> failures;              // status (0: no answer) -> count
};

void RunRetryingWriter(uint16_t port, const std::string& token, const std::string& prefix,
                       const std::vector<std::string>& patients, const std::atomic<bool>& stop,
                       std::atomic<int>& acknowledged, WriterLog& out) {
  std::optional<TestConnection> c;
  for (int seq = 0; !stop.load(); ++seq) {
    Attempt a = MakeAttempt(patients[static_cast<size_t>(seq) % patients.size()],
                            prefix + "-" + std::to_string(seq), seq);
    const std::string request = AppendRequestText(a, token);
    const auto give_up = Clock::now() + 60s;
    while (!a.acknowledged && Clock::now() < give_up) {
      if (!c || !c->connected()) c.emplace(port, 10s);
      std::optional<server::testing::RawResponse> answer;
      if (c->connected() && c->Send(request)) answer = c->ReadResponse();
      if (answer && (answer->status == 200 || answer->status == 201)) {
        if (!Acknowledge(a, *answer)) ++out.failures[-1];  // a 2xx naming other events: a bug
        break;
      }
      ++out.failures[answer ? answer->status : 0];
      c.reset();  // a failed request may leave the connection closed or mid-answer
      // The next try after a short pause (a client honouring Retry-After would wait longer).
      std::this_thread::sleep_for(10ms);
    }
    if (!a.acknowledged) break;
    out.acked_at.push_back(Clock::now());
    out.attempts.push_back(std::move(a));
    acknowledged.fetch_add(1);
  }
}

TEST(PostgresFailover, AcknowledgedAppendsSurvivePrimaryCrashAndPromotion) {
  const char* enabled = std::getenv("ISOGUARD_TEST_PG_FAILOVER");
  if (enabled == nullptr || std::string_view(enabled) != "1") {
    GTEST_SKIP() << "starts two PostgreSQL clusters of its own: run by the postgres_failover ctest "
                    "entry (ISOGUARD_TEST_PG_FAILOVER=1)";
  }
  const bool soak = SoakRequested();
  const int writers = 4;
  const int patients_per_writer = 2;
  // Acknowledged appends per writer before the crash and after the promotion.
  const int appends_around = soak ? 1000 : 30;

  store::testing::TempDir dir;
  FailoverPair pair(dir.File("pair"));
  const CommandResult started = pair.Run("start");
  ASSERT_EQ(started.exit_code, 0) << started.output;
  const std::string url = pair.Url();
  ASSERT_NE(url.find("target_session_attrs=read-write"), std::string::npos) << url;
  const std::string token = MakeStoreWithPrescriber(url);
  ASSERT_FALSE(token.empty());

  ServeProcess serve;
  ASSERT_TRUE(serve.Start(url, dir.File("serve.log"), {"--quiet"}));
  std::vector<std::vector<std::string>> patients(writers);
  for (int w = 0; w < writers; ++w) {
    for (int p = 0; p < patients_per_writer; ++p) {
      patients[w].push_back("p-" + std::to_string(w) + "-" + std::to_string(p));
      ASSERT_TRUE(Enroll(serve.port(), token, patients[w].back()));
    }
  }

  std::atomic<bool> stop{false};
  std::atomic<int> acknowledged{0};
  std::vector<WriterLog> logs(writers);
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back(RunRetryingWriter, serve.port(), std::cref(token), "w" + std::to_string(w),
                         std::cref(patients[w]), std::cref(stop), std::ref(acknowledged),
                         std::ref(logs[w]));
  }
  auto wait_for_acks = [&](int n) {
    const auto until = Clock::now() + (soak ? 600s : 60s);
    while (acknowledged.load() < n && Clock::now() < until) std::this_thread::sleep_for(1ms);
    return acknowledged.load() >= n;
  };
  ASSERT_TRUE(wait_for_acks(writers * appends_around)) << "the load did not start";
  std::mt19937 random(7);
  std::this_thread::sleep_for(
      std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 200)(random)));

  const auto crash_at = Clock::now();
  const CommandResult crashed = pair.Run("crash");
  ASSERT_EQ(crashed.exit_code, 0) << crashed.output;
  const int acked_at_crash = acknowledged.load();
  const CommandResult promoted = pair.Run("promote");
  ASSERT_EQ(promoted.exit_code, 0) << promoted.output;
  const auto promoted_at = Clock::now();
  // The service carries on by itself: appends are acknowledged again, on the new primary.
  const bool resumed = wait_for_acks(acked_at_crash + writers * appends_around);
  stop = true;
  for (auto& t : threads) t.join();
  std::map<int, int> failures;  // status (0: no answer, -1: a wrong acknowledgement) -> count
  for (const WriterLog& log : logs) {
    for (const auto& [status, n] : log.failures) failures[status] += n;
  }
  std::string failure_text;
  for (const auto& [status, n] : failures) {
    failure_text += " " + std::to_string(n) + "x" +
                    (status == 0 ? std::string("no-answer") : std::to_string(status));
  }
  ASSERT_TRUE(resumed) << "no appends acknowledged after the promotion; failed tries:"
                       << failure_text;

  // The outage each client saw: its longest wait between two acknowledgements; and from the
  // promotion to the first acknowledgement after it.
  double worst_gap_ms = 0;
  auto first_after_promotion = Clock::time_point::max();
  std::vector<Attempt> all;
  for (const WriterLog& log : logs) {
    for (size_t i = 1; i < log.acked_at.size(); ++i) {
      worst_gap_ms = std::max(
          worst_gap_ms,
          std::chrono::duration<double, std::milli>(log.acked_at[i] - log.acked_at[i - 1]).count());
    }
    for (const auto& t : log.acked_at) {
      if (t > promoted_at) first_after_promotion = std::min(first_after_promotion, t);
    }
    all.insert(all.end(), log.attempts.begin(), log.attempts.end());
  }
  EXPECT_EQ(failures[-1], 0) << "an acknowledgement named other events than were sent";
  ASSERT_NE(first_after_promotion, Clock::time_point::max());

  // Every acknowledged append is on the promoted server, at its versions, through the API of
  // the same (never restarted) service.
  for (const auto& mine : patients) {
    for (const std::string& p : mine) {
      auto versions = StoredVersions(serve.port(), token, p);
      ASSERT_TRUE(versions.has_value()) << p;
      for (const Attempt& a : all) {
        if (a.patient_id != p) continue;
        for (int i = 0; i < kEventsPerAppend; ++i) {
          auto found = versions->find(a.event_ids[i]);
          ASSERT_NE(found, versions->end()) << "acknowledged " << a.key << " lost";
          EXPECT_EQ(found->second, a.first_version + i) << a.event_ids[i];
        }
      }
    }
  }
  EXPECT_EQ(serve.Kill(SIGTERM), 0);
  // Exactly the acknowledged appends, each once (the retries wrote nothing twice), and every
  // chain intact.
  size_t total = 0;
  ExpectExactlyTheseAppends(all, url, &total);
  const CommandResult verify = RunCommand(IsoguardBinary() + " verify --db '" + url + "' 2>&1");
  EXPECT_EQ(verify.exit_code, 0) << verify.output;

  std::printf(
      "[ failover ] %zu appends (%zu events) acknowledged and found; promotion took %.0f ms "
      "after the crash; the promotion to the first append acknowledged after it: %.0f ms; the "
      "longest wait a "
      "client saw between two acknowledgements: %.0f ms; failed tries:%s\n",
      all.size(), total, std::chrono::duration<double, std::milli>(promoted_at - crash_at).count(),
      std::chrono::duration<double, std::milli>(first_after_promotion - promoted_at).count(),
      worst_gap_ms, failure_text.c_str());
}

}  // namespace
}  // namespace isoguard::faults
