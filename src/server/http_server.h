// The HTTP/1.1 server of `isoguard serve`: accepts connections (plain or TLS), reads requests
// within limits, routes them (Router), runs handlers on a bounded worker pool, and writes the
// answers with the service's standard headers, a log line and metrics for each request.
//
// This header is free of Boost.Beast/Asio; the whole transport lives in http_server.cpp.
//
// Limits (TigerBeetle style: everything has one): header bytes (431), body bytes per route or
// by default (413, judged from Content-Length before the body is read), the time for a whole
// request to arrive once its first byte has (the connection is closed: slow-loris defence), the
// idle time of a keep-alive connection, the number of connections (beyond it: 503 and close),
// and the queue in front of the workers (when full: 503 with Retry-After at once, without
// waiting — overload must never slow everyone down).
//
// Thread-safety: Start, port, Stop, Wait and StopOnSignals may be called from any thread. The
// Router, Metrics and Logger passed to Start must outlive the server.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"
#include "server/client_address.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/router.h"

namespace isoguard::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:8080";  // host:port; port 0 picks a free one (see port())
  std::string tls_cert_file{};            // PEM chain; with tls_key_file: TLS 1.2+ only
  std::string tls_key_file{};             // both empty: plain HTTP
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1 << 20;                        // routes may set their own (RouteOptions)
  std::chrono::milliseconds request_read_timeout{10000};  // first byte to last byte
  std::chrono::milliseconds idle_timeout{60000};          // keep-alive wait; also write timeout
  size_t max_connections = 10000;
  unsigned io_threads = 1;
  unsigned worker_threads = 4;
  size_t max_queued_requests = 512;  // requests waiting for a worker, beyond those running
  int retry_after_seconds = 1;       // the Retry-After of overload answers
  // Peers whose X-Forwarded-For names the client (client_address.h); none by default.
  std::vector<IpNetwork> trusted_proxies{};
};

class HttpServer {
 public:
  // Binds, listens and starts the threads. Fails (kBadInput) on a malformed listen address or
  // unreadable TLS files, (kUnavailable) when the address cannot be bound.
  static Result<std::unique_ptr<HttpServer>> Start(ServerOptions options, const Router& router,
                                                   Metrics& metrics, Logger& logger);

  // Stops gracefully and waits.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (the chosen one when the listen port was 0).
  uint16_t port() const;

  // Begins a graceful stop and returns at once: no new connections are accepted, idle
  // connections are closed, requests being read or handled are finished and answered (with
  // Connection: close). Idempotent.
  void Stop();

  // Returns once the server has stopped (after Stop, from any thread or a signal) and every
  // thread is joined. Idempotent.
  void Wait();

  // SIGTERM and SIGINT call Stop().
  void StopOnSignals();

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace isoguard::server
