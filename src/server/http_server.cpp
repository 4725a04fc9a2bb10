// The only translation unit that includes Boost.Beast/Asio (compile time matters for CI).
//
// Shape: one io_context run by `io_threads` threads; each connection is a Session on its own
// strand, reading one request at a time (pipelined requests wait in its buffer and are
// answered in order). A complete request is routed; its handler runs on the io thread (routes
// marked inline) or on the WorkerPool, whose queue is bounded. The answer is posted back to the
// session's strand and written there.
#include "server/http_server.h"

#include <algorithm>
#include <atomic>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "server/problem.h"
#include "server/url.h"

namespace isoguard::server {
namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

// A fixed pool of threads behind a bounded queue. TryPost never blocks: a full queue is the
// caller's signal to shed load.
class WorkerPool {
 public:
  WorkerPool(unsigned threads, size_t max_queued, Gauge& depth)
      : max_queued_(max_queued), depth_(depth) {
    for (unsigned i = 0; i < std::max(1u, threads); ++i) {
      threads_.emplace_back([this] { Run(); });
    }
  }
  ~WorkerPool() { Shutdown(); }

  bool TryPost(std::function<void()> task) {
    {
      std::lock_guard lock(mu_);
      if (stopped_ || queue_.size() >= max_queued_) return false;
      queue_.push_back(std::move(task));
      depth_.Set(static_cast<double>(queue_.size()));
    }
    cv_.notify_one();
    return true;
  }

  // Runs what is queued, then joins the threads.
  void Shutdown() {
    {
      std::lock_guard lock(mu_);
      if (stopped_ && threads_.empty()) return;
      stopped_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void Run() {
    while (true) {
      std::function<void()> task;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stopped_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
        depth_.Set(static_cast<double>(queue_.size()));
      }
      task();  // tasks catch their own exceptions
    }
  }

  const size_t max_queued_;
  Gauge& depth_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopped_ = false;
  std::vector<std::thread> threads_;
};

std::string_view MethodLabel(std::string_view method) {
  static constexpr std::string_view kKnown[] = {"GET",    "HEAD",    "POST", "PUT",
                                                "DELETE", "OPTIONS", "PATCH"};
  for (auto known : kKnown) {
    if (method == known) return known;
  }
  return "other";  // a client must not be able to mint label values
}

std::string EndpointText(const tcp::endpoint& endpoint) {
  auto address = endpoint.address();
  std::string host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  return host + ":" + std::to_string(endpoint.port());
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool IsQuietError(const beast::error_code& ec) {
  // The peer went away or took too long: there is no one to answer.
  return ec == http::error::end_of_stream || ec == http::error::partial_message ||
         ec == net::error::eof || ec == net::error::operation_aborted ||
         ec == net::error::connection_reset || ec == beast::error::timeout ||
         ec == net::ssl::error::stream_truncated || ec == net::error::broken_pipe ||
         ec == net::error::bad_descriptor;
}

}  // namespace

class SessionBase : public std::enable_shared_from_this<SessionBase> {
 public:
  virtual ~SessionBase() = default;
  virtual void CloseIfIdle() = 0;
};

struct HttpServer::Impl {
  Impl(ServerOptions o, const Router& r, Metrics& m, Logger& l)
      : options(std::move(o)),
        router(r),
        metrics(m),
        logger(l),
        in_flight(
            m.gauge("isoguard_http_in_flight_requests", "Requests read and not yet answered.")),
        queue_depth(m.gauge("isoguard_http_queue_depth", "Requests waiting for a worker thread.")),
        rejected_overload(m.counter("isoguard_http_rejected_total",
                                    "Requests or connections refused to protect the server.",
                                    {{"reason", "overload"}})),
        rejected_connections(m.counter("isoguard_http_rejected_total",
                                       "Requests or connections refused to protect the server.",
                                       {{"reason", "connections"}})),
        ioc(static_cast<int>(std::max(1u, options.io_threads))),
        acceptor(net::make_strand(ioc)),
        work(net::make_work_guard(ioc)) {}

  ~Impl();

  void Accept();
  void OnAccept(beast::error_code ec, tcp::socket socket);
  void RejectConnection(tcp::socket socket);
  void Register(SessionBase* session, std::weak_ptr<SessionBase> weak) {
    std::lock_guard lock(sessions_mu);
    sessions.emplace(session, std::move(weak));
  }
  void Unregister(SessionBase* session) {
    std::lock_guard lock(sessions_mu);
    sessions.erase(session);
  }
  void RecordRequest(std::string_view route, std::string_view method, int status, double seconds) {
    std::string status_text = std::to_string(status);
    metrics
        .counter("isoguard_http_requests_total", "HTTP requests answered.",
                 {{"route", std::string(route)},
                  {"method", std::string(method)},
                  {"status", status_text}})
        .Inc();
    metrics
        .histogram("isoguard_http_request_duration_seconds",
                   "Time from a request's first byte to its answer being written out.",
                   {{"route", std::string(route)},
                    {"method", std::string(method)},
                    {"status", status_text}})
        .Observe(seconds);
  }

  ServerOptions options;
  const Router& router;
  Metrics& metrics;
  Logger& logger;
  Gauge& in_flight;
  Gauge& queue_depth;
  Counter& rejected_overload;
  Counter& rejected_connections;

  // State that sessions touch from their destructors: declared before the io_context, so that
  // it is destroyed after any handler the io_context still holds.
  std::atomic<bool> stopping{false};
  std::atomic<size_t> connections{0};
  std::mutex sessions_mu;
  std::unordered_map<SessionBase*, std::weak_ptr<SessionBase>> sessions;
  std::optional<WorkerPool> workers;
  std::optional<ssl::context> tls;

  net::io_context ioc;
  tcp::acceptor acceptor;
  std::optional<net::signal_set> signals;
  net::executor_work_guard<net::io_context::executor_type> work;
  std::vector<std::thread> io_threads;
  std::mutex wait_mu;
  bool joined = false;
  uint16_t port = 0;
};

namespace {

template <class Stream>
class Session : public SessionBase {
 public:
  using Impl = HttpServer::Impl;

  Session(Impl& server, tcp::socket&& socket,
          std::string remote) requires std::same_as<Stream, beast::tcp_stream>
      : server_(server), stream_(std::move(socket)), remote_(std::move(remote)) {}
  Session(Impl& server, tcp::socket&& socket, std::string remote,
          ssl::context& tls) requires(!std::same_as<Stream, beast::tcp_stream>)
      : server_(server), stream_(std::move(socket), tls), remote_(std::move(remote)) {}

  ~Session() override {
    server_.Unregister(this);
    server_.connections.fetch_sub(1);
  }

  void Run() {
    server_.Register(this, weak_from_this());
    net::dispatch(stream_.get_executor(), [self = Self()] { self->Begin(); });
  }

  void CloseIfIdle() override {
    net::post(stream_.get_executor(), [self = Self()] {
      if (self->idle_) beast::get_lowest_layer(self->stream_).socket().cancel();
    });
  }

 private:
  std::shared_ptr<Session> Self() { return std::static_pointer_cast<Session>(shared_from_this()); }
  beast::tcp_stream& Lowest() { return beast::get_lowest_layer(stream_); }

  void Begin() {
    if constexpr (std::same_as<Stream, beast::tcp_stream>) {
      WaitForRequest();
    } else {
      Lowest().expires_after(server_.options.request_read_timeout);
      stream_.async_handshake(ssl::stream_base::server, [self = Self()](beast::error_code ec) {
        if (ec) return self->Close(false);
        self->WaitForRequest();
      });
    }
  }

  // Waits up to the idle timeout for a request's first byte; then the whole request has
  // request_read_timeout to arrive.
  void WaitForRequest() {
    if (server_.stopping.load()) return Close(true);
    if (buffer_.size() > 0) return ReadHeader();
    idle_ = true;
    Lowest().expires_after(server_.options.idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096), [self = Self()](beast::error_code ec, size_t n) {
      self->idle_ = false;
      if (ec) return self->Close(false);
      self->buffer_.commit(n);
      self->ReadHeader();
    });
  }

  void ReadHeader() {
    start_ = Clock::now();
    request_ = HttpRequest{};
    request_.remote = remote_;
    route_ = RouteMatch{};
    counted_in_flight_ = false;
    parser_.emplace();
    parser_->header_limit(
        static_cast<uint32_t>(std::min<size_t>(server_.options.max_header_bytes, UINT32_MAX)));
    // No body limit yet: the route decides it, once the header is in (with one here, Beast would
    // refuse a large Content-Length while reading the header, before we know the route).
    parser_->body_limit(boost::none);
    Lowest().expires_after(server_.options.request_read_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = Self()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    if (ec == http::error::header_limit) {
      return RespondAndClose(HeadersTooLargeProblem(server_.options.max_header_bytes));
    }
    if (ec == http::error::body_limit) {
      return RespondAndClose(PayloadTooLargeProblem(server_.options.max_body_bytes));
    }
    if (ec == http::error::bad_transfer_encoding) {
      return RespondAndClose(
          Problem(501, "Not implemented", "Only the chunked transfer coding is supported."));
    }
    if (ec && IsQuietError(ec)) return Close(false);
    if (ec) {
      return RespondAndClose(
          Problem(400, "Bad request", "The request is not valid HTTP/1.1: " + ec.message()));
    }
    const auto& header = parser_->get();
    request_.method = std::string(header.method_string());
    request_.target = std::string(header.target());
    for (const auto& field : header) {
      request_.headers.emplace_back(ToLower(field.name_string()), std::string(field.value()));
    }
    request_.request_id = RequestIdFor(request_.header("x-request-id"));
    if (!server_.options.trusted_proxies.empty()) {
      std::string forwarded;
      for (const auto& [name, value] : request_.headers) {
        if (name == "x-forwarded-for") forwarded += (forwarded.empty() ? "" : ",") + value;
      }
      request_.client = ClientAddress(remote_, forwarded, server_.options.trusted_proxies);
    }
    auto [raw_path, raw_query] = SplitTarget(request_.target);
    if (auto decoded = PercentDecode(raw_path)) {
      request_.path = std::move(*decoded);
    } else {
      request_.path = std::string(raw_path);
    }
    route_ = server_.router.Match(request_.method, raw_path);

    if (header.count(http::field::transfer_encoding) > 0 && !parser_->chunked()) {
      return RespondAndClose(
          Problem(501, "Not implemented", "Only the chunked transfer coding is supported."));
    }
    if (const std::string* te = request_.header("transfer-encoding");
        te != nullptr && ToLower(*te) != "chunked") {
      return RespondAndClose(
          Problem(501, "Not implemented", "Only the chunked transfer coding is supported."));
    }
    auto query = ParseQuery(raw_query);
    if (!query) {
      return RespondAndClose(
          Problem(400, "Bad input", "The query string is not percent-encoded UTF-8.", "query"));
    }
    request_.query = std::move(*query);

    const size_t limit = BodyLimit();
    if (auto length = parser_->content_length(); length && *length > limit) {
      return RespondAndClose(PayloadTooLargeProblem(limit));
    }
    if (parser_->is_done()) return OnRequest();
    if (route_.handler == nullptr) {
      // 404/405/400 with a body still to come: answer now and close rather than read it.
      return RespondAndClose(*route_.problem);
    }
    parser_->body_limit(limit);
    auto read_body = [self = Self()] {
      http::async_read(self->stream_, self->buffer_, *self->parser_,
                       [self](beast::error_code read_ec, size_t) { self->OnBody(read_ec); });
    };
    if (const std::string* expect = request_.header("expect");
        expect != nullptr && ToLower(*expect) == "100-continue") {
      auto interim = std::make_shared<http::response<http::empty_body>>(http::status::continue_,
                                                                        header.version());
      http::async_write(stream_, *interim,
                        [self = Self(), interim, read_body](beast::error_code write_ec, size_t) {
                          if (write_ec) return self->Close(false);
                          read_body();
                        });
      return;
    }
    read_body();
  }

  void OnBody(beast::error_code ec) {
    if (ec == http::error::body_limit) return RespondAndClose(PayloadTooLargeProblem(BodyLimit()));
    if (ec && IsQuietError(ec)) return Close(false);
    if (ec) {
      return RespondAndClose(
          Problem(400, "Bad request", "The request body could not be read: " + ec.message()));
    }
    OnRequest();
  }

  void OnRequest() {
    auto message = parser_->release();
    keep_alive_ = message.keep_alive();
    version_ = message.version();
    request_.body = std::move(message.body());
    if (route_.handler == nullptr) return Respond(*route_.problem);

    counted_in_flight_ = true;
    server_.in_flight.Inc();
    if (route_.options.inline_on_io_thread) return Respond(RunHandler());

    auto guard = std::make_shared<net::executor_work_guard<net::io_context::executor_type>>(
        server_.ioc.get_executor());
    bool queued = server_.workers->TryPost([self = Self(), guard] {
      HttpResponse response = self->RunHandler();
      net::post(self->stream_.get_executor(),
                [self, guard, response = std::move(response)]() mutable {
                  self->Respond(std::move(response));
                });
    });
    if (!queued) {
      server_.rejected_overload.Inc();
      Respond(UnavailableProblem("The server is busy; retry after " +
                                     std::to_string(server_.options.retry_after_seconds) + " s.",
                                 server_.options.retry_after_seconds));
    }
  }

  size_t BodyLimit() const {
    return route_.options.max_body_bytes != 0 ? route_.options.max_body_bytes
                                              : server_.options.max_body_bytes;
  }

  HttpResponse RunHandler() {
    try {
      return (*route_.handler)(request_, route_.params);
    } catch (const std::exception& e) {
      server_.logger.Error(
          "handler threw",
          {{"request_id", request_.request_id}, {"route", route_.pattern}, {"error", e.what()}});
    } catch (...) {
      server_.logger.Error("handler threw", {{"request_id", request_.request_id},
                                             {"route", route_.pattern},
                                             {"error", "unknown exception"}});
    }
    return Problem(500, "Internal Server Error",
                   "The server could not complete the request; it has been logged.");
  }

  void RespondAndClose(HttpResponse response) {
    keep_alive_ = false;
    if (parser_ && parser_->is_header_done()) version_ = parser_->get().version();
    if (request_.request_id.empty()) request_.request_id = NewRequestId();
    Respond(std::move(response));
  }

  void Respond(HttpResponse response) {
    SetProblemInstance(response, request_.request_id);
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(version_);
    res->result(static_cast<unsigned>(response.status));
    res->set(http::field::server, "isoguard");
    // 1xx, 204 and 304 carry no body (Beast refuses to frame one).
    const bool bodyless = response.status < 200 || response.status == 204 || response.status == 304;
    if (bodyless) {
      response.body.clear();
    } else {
      res->set(http::field::content_type, response.content_type);
    }
    bool has_cache_control = false;
    bool has_retry_after = false;
    for (const auto& [name, value] : response.headers) {
      std::string lower = ToLower(name);
      if (lower == "cache-control") has_cache_control = true;
      if (lower == "retry-after") has_retry_after = true;
      if (lower == "content-length" || lower == "transfer-encoding" || lower == "connection" ||
          lower == "x-request-id") {
        continue;  // the server's to set
      }
      res->insert(name, value);
    }
    if (!has_cache_control) res->set(http::field::cache_control, "no-store");
    if (response.status == 503 && !has_retry_after) {
      res->set(http::field::retry_after, std::to_string(server_.options.retry_after_seconds));
    }
    res->set("X-Request-Id", request_.request_id);
    const size_t body_bytes = response.body.size();
    res->body() = std::move(response.body);
    res->keep_alive(keep_alive_ && !server_.stopping.load());
    res->prepare_payload();

    const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    server_.RecordRequest(route_.pattern, MethodLabel(request_.method), response.status, seconds);
    if (counted_in_flight_) {
      server_.in_flight.Dec();
      counted_in_flight_ = false;
    }
    server_.logger.Info("request", {{"request_id", request_.request_id},
                                    {"method", request_.method},
                                    {"route", route_.pattern},
                                    {"path", request_.path},
                                    {"status", response.status},
                                    {"duration_ms", seconds * 1000.0},
                                    {"remote", remote_},
                                    {"client", request_.client_address()},
                                    {"bytes", body_bytes}});

    Lowest().expires_after(server_.options.idle_timeout);
    http::async_write(stream_, *res, [self = Self(), res](beast::error_code ec, size_t) {
      if (ec) return self->Close(false);
      if (!res->keep_alive()) return self->Close(true);
      self->WaitForRequest();
    });
  }

  // Ends the connection; `graceful` sends TLS close_notify / a TCP FIN first.
  void Close(bool graceful) {
    beast::error_code ignored;
    if constexpr (!std::same_as<Stream, beast::tcp_stream>) {
      if (graceful) {
        Lowest().expires_after(std::chrono::seconds(1));
        stream_.async_shutdown([self = Self()](beast::error_code) {
          beast::error_code ignored2;
          self->Lowest().socket().close(ignored2);
        });
        return;
      }
    }
    if (graceful) Lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
    Lowest().socket().close(ignored);
  }

  Impl& server_;
  Stream stream_;
  std::string remote_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool idle_ = false;
  bool keep_alive_ = true;
  unsigned version_ = 11;
  bool counted_in_flight_ = false;
  Clock::time_point start_ = Clock::now();
  HttpRequest request_;
  RouteMatch route_;
};

}  // namespace

HttpServer::Impl::~Impl() = default;

void HttpServer::Impl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void HttpServer::Impl::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (stopping.load() || ec == net::error::operation_aborted) return;
  if (ec) {
    // Usually out of file descriptors: wait a little rather than spin.
    logger.Warn("accept failed", {{"error", ec.message()}});
    auto timer =
        std::make_shared<net::steady_timer>(acceptor.get_executor(), std::chrono::milliseconds(50));
    timer->async_wait([this, timer](beast::error_code) {
      if (!stopping.load()) Accept();
    });
    return;
  }
  beast::error_code endpoint_ec;
  std::string remote = EndpointText(socket.remote_endpoint(endpoint_ec));
  if (connections.fetch_add(1) >= options.max_connections) {
    connections.fetch_sub(1);
    rejected_connections.Inc();
    RejectConnection(std::move(socket));
  } else if (tls) {
    std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(*this, std::move(socket),
                                                                    std::move(remote), *tls)
        ->Run();
  } else {
    std::make_shared<Session<beast::tcp_stream>>(*this, std::move(socket), std::move(remote))
        ->Run();
  }
  Accept();
}

void HttpServer::Impl::RejectConnection(tcp::socket socket) {
  auto held = std::make_shared<tcp::socket>(std::move(socket));
  if (tls) {
    // No handshake for a connection we cannot serve: just close it.
    beast::error_code ignored;
    held->close(ignored);
    return;
  }
  HttpResponse problem = UnavailableProblem(
      "Too many connections; retry after " + std::to_string(options.retry_after_seconds) + " s.",
      options.retry_after_seconds);
  auto text = std::make_shared<std::string>(
      "HTTP/1.1 503 Service Unavailable\r\nServer: isoguard\r\nConnection: close\r\n"
      "Cache-Control: no-store\r\nRetry-After: " +
      std::to_string(options.retry_after_seconds) + "\r\nContent-Type: " + problem.content_type +
      "\r\nContent-Length: " + std::to_string(problem.body.size()) + "\r\n\r\n" + problem.body);
  net::async_write(*held, net::buffer(*text), [held, text](beast::error_code, size_t) {
    beast::error_code ignored;
    held->shutdown(tcp::socket::shutdown_send, ignored);
    held->close(ignored);
  });
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  Stop();
  Wait();
}

Result<std::unique_ptr<HttpServer>> HttpServer::Start(ServerOptions options, const Router& router,
                                                      Metrics& metrics, Logger& logger) {
  // host:port, host possibly "[v6]".
  const std::string listen = options.listen;
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return Error::BadInput("listen address must be host:port, got " + listen, "listen");
  }
  std::string host = listen.substr(0, colon);
  std::string port_text = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host == "*") host = "0.0.0.0";
  unsigned long port_number = 0;
  try {
    size_t used = 0;
    port_number = std::stoul(port_text, &used);
    if (used != port_text.size() || port_number > 65535) throw std::out_of_range("port");
  } catch (const std::exception&) {
    return Error::BadInput("listen port must be 0-65535, got " + port_text, "listen");
  }

  auto impl = std::make_unique<Impl>(std::move(options), router, metrics, logger);
  const ServerOptions& o = impl->options;
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return Error::BadInput("TLS needs both a certificate file and a key file", "tls_cert_file");
  }
  if (!o.tls_cert_file.empty()) {
    try {
      impl->tls.emplace(ssl::context::tls_server);
      impl->tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                             ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                             ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
      SSL_CTX_set_min_proto_version(impl->tls->native_handle(), TLS1_2_VERSION);
      impl->tls->use_certificate_chain_file(o.tls_cert_file);
      impl->tls->use_private_key_file(o.tls_key_file, ssl::context::pem);
    } catch (const std::exception& e) {
      return Error::BadInput(std::string("cannot load the TLS certificate or key: ") + e.what(),
                             "tls_cert_file");
    }
  }

  beast::error_code ec;
  tcp::resolver resolver(impl->ioc);
  auto endpoints =
      resolver.resolve(host, std::to_string(port_number), tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    return Error::BadInput("cannot resolve listen host " + host + ": " + ec.message(), "listen");
  }
  tcp::endpoint endpoint = endpoints.begin()->endpoint();
  auto& acceptor = impl->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return Error::Unavailable("cannot listen on " + listen + ": " + ec.message(), "listen");
  }
  impl->port = acceptor.local_endpoint(ec).port();

  impl->workers.emplace(o.worker_threads, o.max_queued_requests, impl->queue_depth);
  impl->Accept();
  for (unsigned i = 0; i < std::max(1u, o.io_threads); ++i) {
    impl->io_threads.emplace_back([p = impl.get()] {
      while (true) {
        try {
          p->ioc.run();
          return;
        } catch (const std::exception& e) {
          p->logger.Error("io thread caught an exception", {{"error", e.what()}});
        }
      }
    });
  }
  logger.Info("listening",
              {{"address", EndpointText(tcp::endpoint(endpoint.address(), impl->port))},
               {"tls", impl->tls.has_value()}});
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

uint16_t HttpServer::port() const { return impl_->port; }

void HttpServer::Stop() {
  Impl& impl = *impl_;
  if (impl.stopping.exchange(true)) return;
  net::post(impl.acceptor.get_executor(), [p = &impl] {
    beast::error_code ignored;
    p->acceptor.close(ignored);
    if (p->signals) p->signals->cancel(ignored);
  });
  std::vector<std::shared_ptr<SessionBase>> live;
  {
    std::lock_guard lock(impl.sessions_mu);
    for (auto& [pointer, weak] : impl.sessions) {
      if (auto session = weak.lock()) live.push_back(std::move(session));
    }
  }
  for (auto& session : live) session->CloseIfIdle();
  impl.work.reset();
}

void HttpServer::Wait() {
  Impl& impl = *impl_;
  std::lock_guard lock(impl.wait_mu);
  if (impl.joined) return;
  for (auto& t : impl.io_threads) t.join();
  impl.io_threads.clear();
  // Every queued task held a work guard, so the queue is empty by now.
  impl.workers->Shutdown();
  impl.joined = true;
  impl.logger.Info("stopped", {});
}

void HttpServer::StopOnSignals() {
  net::post(impl_->acceptor.get_executor(), [this] {
    Impl& impl = *impl_;
    if (impl.stopping.load() || impl.signals) return;
    impl.signals.emplace(impl.ioc, SIGINT, SIGTERM);
    impl.signals->async_wait([this](beast::error_code ec, int signal_number) {
      if (ec) return;
      impl_->logger.Info("signal received; stopping", {{"signal", signal_number}});
      Stop();
    });
  });
}

}  // namespace isoguard::server
