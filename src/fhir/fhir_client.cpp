// The FhirFetcher of `isoguard serve` (fhir_api.h): one GET per call over http:// or https://.
// HTTP/1.0 with `Connection: close`, so the answer is never chunked and ends when the server
// closes; every step (resolving the name included) shares one deadline.
//
// https is plain OpenSSL over the same non-blocking socket and poll loop as http (no Asio or
// Beast here: this file stays small and quick to compile). The peer's certificate is verified
// against the system trust store or the --fhir-ca-file bundle, and against the URL's host
// (a DNS name by SSL_set1_host and SNI, an IP literal by its iPAddress entry).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "fhir/fhir_api.h"
#include "server/webhook_sender.h"

namespace isoguard::fhir {
namespace {

// The EHR answers one search: a page of Observations or MedicationRequests. 10 MiB is far
// above any page the prefetch templates ask for (_count=1, the active orders).
constexpr size_t kMaxFetchBytes = size_t{10} << 20;
// A PEM bundle larger than this is not a CA bundle (the whole Mozilla set is ~220 KiB).
constexpr uintmax_t kMaxCaFileBytes = uintmax_t{4} << 20;
constexpr std::string_view kField = "fhirServer";

using Clock = std::chrono::steady_clock;

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }
  // Gives up the descriptor (the caller owns it now).
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

int MillisLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Waits for `events` on the socket until the deadline: false on timeout.
bool Wait(int fd, short events, Clock::time_point deadline) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int ms = MillisLeft(deadline);
    if (ms == 0) return false;
    const int n = ::poll(&p, 1, ms);
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return false;
  }
}

Error Unavailable(std::string message) {
  return Error::Unavailable(std::move(message), std::string(kField));
}

// "[::1]" -> "::1": getaddrinfo and the certificate's iPAddress take the bare address.
std::string BareHost(const std::string& host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    return host.substr(1, host.size() - 2);
  }
  return host;
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

using AddressList = std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)>;

// getaddrinfo within the deadline. It cannot be interrupted, so a name is resolved on a thread
// of its own that the caller stops waiting for at the deadline (the thread then ends on its
// own, with the resolver's timeout, and frees what it found). An address literal needs no
// lookup and is answered at once.
Result<AddressList> Resolve(const std::string& host, const std::string& port,
                            Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  auto lookup = [hints](const std::string& h, const std::string& p) {
    addrinfo* found = nullptr;
    if (::getaddrinfo(h.c_str(), p.c_str(), &hints, &found) != 0) found = nullptr;
    return AddressList(found, ::freeaddrinfo);
  };
  if (IsIpLiteral(host)) {
    AddressList list = lookup(host, port);
    if (list == nullptr) return Unavailable("cannot resolve " + host);
    return list;
  }
  struct Shared {
    std::mutex mu;
    std::condition_variable done_cv;
    bool done = false;
    AddressList list{nullptr, ::freeaddrinfo};
  };
  auto shared = std::make_shared<Shared>();
  std::thread([shared, host, port, lookup] {
    AddressList list = lookup(host, port);
    std::lock_guard lock(shared->mu);
    shared->list = std::move(list);
    shared->done = true;
    shared->done_cv.notify_all();
  }).detach();
  std::unique_lock lock(shared->mu);
  if (!shared->done_cv.wait_until(lock, deadline, [&] { return shared->done; })) {
    return Unavailable("timed out resolving " + host);
  }
  if (shared->list == nullptr) return Unavailable("cannot resolve " + host);
  return std::move(shared->list);
}

// Connects to the first address of `host` that accepts before the deadline.
Result<int> Connect(const std::string& host, const std::string& port, Clock::time_point deadline) {
  auto resolved = Resolve(host, port, deadline);
  if (!resolved.ok()) return resolved.error();
  AddressList list = std::move(*resolved);
  const addrinfo* found = list.get();
  bool timed_out = false;
  for (const addrinfo* a = found; a != nullptr && !timed_out; a = a->ai_next) {
    Socket s(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol));
    if (s.fd() < 0) continue;
    const int rc = ::connect(s.fd(), a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno != EINPROGRESS) continue;
    if (rc != 0) {
      int err = 0;
      socklen_t len = sizeof err;
      if (!Wait(s.fd(), POLLOUT, deadline)) {
        timed_out = true;
        continue;
      }
      if (::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) continue;
    }
    return s.Release();
  }
  return Unavailable(timed_out ? "timed out connecting to " + host
                               : "cannot connect to " + host + ":" + port);
}

// The first error of OpenSSL's queue for this thread, and the queue emptied.
std::string TlsErrorText() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "the connection broke";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

using SslCtxPtr = std::shared_ptr<SSL_CTX>;

// The client context: TLS 1.2 or later, the peer verified against `ca_file` or, when empty,
// the system trust store.
Result<SslCtxPtr> MakeClientContext(const std::string& ca_file) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!ctx) return Error::Internal("TLS is unavailable: " + TlsErrorText());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  if (ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
      return Error::Internal("cannot use the system trust store: " + TlsErrorText());
    }
    return ctx;
  }
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(ca_file, ec);
  if (ec) return Error::BadInput("cannot read " + ca_file + ": " + ec.message(), "--fhir-ca-file");
  if (size > kMaxCaFileBytes) {
    return Error::BadInput(ca_file + " is larger than 4 MiB: not a PEM CA bundle",
                           "--fhir-ca-file");
  }
  ERR_clear_error();
  if (SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) != 1) {
    return Error::BadInput(
        ca_file + " holds no PEM certificate OpenSSL can read: " + TlsErrorText(),
        "--fhir-ca-file");
  }
  return ctx;
}

// The value of header `name` (lower case) in the head of an answer, or nullopt.
std::optional<std::string_view> HeaderValue(std::string_view head, std::string_view name) {
  size_t at = head.find("\r\n");
  while (at != std::string_view::npos && at + 2 < head.size()) {
    const size_t start = at + 2;
    const size_t end = head.find("\r\n", start);
    std::string_view line = head.substr(start, end == std::string_view::npos ? end : end - start);
    const size_t colon = line.find(':');
    if (colon == name.size()) {
      bool same = true;
      for (size_t i = 0; i < colon && same; ++i) {
        same = std::tolower(static_cast<unsigned char>(line[i])) == name[i];
      }
      if (same) {
        std::string_view v = line.substr(colon + 1);
        while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
        while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
        return v;
      }
    }
    at = end;
  }
  return std::nullopt;
}

// Whether `response` holds a whole answer by its Content-Length: then the reading stops even if
// the server keeps the connection open despite `Connection: close`.
bool WholeByLength(const std::string& response) {
  const size_t head_end = response.find("\r\n\r\n");
  if (head_end == std::string::npos) return false;
  auto length = HeaderValue(std::string_view(response).substr(0, head_end), "content-length");
  size_t expected = 0;
  if (!length || std::from_chars(length->data(), length->data() + length->size(), expected).ec !=
                     std::errc()) {
    return false;
  }
  return response.size() - head_end - 4 >= expected;
}

// OpenSSL writes to its socket with write(), which raises SIGPIPE when the server has reset
// the connection, and nothing in the server ignores that signal (it would end the process).
// This blocks SIGPIPE in the calling thread for the guard's life and consumes one raised
// meanwhile (unless one was already pending), so that the write fails with EPIPE instead.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeBlock() {
    if (!was_pending_) {
      sigset_t pending;
      sigemptyset(&pending);
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        const timespec now{0, 0};
        while (sigtimedwait(&pipe_, nullptr, &now) == -1 && errno == EINTR) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t pipe_{}, old_{};
  bool was_pending_ = false;
};

// One connection's byte stream, plain or TLS, with the deadline on every step.
class Stream {
 public:
  Stream(int fd, Clock::time_point deadline) : socket_(fd), deadline_(deadline) {}
  ~Stream() {
    if (ssl_ != nullptr) SSL_free(ssl_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  Status Handshake(SSL_CTX* ctx, const std::string& host) {
    ERR_clear_error();
    ssl_ = SSL_new(ctx);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, socket_.fd()) != 1) {
      return Error::Internal("TLS is unavailable: " + TlsErrorText());
    }
    if (IsIpLiteral(host)) {
      // No SNI for an address (RFC 6066 3); the certificate must carry it as an iPAddress.
      if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), host.c_str()) != 1) {
        return Unavailable("cannot check the certificate against " + host);
      }
    } else {
      SSL_set_hostflags(ssl_, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      if (SSL_set_tlsext_host_name(ssl_, host.c_str()) != 1 ||
          SSL_set1_host(ssl_, host.c_str()) != 1) {
        return Unavailable("cannot check the certificate against " + host);
      }
    }
    for (;;) {
      ERR_clear_error();
      const int rc = SSL_connect(ssl_);
      if (rc == 1) return {};
      const int e = SSL_get_error(ssl_, rc);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (!Wait(socket_.fd(), e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline_)) {
          return Unavailable("timed out in the TLS handshake with " + host);
        }
        continue;
      }
      const long verify = SSL_get_verify_result(ssl_);
      if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        ERR_clear_error();
        return Unavailable("host name mismatch: the FHIR server's certificate is not for " + host);
      }
      if (verify != X509_V_OK) {
        ERR_clear_error();
        return Unavailable("the FHIR server's certificate is not trusted (" +
                           std::string(X509_verify_cert_error_string(verify)) + ")");
      }
      return Unavailable("the TLS handshake with " + host + " failed: " + TlsErrorText());
    }
  }

  Status SendAll(std::string_view data) {
    while (!data.empty()) {
      if (ssl_ != nullptr) {
        ERR_clear_error();
        size_t n = 0;
        if (SSL_write_ex(ssl_, data.data(), data.size(), &n) == 1) {
          data.remove_prefix(n);
          continue;
        }
        const int e = SSL_get_error(ssl_, 0);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
          return Unavailable("the TLS connection broke: " + TlsErrorText());
        }
        if (!WaitFor(e)) return Unavailable("timed out sending");
        continue;
      }
      if (!Wait(socket_.fd(), POLLOUT, deadline_)) return Unavailable("timed out sending");
      const ssize_t n = ::send(socket_.fd(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n <= 0) return Unavailable("the connection broke");
      data.remove_prefix(static_cast<size_t>(n));
    }
    return {};
  }

  // Everything until the server closes, at most kMaxFetchBytes. `clean_close` tells whether a
  // TLS stream ended with close_notify (plain TCP always does): without it, an attacker on
  // the path could have cut the answer short.
  Result<std::string> ReadAll(bool& clean_close) {
    std::string response;
    char buf[16384];
    clean_close = true;
    for (;;) {
      if (ssl_ != nullptr) {
        ERR_clear_error();
        size_t n = 0;
        if (SSL_read_ex(ssl_, buf, sizeof buf, &n) == 1) {
          response.append(buf, n);
          if (response.size() > kMaxFetchBytes) return Unavailable("answer too large");
          if (WholeByLength(response)) return response;
          continue;
        }
        const int e = SSL_get_error(ssl_, 0);
        if (e == SSL_ERROR_ZERO_RETURN) return response;
        if (e == SSL_ERROR_SYSCALL ||
            (e == SSL_ERROR_SSL &&
             ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
          ERR_clear_error();
          clean_close = false;
          return response;
        }
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
          return Unavailable("the TLS connection broke: " + TlsErrorText());
        }
        if (!WaitFor(e)) return Unavailable("timed out reading");
        continue;
      }
      if (!Wait(socket_.fd(), POLLIN, deadline_)) return Unavailable("timed out reading");
      const ssize_t n = ::recv(socket_.fd(), buf, sizeof buf, 0);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n < 0) return Unavailable("the connection broke");
      if (n == 0) return response;
      response.append(buf, static_cast<size_t>(n));
      if (response.size() > kMaxFetchBytes) return Unavailable("answer too large");
      if (WholeByLength(response)) return response;
    }
  }

 private:
  // After an SSL_ERROR_WANT_*: waits for the socket; false on timeout or another error.
  bool WaitFor(int ssl_error) {
    if (ssl_error == SSL_ERROR_WANT_READ) return Wait(socket_.fd(), POLLIN, deadline_);
    if (ssl_error == SSL_ERROR_WANT_WRITE) return Wait(socket_.fd(), POLLOUT, deadline_);
    return false;
  }

  Socket socket_;
  Clock::time_point deadline_;
  SSL* ssl_ = nullptr;
};

Result<std::string> Fetch(const std::string& url, const std::string& access_token,
                          std::chrono::milliseconds timeout, SSL_CTX* tls) {
  auto parsed = server::ParseWebhookUrl(url, std::string(kField));
  if (!parsed.ok()) return parsed.error();
  const std::string host = BareHost(parsed->host);
  const auto deadline = Clock::now() + timeout;
  auto fd = Connect(host, parsed->port, deadline);
  if (!fd.ok()) return fd.error();
  std::optional<SigpipeBlock> no_sigpipe;
  if (parsed->tls) no_sigpipe.emplace();
  Stream stream(*fd, deadline);
  if (parsed->tls) {
    if (tls == nullptr) return Error::Internal("no TLS context for an https FHIR server");
    if (auto st = stream.Handshake(tls, host); !st.ok()) return st.error();
  }
  std::string request = "GET " + parsed->target + " HTTP/1.0\r\nHost: " + parsed->host +
                        "\r\nAccept: application/fhir+json\r\nConnection: close\r\n";
  if (!access_token.empty()) request += "Authorization: Bearer " + access_token + "\r\n";
  request += "\r\n";
  if (auto st = stream.SendAll(request); !st.ok()) return st.error();
  bool clean_close = true;
  auto read = stream.ReadAll(clean_close);
  if (!read.ok()) return read.error();
  std::string& response = *read;
  const size_t head_end = response.find("\r\n\r\n");
  if (head_end == std::string::npos || !response.starts_with("HTTP/1.")) {
    return Unavailable("not an HTTP answer");
  }
  int status = 0;
  const size_t space = response.find(' ');
  if (space == std::string::npos || space + 4 > response.size()) {
    return Unavailable("not an HTTP answer");
  }
  std::from_chars(response.data() + space + 1, response.data() + space + 4, status);
  if (status < 200 || status > 299) {
    return Unavailable("the FHIR server answered " + std::to_string(status));
  }
  const std::string_view head(response.data(), head_end);
  const size_t body_bytes = response.size() - head_end - 4;
  if (auto length = HeaderValue(head, "content-length")) {
    size_t expected = 0;
    auto [end, ec] = std::from_chars(length->data(), length->data() + length->size(), expected);
    if (ec != std::errc() || end != length->data() + length->size() || expected != body_bytes) {
      return Unavailable("the answer is not as long as its Content-Length");
    }
  } else if (!clean_close) {
    return Unavailable(
        "the TLS connection was cut before its end (no close_notify and no "
        "Content-Length)");
  }
  return response.substr(head_end + 4);
}

}  // namespace

Result<FhirFetcher> MakeHttpFetcher(const std::string& ca_file) {
  auto ctx = MakeClientContext(ca_file);
  if (!ctx.ok()) return ctx.error();
  // SSL_CTX is safe to share between threads once configured; each fetch makes its own SSL.
  return FhirFetcher([ctx = std::move(*ctx)](const std::string& url, const std::string& token,
                                             std::chrono::milliseconds timeout) {
    return Fetch(url, token, timeout, ctx.get());
  });
}

Result<std::string> HttpGet(const std::string& url, const std::string& access_token,
                            std::chrono::milliseconds timeout) {
  // The system trust store, loaded once for the process.
  static std::once_flag once;
  static SslCtxPtr system_ctx;
  static std::optional<Error> system_error;
  std::call_once(once, [] {
    auto ctx = MakeClientContext("");
    if (ctx.ok()) {
      system_ctx = std::move(*ctx);
    } else {
      system_error = ctx.error();
    }
  });
  if (system_error && url.starts_with("https://")) return *system_error;
  return Fetch(url, access_token, timeout, system_ctx.get());
}

}  // namespace isoguard::fhir
