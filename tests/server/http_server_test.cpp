// The server over real sockets on 127.0.0.1 (port 0). Tests wait for events — a response, a
// close, a handler entering — each with a generous timeout, never for a fixed time.
#include "server/http_server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/stat.h>

#include <boost/json/parse.hpp>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "http_test_client.h"
#include "metrics_exposition.h"
#include "server/problem.h"

namespace isoguard::server {
namespace {

using namespace std::chrono_literals;
using testing::RawResponse;
using testing::RequestText;
using testing::TestConnection;

// Holds handlers until the test opens it; counts the handlers that have entered.
class Gate {
 public:
  void Pass() {
    std::unique_lock lock(mu_);
    ++entered_;
    cv_.notify_all();
    cv_.wait(lock, [this] { return open_; });
  }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool WaitEntered(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return entered_ >= n; });
  }
  ~Gate() { Open(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int entered_ = 0;
  bool open_ = false;
};

HttpResponse Text(std::string body) {
  HttpResponse r;
  r.content_type = "text/plain";
  r.body = std::move(body);
  return r;
}

// Waits (polling, with a deadline) until `condition` holds.
template <typename F>
bool Eventually(F condition) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return condition();
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    router.Add("GET", "/healthz", [](const HttpRequest&, const PathParams&) { return Text("ok"); },
               {.inline_on_io_thread = true});
    router.Add("GET", "/metrics", MetricsHandler(metrics), {.inline_on_io_thread = true});
    router.Add("GET", "/v1/patients/{patient_id}/events/{event_id}",
               [](const HttpRequest& request, const PathParams& params) {
                 std::string body = *FindParam(params, "patient_id") + "|" +
                                    *FindParam(params, "event_id") + "|" + request.path;
                 if (const std::string* q = request.query_param("q")) body += "|q=" + *q;
                 return Text(body);
               });
    router.Add("POST", "/v1/echo", [this](const HttpRequest& request, const PathParams&) {
      ++echo_calls;
      return Text(request.body);
    });
    router.Add("POST", "/v1/small",
               [](const HttpRequest& r, const PathParams&) { return Text(r.body); },
               {.max_body_bytes = 10});
    router.Add("GET", "/v1/throw", [](const HttpRequest&, const PathParams&) -> HttpResponse {
      throw std::runtime_error("secret internal detail");
    });
    router.Add("GET", "/v1/held", [this](const HttpRequest&, const PathParams&) {
      gate.Pass();
      return Text("released");
    });
    router.Add("DELETE", "/v1/nothing", [](const HttpRequest&, const PathParams&) {
      HttpResponse r = Text("ignored");
      r.status = 204;
      return r;
    });
    router.Add("GET", "/v1/cached", [](const HttpRequest&, const PathParams&) {
      HttpResponse r = Text("x");
      r.headers.emplace_back("Cache-Control", "max-age=60");
      return r;
    });
  }

  void StartServer(ServerOptions options = {}) {
    options.listen = "127.0.0.1:0";
    auto started = HttpServer::Start(options, router, metrics, logger);
    ASSERT_TRUE(started.ok()) << started.error().ToString();
    server = std::move(started).value();
    ASSERT_NE(server->port(), 0);
  }

  RawResponse Fetch(const std::string& text) {
    TestConnection connection(server->port());
    EXPECT_TRUE(connection.connected());
    connection.Send(text);
    auto response = connection.ReadResponse();
    EXPECT_TRUE(response.has_value()) << text;
    return response.value_or(RawResponse{});
  }

  std::atomic<int> echo_calls{0};
  Gate gate;
  Router router;
  Metrics metrics;
  Logger logger{-1};
  std::unique_ptr<HttpServer> server;  // last: stopped before what its handlers use
};

boost::json::object ProblemBody(const RawResponse& r) {
  EXPECT_NE(r.header("content-type"), nullptr);
  if (r.header("content-type")) {
    EXPECT_EQ(*r.header("content-type"), "application/problem+json");
  }
  return boost::json::parse(r.body).as_object();
}

TEST_F(HttpServerTest, RoutesUnknownPathTo404AndOtherMethodTo405) {
  StartServer();
  RawResponse missing = Fetch(RequestText("GET", "/nope"));
  EXPECT_EQ(missing.status, 404);
  auto body = ProblemBody(missing);
  EXPECT_EQ(body.at("status").as_int64(), 404);
  EXPECT_EQ(body.at("type").as_string(), "https://isoguard.example/problems/not-found");
  ASSERT_NE(missing.header("x-request-id"), nullptr);
  EXPECT_EQ(body.at("instance").as_string(), *missing.header("x-request-id"));

  RawResponse wrong = Fetch(RequestText("DELETE", "/v1/echo"));
  EXPECT_EQ(wrong.status, 405);
  ASSERT_NE(wrong.header("allow"), nullptr);
  EXPECT_EQ(*wrong.header("allow"), "POST");
  EXPECT_EQ(ProblemBody(wrong).at("status").as_int64(), 405);
}

TEST_F(HttpServerTest, DecodesPathParametersAndQuery) {
  StartServer();
  RawResponse r = Fetch(RequestText("GET", "/v1/patients/P%2D1%20%C3%A9/events/e%3F9?q=a+b%26c"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "P-1 \xC3\xA9|e?9|/v1/patients/P-1 \xC3\xA9/events/e?9|q=a b&c");

  RawResponse slash = Fetch(RequestText("GET", "/v1/patients/a%2Fb/events/1"));
  EXPECT_EQ(slash.status, 400);
  EXPECT_EQ(ProblemBody(slash).at("field").as_string(), "patient_id");
  EXPECT_EQ(Fetch(RequestText("GET", "/v1/patients/%FF/events/1")).status, 400);
  EXPECT_EQ(Fetch(RequestText("GET", "/v1/patients/1/events/2?q=%FF")).status, 400);
}

TEST_F(HttpServerTest, KeepsConnectionsAliveAndHonoursConnectionClose) {
  StartServer();
  TestConnection connection(server->port());
  ASSERT_TRUE(connection.Send(RequestText("POST", "/v1/echo", {}, "one")));
  auto first = connection.ReadResponse();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->body, "one");
  ASSERT_TRUE(connection.Send(RequestText("POST", "/v1/echo", {}, "two")));
  auto second = connection.ReadResponse();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->body, "two");
  // Pipelined: both sent at once, answered in order.
  ASSERT_TRUE(connection.Send(RequestText("POST", "/v1/echo", {}, "three") +
                              RequestText("POST", "/v1/echo", "Connection: close\r\n", "four")));
  auto third = connection.ReadResponse();
  auto fourth = connection.ReadResponse();
  ASSERT_TRUE(third && fourth);
  EXPECT_EQ(third->body, "three");
  EXPECT_EQ(fourth->body, "four");
  ASSERT_NE(fourth->header("connection"), nullptr);
  EXPECT_EQ(*fourth->header("connection"), "close");
  EXPECT_TRUE(connection.WaitClosed());

  TestConnection old(server->port());
  old.Send("GET /healthz HTTP/1.0\r\n\r\n");  // HTTP/1.0 without keep-alive: closed after
  auto answer = old.ReadResponse();
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 200);
  EXPECT_TRUE(old.WaitClosed());
}

TEST_F(HttpServerTest, SetsStandardResponseHeaders) {
  StartServer();
  RawResponse r = Fetch(RequestText("GET", "/healthz"));
  EXPECT_EQ(r.status, 200);
  ASSERT_NE(r.header("content-type"), nullptr);
  EXPECT_EQ(*r.header("content-type"), "text/plain");
  ASSERT_NE(r.header("content-length"), nullptr);
  EXPECT_EQ(*r.header("content-length"), "2");
  ASSERT_NE(r.header("cache-control"), nullptr);
  EXPECT_EQ(*r.header("cache-control"), "no-store");
  ASSERT_NE(r.header("server"), nullptr);
  EXPECT_EQ(*r.header("server"), "isoguard");
  TestConnection connection(server->port());
  connection.Send(RequestText("DELETE", "/v1/nothing") + RequestText("GET", "/healthz"));
  auto no_content = connection.ReadResponse();
  ASSERT_TRUE(no_content);
  EXPECT_EQ(no_content->status, 204);
  EXPECT_EQ(no_content->body, "");
  auto next = connection.ReadResponse();  // framing intact after a bodyless answer
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "ok");
  RawResponse cached = Fetch(RequestText("GET", "/v1/cached"));
  ASSERT_NE(cached.header("cache-control"), nullptr);
  EXPECT_EQ(*cached.header("cache-control"), "max-age=60");
}

TEST_F(HttpServerTest, EchoesValidRequestIdsAndGeneratesOthers) {
  StartServer();
  RawResponse echoed = Fetch(RequestText("GET", "/healthz", "X-Request-Id: abc.DEF_12-3\r\n"));
  ASSERT_NE(echoed.header("x-request-id"), nullptr);
  EXPECT_EQ(*echoed.header("x-request-id"), "abc.DEF_12-3");

  for (std::string bad :
       {std::string("has space"), std::string(65, 'a'), std::string("a/b"), std::string("")}) {
    RawResponse r = Fetch(RequestText("GET", "/healthz", "X-Request-Id: " + bad + "\r\n"));
    ASSERT_NE(r.header("x-request-id"), nullptr);
    EXPECT_NE(*r.header("x-request-id"), bad);
    EXPECT_TRUE(IsValidRequestId(*r.header("x-request-id")));
  }
  RawResponse a = Fetch(RequestText("GET", "/healthz"));
  RawResponse b = Fetch(RequestText("GET", "/healthz"));
  ASSERT_TRUE(a.header("x-request-id") && b.header("x-request-id"));
  EXPECT_EQ(a.header("x-request-id")->size(), 32u);
  EXPECT_NE(*a.header("x-request-id"), *b.header("x-request-id"));
}

TEST_F(HttpServerTest, HeadersTooLargeAre431) {
  ServerOptions options;
  options.max_header_bytes = 1024;
  StartServer(options);
  RawResponse r =
      Fetch(RequestText("GET", "/healthz", "X-Big: " + std::string(2000, 'x') + "\r\n"));
  EXPECT_EQ(r.status, 431);
  EXPECT_EQ(ProblemBody(r).at("status").as_int64(), 431);
  // Just under the limit is fine.
  EXPECT_EQ(
      Fetch(RequestText("GET", "/healthz", "X-Big: " + std::string(900, 'x') + "\r\n")).status,
      200);
}

TEST_F(HttpServerTest, BodyTooLargeIs413WithoutReadingIt) {
  ServerOptions options;
  options.max_body_bytes = 1000;
  StartServer(options);
  // Only the header is sent: the answer must come from Content-Length alone.
  TestConnection connection(server->port());
  connection.Send("POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n");
  auto r = connection.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(ProblemBody(*r).at("status").as_int64(), 413);
  EXPECT_TRUE(connection.WaitClosed());
  EXPECT_EQ(echo_calls.load(), 0);

  // At the limit: accepted; one past it: refused. A route's own limit overrides the default.
  EXPECT_EQ(Fetch(RequestText("POST", "/v1/echo", {}, std::string(1000, 'a'))).status, 200);
  EXPECT_EQ(Fetch(RequestText("POST", "/v1/echo", {}, std::string(1001, 'a'))).status, 413);
  EXPECT_EQ(Fetch(RequestText("POST", "/v1/small", {}, std::string(10, 'a'))).status, 200);
  EXPECT_EQ(Fetch(RequestText("POST", "/v1/small", {}, std::string(11, 'a'))).status, 413);

  // Chunked bodies are counted as they arrive.
  std::string chunked =
      "POST /v1/small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
      "8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n";
  EXPECT_EQ(Fetch(chunked).status, 413);
  std::string small_chunked =
      "POST /v1/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
  RawResponse ok = Fetch(small_chunked);
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body, "abcde");
}

TEST_F(HttpServerTest, RefusesUnsupportedTransferEncodings) {
  StartServer();
  RawResponse r = Fetch("POST /v1/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nxx");
  EXPECT_TRUE(r.status == 501 || r.status == 400) << r.status;
  RawResponse both = Fetch(
      "POST /v1/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
  EXPECT_TRUE(both.status == 501 || both.status == 400) << both.status;
  EXPECT_EQ(Fetch("GARBAGE\r\n\r\n").status, 400);
}

TEST_F(HttpServerTest, AnswersExpect100Continue) {
  StartServer();
  TestConnection connection(server->port());
  connection.Send(
      "POST /v1/echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
  auto interim = connection.ReadResponse();
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->status, 100);
  connection.Send("hello");
  auto r = connection.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "hello");
}

TEST_F(HttpServerTest, DisconnectsSlowClients) {
  ServerOptions options;
  options.request_read_timeout = 300ms;
  StartServer(options);
  TestConnection connection(server->port());
  auto start = std::chrono::steady_clock::now();
  connection.Send("POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Le");  // then nothing
  EXPECT_TRUE(connection.WaitClosed());
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, 250ms);
  EXPECT_LT(elapsed, 5s);

  // Header complete, body trickling: also bounded by the same deadline.
  TestConnection body_slow(server->port());
  body_slow.Send("POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc");
  EXPECT_TRUE(body_slow.WaitClosed());
  EXPECT_EQ(echo_calls.load(), 0);
}

TEST_F(HttpServerTest, ClosesIdleKeepAliveConnections) {
  ServerOptions options;
  options.idle_timeout = 300ms;
  StartServer(options);
  TestConnection connection(server->port());
  connection.Send(RequestText("GET", "/healthz"));
  ASSERT_TRUE(connection.ReadResponse());
  EXPECT_TRUE(connection.WaitClosed());
}

TEST_F(HttpServerTest, ShedsLoadAtOnceWhenTheQueueIsFull) {
  ServerOptions options;
  options.worker_threads = 1;
  options.max_queued_requests = 1;
  options.retry_after_seconds = 3;
  StartServer(options);
  Gauge& depth = metrics.gauge("isoguard_http_queue_depth", "");

  TestConnection first(server->port());
  first.Send(RequestText("GET", "/v1/held"));
  ASSERT_TRUE(gate.WaitEntered(1));  // the only worker is busy
  TestConnection second(server->port());
  second.Send(RequestText("GET", "/v1/held"));
  ASSERT_TRUE(Eventually([&] { return depth.value() == 1; }));  // the queue is full

  auto start = std::chrono::steady_clock::now();
  RawResponse third = Fetch(RequestText("GET", "/v1/held"));
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(third.status, 503);
  ASSERT_NE(third.header("retry-after"), nullptr);
  EXPECT_EQ(*third.header("retry-after"), "3");
  EXPECT_EQ(ProblemBody(third).at("status").as_int64(), 503);
  EXPECT_LT(elapsed, 2s);
  // Inline routes still answer while the workers are saturated.
  EXPECT_EQ(Fetch(RequestText("GET", "/healthz")).status, 200);

  gate.Open();
  auto a = first.ReadResponse();
  auto b = second.ReadResponse();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->status, 200);
  EXPECT_EQ(b->status, 200);
  EXPECT_EQ(b->body, "released");
  EXPECT_EQ(metrics.counter("isoguard_http_rejected_total", "", {{"reason", "overload"}}).value(),
            1u);
}

TEST_F(HttpServerTest, RefusesConnectionsBeyondTheLimit) {
  ServerOptions options;
  options.max_connections = 2;
  StartServer(options);
  TestConnection a(server->port());
  a.Send(RequestText("GET", "/healthz"));
  ASSERT_TRUE(a.ReadResponse());  // accepted and counted
  TestConnection b(server->port());
  b.Send(RequestText("GET", "/healthz"));
  ASSERT_TRUE(b.ReadResponse());
  TestConnection c(server->port());
  auto refused = c.ReadResponse();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  EXPECT_NE(refused->header("retry-after"), nullptr);
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_EQ(
      metrics.counter("isoguard_http_rejected_total", "", {{"reason", "connections"}}).value(), 1u);
}

TEST_F(HttpServerTest, ThrowingHandlerIs500AndTheServerGoesOn) {
  StartServer();
  RawResponse r = Fetch(RequestText("GET", "/v1/throw"));
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(ProblemBody(r).at("status").as_int64(), 500);
  EXPECT_EQ(r.body.find("secret"), std::string::npos);
  EXPECT_EQ(Fetch(RequestText("GET", "/healthz")).status, 200);
}

TEST_F(HttpServerTest, StopsGracefully) {
  StartServer();
  TestConnection idle(server->port());
  idle.Send(RequestText("GET", "/healthz"));
  ASSERT_TRUE(idle.ReadResponse());  // now idle in keep-alive

  TestConnection busy(server->port());
  busy.Send(RequestText("GET", "/v1/held"));
  ASSERT_TRUE(gate.WaitEntered(1));
  server->Stop();
  EXPECT_TRUE(idle.WaitClosed());  // idle connections are closed at once
  gate.Open();
  auto answer = busy.ReadResponse();  // the in-flight request is still answered
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 200);
  EXPECT_EQ(answer->body, "released");
  ASSERT_NE(answer->header("connection"), nullptr);
  EXPECT_EQ(*answer->header("connection"), "close");
  EXPECT_TRUE(busy.WaitClosed());
  server->Wait();
  TestConnection after(server->port());
  EXPECT_FALSE(after.connected());
}

TEST_F(HttpServerTest, ServesMetricsInExpositionFormat) {
  StartServer();
  EXPECT_EQ(Fetch(RequestText("GET", "/v1/patients/P-1/events/E-1")).status, 200);
  EXPECT_EQ(Fetch(RequestText("GET", "/v1/patients/P-2/events/E-2")).status, 200);
  EXPECT_EQ(Fetch(RequestText("GET", "/nope")).status, 404);
  RawResponse r = Fetch(RequestText("GET", "/metrics"));
  EXPECT_EQ(r.status, 200);
  ASSERT_NE(r.header("content-type"), nullptr);
  EXPECT_EQ(*r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const std::string& text = r.body;
  EXPECT_NE(text.find("isoguard_http_requests_total{route=\"/v1/patients/{patient_id}/events/"
                      "{event_id}\",method=\"GET\",status=\"200\"} 2\n"),
            std::string::npos)
      << text;
  EXPECT_NE(
      text.find(
          "isoguard_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1\n"),
      std::string::npos);
  EXPECT_NE(
      text.find("isoguard_http_request_duration_seconds_bucket{route=\"/v1/patients/"
                "{patient_id}/events/{event_id}\",method=\"GET\",status=\"200\",le=\"+Inf\"} 2\n"),
      std::string::npos);
  EXPECT_NE(text.find("le=\"0.0005\""), std::string::npos);
  EXPECT_NE(text.find("le=\"10\""), std::string::npos);
  EXPECT_NE(text.find("# TYPE isoguard_http_request_duration_seconds histogram\n"),
            std::string::npos);
  EXPECT_NE(text.find("isoguard_http_in_flight_requests "), std::string::npos);
  EXPECT_NE(text.find("isoguard_http_queue_depth "), std::string::npos);
  EXPECT_NE(text.find("isoguard_http_rejected_total{reason=\"overload\"} 0\n"), std::string::npos);
  EXPECT_EQ(text.find("P-1"), std::string::npos);  // never the raw path
  EXPECT_EQ(testing::FirstInvalidExpositionLine(text), "");
}

TEST_F(HttpServerTest, ServesConcurrentClientsOnSeveralThreads) {
  ServerOptions options;
  options.io_threads = 2;
  options.worker_threads = 3;
  StartServer(options);
  constexpr int kClients = 8;
  constexpr int kRequestsEach = 50;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([this, c, &ok] {
      TestConnection connection(server->port());
      for (int i = 0; i < kRequestsEach; ++i) {
        std::string body = std::to_string(c) + "/" + std::to_string(i);
        bool inline_route = i % 5 == 0;
        connection.Send(inline_route ? RequestText("GET", "/healthz")
                                     : RequestText("POST", "/v1/echo", {}, body));
        auto r = connection.ReadResponse();
        if (r && r->status == 200 && r->body == (inline_route ? "ok" : body)) ++ok;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), kClients * kRequestsEach);
  EXPECT_EQ(metrics
                .counter("isoguard_http_requests_total", "",
                         {{"route", "/v1/echo"}, {"method", "POST"}, {"status", "200"}})
                .value(),
            static_cast<uint64_t>(kClients * kRequestsEach * 4 / 5));
  EXPECT_EQ(metrics.gauge("isoguard_http_in_flight_requests", "").value(), 0);
}

TEST_F(HttpServerTest, ManyIdleConnectionsDoNotDelayOthers) {
  StartServer();
  std::vector<TestConnection> idle;
  idle.reserve(1000);
  for (int i = 0; i < 1000; ++i) {
    idle.emplace_back(server->port());
    ASSERT_TRUE(idle.back().connected()) << i;
  }
  idle.back().Send(RequestText("GET", "/healthz"));  // the last one was accepted after the others
  ASSERT_TRUE(idle.back().ReadResponse());
  auto start = std::chrono::steady_clock::now();
  RawResponse r = Fetch(RequestText("GET", "/v1/patients/a/events/b"));
  EXPECT_EQ(r.status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
}

TEST_F(HttpServerTest, RefusesBadOptions) {
  ServerOptions options;
  options.listen = "no-port";
  EXPECT_FALSE(HttpServer::Start(options, router, metrics, logger).ok());
  options.listen = "127.0.0.1:99999";
  EXPECT_FALSE(HttpServer::Start(options, router, metrics, logger).ok());
  options.listen = "127.0.0.1:0";
  options.tls_cert_file = "/nonexistent/cert.pem";
  options.tls_key_file = "/nonexistent/key.pem";
  auto started = HttpServer::Start(options, router, metrics, logger);
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.error().field, "tls_cert_file");
}

// Logs: one JSON line per request with the agreed fields.
TEST(HttpLogTest, WritesOneJsonLinePerRequest) {
  std::string path = ::testing::TempDir() + "isoguard-http-log-" + std::to_string(::getpid());
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_APPEND, 0600);
  ASSERT_GE(fd, 0);
  {
    Router router;
    router.Add("GET", "/v1/items/{id}",
               [](const HttpRequest&, const PathParams&) { return Text("hello"); });
    Metrics metrics;
    Logger logger(fd);
    auto started = HttpServer::Start({.listen = "127.0.0.1:0"}, router, metrics, logger);
    ASSERT_TRUE(started.ok());
    TestConnection connection((*started)->port());
    connection.Send(RequestText("GET", "/v1/items/%41?x=1", "X-Request-Id: log-test-1\r\n"));
    ASSERT_TRUE(connection.ReadResponse());
    (*started)->Stop();
    (*started)->Wait();
  }
  ::close(fd);
  std::ifstream in(path);
  std::string line;
  int requests = 0;
  while (std::getline(in, line)) {
    auto value = boost::json::parse(line);  // every line is one JSON object
    const auto& object = value.as_object();
    ASSERT_TRUE(object.contains("ts") && object.contains("level") && object.contains("msg"));
    std::string ts(object.at("ts").as_string());
    EXPECT_EQ(ts.size(), 24u) << ts;  // 2026-11-26T05:28:15.123Z
    EXPECT_EQ(ts.back(), 'Z');
    if (object.at("msg").as_string() != "request") continue;
    ++requests;
    EXPECT_EQ(object.at("request_id").as_string(), "log-test-1");
    EXPECT_EQ(object.at("method").as_string(), "GET");
    EXPECT_EQ(object.at("route").as_string(), "/v1/items/{id}");
    EXPECT_EQ(object.at("path").as_string(), "/v1/items/A");
    EXPECT_EQ(object.at("status").as_int64(), 200);
    EXPECT_TRUE(object.at("duration_ms").is_number());
    EXPECT_EQ(std::string(object.at("remote").as_string()).rfind("127.0.0.1:", 0), 0u);
    EXPECT_EQ(object.at("bytes").to_number<uint64_t>(), 5u);
  }
  EXPECT_EQ(requests, 1);
  std::filesystem::remove(path);
}

TEST(HttpLogTest, EscapesFieldsAndValidatesRequestIds) {
  std::string line =
      Logger::FormatLine(LogLevel::kWarn, "a \"quoted\"\nmsg",
                         {{"k", "v\\"}, {"n", -3}, {"u", size_t{7}}, {"d", 1.5}, {"b", true}});
  ASSERT_EQ(line.back(), '\n');
  auto object = boost::json::parse(line).as_object();
  EXPECT_EQ(object.at("level").as_string(), "warn");
  EXPECT_EQ(object.at("msg").as_string(), "a \"quoted\"\nmsg");
  EXPECT_EQ(object.at("k").as_string(), "v\\");
  EXPECT_EQ(object.at("n").as_int64(), -3);
  EXPECT_EQ(object.at("u").as_int64(), 7);
  EXPECT_EQ(object.at("d").as_double(), 1.5);
  EXPECT_EQ(object.at("b").as_bool(), true);

  EXPECT_TRUE(IsValidRequestId("a"));
  EXPECT_TRUE(IsValidRequestId(std::string(64, 'z')));
  EXPECT_FALSE(IsValidRequestId(std::string(65, 'z')));
  EXPECT_FALSE(IsValidRequestId(""));
  EXPECT_FALSE(IsValidRequestId("a b"));
  EXPECT_FALSE(IsValidRequestId("é"));
}

// TLS: a throwaway self-signed certificate made with the openssl command line.
class HttpTlsTest : public HttpServerTest {};

TEST_F(HttpTlsTest, ServesOneRequestOverTls) {
  if (std::system("command -v openssl > /dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl binary";
  std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("isoguard-tls-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string cert = (dir / "cert.pem").string();
  std::string key = (dir / "key.pem").string();
  std::string command =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
      "-nodes -days 1 -subj /CN=localhost -keyout " +
      key + " -out " + cert + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0);
  ServerOptions options;
  options.tls_cert_file = cert;
  options.tls_key_file = key;
  StartServer(options);

  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_NE(ctx, nullptr);
  ASSERT_EQ(SSL_CTX_load_verify_locations(ctx, cert.c_str(), nullptr), 1);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  TestConnection connection(server->port());
  ASSERT_TRUE(connection.connected());
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, connection.fd());
  SSL_set1_host(ssl, "localhost");
  ASSERT_EQ(SSL_connect(ssl), 1) << ERR_error_string(ERR_get_error(), nullptr);
  EXPECT_GE(SSL_version(ssl), TLS1_2_VERSION);
  std::string request = RequestText("GET", "/v1/patients/P/events/E", "Connection: close\r\n");
  ASSERT_EQ(SSL_write(ssl, request.data(), static_cast<int>(request.size())),
            static_cast<int>(request.size()));
  std::string received;
  char buffer[4096];
  int n;
  while ((n = SSL_read(ssl, buffer, sizeof buffer)) > 0)
    received.append(buffer, static_cast<size_t>(n));
  EXPECT_EQ(received.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << received;
  EXPECT_NE(received.find("\r\n\r\nP|E|/v1/patients/P/events/E"), std::string::npos) << received;
  SSL_free(ssl);
  SSL_CTX_free(ctx);

  // A client that offers at most TLS 1.1 is refused.
  SSL_CTX* old_ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_security_level(old_ctx, 0);
  SSL_CTX_set_max_proto_version(old_ctx, TLS1_1_VERSION);
  TestConnection old_connection(server->port());
  SSL* old_ssl = SSL_new(old_ctx);
  SSL_set_fd(old_ssl, old_connection.fd());
  EXPECT_NE(SSL_connect(old_ssl), 1);
  SSL_free(old_ssl);
  SSL_CTX_free(old_ctx);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace isoguard::server
