// `isoguard serve` under a flood of connections: thousands that connect and say nothing, and
// slow-loris clients that send their request a byte at a time. A real client's requests (reads
// and appends, each on a new connection) must still be answered, each well within 2 s; the
// slow clients must be cut off by the request-read deadline; and past the connection limit
// (10,000) a new connection must be answered 503 and closed while the connections already open
// are still served.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "../store/store_test_support.h"
#include "fault_test_support.h"

namespace isoguard::faults {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using server::testing::RawResponse;
using server::testing::RequestText;
using server::testing::TestConnection;

constexpr size_t kServerConnectionLimit = 10000;  // ServerOptions::max_connections, the default

// The value of `isoguard_http_rejected_total{reason="connections"}` in a /metrics text.
long RejectedConnections(const std::string& metrics) {
  const std::string name = "isoguard_http_rejected_total{reason=\"connections\"} ";
  const size_t at = metrics.find(name);
  if (at == std::string::npos) return 0;
  return std::stol(metrics.substr(at + name.size()));
}

// One request on a new connection, timed.
struct Timed {
  std::optional<RawResponse> answer;
  std::chrono::duration<double, std::milli> took{};
};
Timed TimedCall(uint16_t port, const std::string& method, const std::string& target,
                const std::string& token, const std::string& body, const std::string& headers) {
  const auto start = Clock::now();
  Timed t;
  t.answer = Call(port, method, target, token, body, headers, 10s);
  t.took = Clock::now() - start;
  return t;
}

TEST(FaultFlood, IdleAndSlowConnectionsDoNotStarveRealRequests) {
  const bool soak = SoakRequested();
  const rlim_t files = RaiseOpenFileLimit();
  const size_t idle_count = soak ? 8500 : 3000;  // with the slow ones, below the limit
  const size_t slow_count = soak ? 1000 : 200;
  ASSERT_GT(files, idle_count + slow_count + 200) << "RLIMIT_NOFILE too low for the flood";

  store::testing::TempDir dir;
  const std::string db = "sqlite:" + dir.File("s.db");
  const std::string token = MakeStoreWithPrescriber(db);
  ASSERT_FALSE(token.empty());
  ServeProcess serve;  // inherits the raised limit
  ASSERT_TRUE(serve.Start(db, dir.File("serve.log"), {"--quiet"}));
  const uint16_t port = serve.port();
  ASSERT_TRUE(Enroll(port, token, "p-1"));
  TestConnection probe(port);  // opened first: still served when the limit is reached
  ASSERT_TRUE(probe.connected());

  // The idle flood; the last one's request is answered once every earlier one was accepted.
  std::vector<TestConnection> idle;
  idle.reserve(kServerConnectionLimit + 200);
  for (size_t i = 0; i < idle_count; ++i) {
    idle.emplace_back(port, 10s);
    ASSERT_TRUE(idle.back().connected()) << i;
  }
  // The slow clients: a byte each in turn, a header that never ends.
  std::vector<TestConnection> slow;
  for (size_t i = 0; i < slow_count; ++i) {
    slow.emplace_back(port, 10s);
    ASSERT_TRUE(slow.back().connected()) << i;
  }
  std::atomic<bool> stop_slow{false};
  std::atomic<size_t> slow_closed{0};
  std::vector<double> slow_lifetime_ms(slow_count, 0);
  std::thread trickle([&] {
    const std::string text = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    std::vector<bool> closed(slow_count, false);
    const auto began = Clock::now();
    for (size_t sent = 0; !stop_slow.load() && slow_closed.load() < slow_count; ++sent) {
      const char byte = sent < text.size() ? text[sent] : 'a';
      for (size_t i = 0; i < slow_count; ++i) {
        if (closed[i]) continue;
        pollfd p{slow[i].fd(), POLLIN, 0};
        char c;
        const bool peer_closed = ::poll(&p, 1, 0) > 0 && ::recv(slow[i].fd(), &c, 1, 0) <= 0;
        if (peer_closed || ::send(slow[i].fd(), &byte, 1, MSG_NOSIGNAL) != 1) {
          closed[i] = true;
          slow_lifetime_ms[i] =
              std::chrono::duration<double, std::milli>(Clock::now() - began).count();
          slow_closed.fetch_add(1);
        }
      }
      std::this_thread::sleep_for(20ms);  // the pace of a slow client
    }
  });
  ASSERT_TRUE(idle.back().Send(RequestText("GET", "/healthz")));
  auto last = idle.back().ReadResponse();
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->status, 200);

  // The real client, meanwhile: reads and appends, each on a new connection.
  std::vector<double> latencies_ms;
  for (int i = 0; i < 40; ++i) {
    Timed t;
    if (i % 2 == 0) {
      t = TimedCall(port, "GET", "/v1/patients/p-1", token, {}, {});
    } else {
      Attempt a = MakeAttempt("p-1", "flood-" + std::to_string(i), i);
      t = TimedCall(port, "POST", "/v1/patients/p-1/events", token, a.body,
                    "Idempotency-Key: " + a.key + "\r\n");
    }
    ASSERT_TRUE(t.answer.has_value()) << "request " << i << " not answered";
    EXPECT_TRUE(t.answer->status == 200 || t.answer->status == 201)
        << t.answer->status << " " << t.answer->body;
    EXPECT_LT(t.took, 2s) << "request " << i;
    latencies_ms.push_back(t.took.count());
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());

  // The slow clients are cut off by the request-read deadline (10 s from their first byte).
  const auto until = Clock::now() + 60s;
  while (slow_closed.load() < slow_count && Clock::now() < until) std::this_thread::sleep_for(10ms);
  stop_slow = true;
  trickle.join();
  EXPECT_EQ(slow_closed.load(), slow_count) << "slow clients still connected after 60 s";
  std::sort(slow_lifetime_ms.begin(), slow_lifetime_ms.end());
  EXPECT_GE(slow_lifetime_ms.front(), 5000) << "a slow client was cut off before its deadline";
  slow.clear();

  // Up to the connection limit and past it: a new connection is refused with a 503, the open
  // ones are still served.
  long rejected = 0;
  auto read_rejected = [&] {
    if (!probe.Send(RequestText("GET", "/metrics"))) return false;
    auto m = probe.ReadResponse();
    if (!m || m->status != 200) return false;
    rejected = RejectedConnections(m->body);
    return true;
  };
  ASSERT_TRUE(read_rejected());
  const long rejected_before = rejected;
  ASSERT_GT(files, kServerConnectionLimit + 400) << "RLIMIT_NOFILE too low to reach the limit";
  while (rejected == rejected_before && idle.size() < kServerConnectionLimit + 100) {
    for (int i = 0; i < 50; ++i) {
      idle.emplace_back(port, 10s);
      ASSERT_TRUE(idle.back().connected());
    }
    if (idle.size() + 1 >= kServerConnectionLimit) {
      ASSERT_TRUE(read_rejected());
    }
  }
  // The server accepts from its backlog in turn: the refusals follow.
  const auto refusal_until = Clock::now() + 30s;
  while (rejected == rejected_before && Clock::now() < refusal_until) ASSERT_TRUE(read_rejected());
  EXPECT_GT(rejected, rejected_before) << "no connection refused at " << idle.size() + 1;
  TestConnection refused(port, 10s);
  auto answer = refused.ReadResponse();
  ASSERT_TRUE(answer.has_value()) << "a connection past the limit got no answer";
  EXPECT_EQ(answer->status, 503);
  EXPECT_NE(answer->header("retry-after"), nullptr);
  EXPECT_TRUE(refused.WaitClosed());
  // An open connection is still served at once.
  ASSERT_TRUE(idle.front().Send(RequestText("GET", "/healthz")));
  auto served = idle.front().ReadResponse();
  ASSERT_TRUE(served.has_value());
  EXPECT_EQ(served->status, 200);
  // Room again once some go: a new connection is served.
  for (int i = 0; i < 200; ++i) idle.pop_back();
  std::optional<RawResponse> again;
  const auto room_until = Clock::now() + 10s;
  while (Clock::now() < room_until) {
    again = Call(port, "GET", "/v1/patients/p-1", token);
    if (again && again->status == 200) break;
    std::this_thread::sleep_for(1ms);  // the server takes the closes in turn
  }
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->status, 200);

  idle.clear();
  EXPECT_EQ(serve.Kill(SIGTERM), 0);
  std::printf(
      "[ flood ] %zu idle and %zu slow connections: %zu real requests answered, median %.1f ms, "
      "max %.1f ms; slow clients cut off after %.1f-%.1f s; past %zu connections a new one was "
      "answered 503\n",
      idle_count, slow_count, latencies_ms.size(), latencies_ms[latencies_ms.size() / 2],
      latencies_ms.back(), slow_lifetime_ms.front() / 1000, slow_lifetime_ms.back() / 1000,
      kServerConnectionLimit);
}

}  // namespace
}  // namespace isoguard::faults
