// `isoguard serve` on a SQLite store, killed with SIGKILL while clients append, and started again
// on the same store, round after round. Every append the server acknowledged (201 with its event
// ids and versions) must be in the store afterwards, at the versions it was given; an append
// that was not acknowledged must be there whole or not at all; a retry of it with its
// idempotency key must then either write it or answer the first write; and at the end the store
// must hold exactly the appends made, its hash chains intact (`isoguard verify`). The time from
// the restart to the first answer is measured and printed (docs/reliability.md), not asserted.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
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

namespace json = boost::json;
using namespace std::chrono_literals;
using server::testing::TestConnection;

// One client: appends to its patients one request after another on a keep-alive connection
// until told to stop or the server goes away.
void RunWriter(uint16_t port, const std::string& token, const std::string& prefix,
               const std::vector<std::string>& patients, const std::atomic<bool>& stop,
               std::atomic<int>& acknowledged, std::atomic<int>& mismatches,
               std::vector<Attempt>& out) {
  TestConnection c(port, 10s);
  for (int seq = 0; !stop.load(); ++seq) {
    Attempt a = MakeAttempt(patients[static_cast<size_t>(seq) % patients.size()],
                            prefix + "-" + std::to_string(seq), seq);
    if (!c.connected()) break;
    const std::string request = AppendRequestText(a, token);
    // From here on the append may have been written: it is logged whatever happens.
    const bool sent = c.Send(request);
    std::optional<server::testing::RawResponse> answer;
    if (sent) answer = c.ReadResponse();
    if (answer) {
      if (!Acknowledge(a, *answer)) mismatches.fetch_add(1);
      if (a.acknowledged) acknowledged.fetch_add(1);
    }
    out.push_back(std::move(a));
    if (!answer) break;  // the server is gone (or did not answer in time)
  }
}

struct Timing {
  std::vector<double> healthz_ms;  // restart (fork) to the first 200 of /healthz
  std::vector<double> read_ms;     // restart to the first 200 of a patient's record
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1,
                    static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5))];
}

TEST(FaultSigkill, AcknowledgedAppendsSurviveSigkillUnderLoad) {
  const bool soak = SoakRequested();
  const int rounds = soak ? 100 : 10;
  const int writers = 4;
  // Streams stay well below the record's limit of 10,000 events, even in the long version.
  const int patients_per_writer = soak ? 40 : 4;
  // The kill comes at a random moment once the round's load is flowing.
  const int max_delay_ms = soak ? 3000 : 300;

  store::testing::TempDir dir;
  const std::string db = "sqlite:" + dir.File("s.db");
  const std::string token = MakeStoreWithPrescriber(db);
  ASSERT_FALSE(token.empty());

  std::vector<std::vector<std::string>> patients(writers);
  std::vector<Attempt> log;  // every append of every round
  std::mt19937 random(20261126);
  Timing timing;
  int unanswered = 0;          // appends sent but not acknowledged when the server died
  int unanswered_written = 0;  // of those, the ones found written whole after the restart
  ServeProcess serve;
  ASSERT_TRUE(serve.Start(db, dir.File("serve.log"), {"--quiet"}));
  for (int w = 0; w < writers; ++w) {
    for (int p = 0; p < patients_per_writer; ++p) {
      patients[w].push_back("p-" + std::to_string(w) + "-" + std::to_string(p));
      ASSERT_TRUE(Enroll(serve.port(), token, patients[w].back()));
    }
  }

  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::atomic<bool> stop{false};
    std::atomic<int> acknowledged{0};
    std::atomic<int> mismatches{0};
    std::vector<std::vector<Attempt>> attempts(writers);
    std::vector<std::thread> threads;
    for (int w = 0; w < writers; ++w) {
      threads.emplace_back(RunWriter, serve.port(), std::cref(token),
                           "r" + std::to_string(round) + "-w" + std::to_string(w),
                           std::cref(patients[w]), std::cref(stop), std::ref(acknowledged),
                           std::ref(mismatches), std::ref(attempts[w]));
    }
    // Under load: a few appends acknowledged, then a random moment.
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (acknowledged.load() < 2 * writers && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(1ms);
    }
    EXPECT_GE(acknowledged.load(), 2 * writers) << "the load did not start";
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(0, max_delay_ms)(random)));
    const int status = serve.Kill(SIGKILL);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    stop = true;
    for (auto& t : threads) t.join();
    EXPECT_EQ(mismatches.load(), 0) << "an acknowledgement named other events than were sent";

    // Restarted on the same store: the time to the first answers.
    ASSERT_TRUE(serve.Start(db, dir.File("serve.log"), {"--quiet"}));
    ASSERT_TRUE(WaitHealthy(serve.port()));
    timing.healthz_ms.push_back(std::chrono::duration<double, std::milli>(
                                    std::chrono::steady_clock::now() - serve.started())
                                    .count());
    auto first_read = Call(serve.port(), "GET", "/v1/patients/" + patients[0][0], token);
    ASSERT_TRUE(first_read.has_value());
    EXPECT_EQ(first_read->status, 200) << first_read->body;
    timing.read_ms.push_back(std::chrono::duration<double, std::milli>(
                                 std::chrono::steady_clock::now() - serve.started())
                                 .count());

    // What the store holds, before any retry.
    std::map<std::string, std::map<std::string, int64_t>> stored;
    for (const auto& mine : patients) {
      for (const std::string& p : mine) {
        auto versions = StoredVersions(serve.port(), token, p);
        ASSERT_TRUE(versions.has_value()) << p;
        stored[p] = std::move(*versions);
      }
    }
    for (const auto& mine : attempts) {
      for (const Attempt& a : mine) {
        const auto& versions = stored[a.patient_id];
        int present = 0;
        for (int i = 0; i < kEventsPerAppend; ++i) {
          auto found = versions.find(a.event_ids[i]);
          if (found == versions.end()) continue;
          ++present;
          if (a.acknowledged) {
            EXPECT_EQ(found->second, a.first_version + i) << a.event_ids[i];
          }
        }
        if (a.acknowledged) {
          EXPECT_EQ(present, kEventsPerAppend) << "acknowledged append " << a.key << " lost";
        } else {
          EXPECT_TRUE(present == 0 || present == kEventsPerAppend)
              << "append " << a.key << " is half there: " << present << " of " << kEventsPerAppend;
        }
      }
    }
    // Every append not acknowledged is sent again with its key: written now, or answered with
    // the first write (200, replayed) -- never written twice.
    for (auto& mine : attempts) {
      for (Attempt& a : mine) {
        if (a.acknowledged) continue;
        auto again = Call(serve.port(), "POST", "/v1/patients/" + a.patient_id + "/events", token,
                          a.body, "Idempotency-Key: " + a.key + "\r\n");
        ASSERT_TRUE(again.has_value()) << a.key;
        ASSERT_TRUE(again->status == 201 || again->status == 200) << again->body;
        EXPECT_TRUE(Acknowledge(a, *again)) << again->body;
        const bool was_there = stored[a.patient_id].contains(a.event_ids[0]);
        ++unanswered;
        if (was_there) ++unanswered_written;
        EXPECT_EQ(again->status, was_there ? 200 : 201) << a.key;
      }
      log.insert(log.end(), mine.begin(), mine.end());
    }
  }
  ASSERT_EQ(serve.Kill(SIGTERM), 0);

  // The whole store: its chains intact, and exactly the appends made, each once.
  const CommandResult verify = RunCommand(IsoguardBinary() + " verify --db " + db + " 2>&1");
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  size_t total = 0;
  ExpectExactlyTheseAppends(log, db, &total);
  EXPECT_GT(total, 0u);
  std::printf(
      "[ sigkill ] %d rounds, %zu appends (%zu events) acknowledged and found; %d in flight at "
      "a kill (%d of them found written whole, the others not at all); restart to first "
      "/healthz answer: median %.0f ms, max %.0f ms; to the first patient read: median %.0f ms, "
      "max %.0f ms\n",
      rounds, log.size(), total, unanswered, unanswered_written, Percentile(timing.healthz_ms, 0.5),
      Percentile(timing.healthz_ms, 1.0), Percentile(timing.read_ms, 0.5),
      Percentile(timing.read_ms, 1.0));
}

}  // namespace
}  // namespace isoguard::faults
