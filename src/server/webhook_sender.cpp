#include "server/webhook_sender.h"

#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace isoguard::server {
namespace {

using Clock = std::chrono::steady_clock;

int Remaining(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

bool WaitFor(int fd, short events, Clock::time_point deadline) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int rc = ::poll(&p, 1, Remaining(deadline));
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return false;
  }
}

// A connected non-blocking socket, or -1.
int Connect(const ParsedUrl& u, Clock::time_point deadline, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(u.host.c_str(), u.port.c_str(), &hints, &found); rc != 0) {
    error = "cannot resolve " + u.host + ": " + gai_strerror(rc);
    return -1;
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(found, ::freeaddrinfo);
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) return fd;
    if (errno == EINPROGRESS && WaitFor(fd, POLLOUT, deadline)) {
      int so_error = 0;
      socklen_t len = sizeof so_error;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
      if (so_error == 0) return fd;
      error = "cannot connect to " + u.host + ":" + u.port + ": " + std::strerror(so_error);
    } else {
      error = "cannot connect to " + u.host + ":" + u.port + ": timed out or refused";
    }
    ::close(fd);
  }
  if (error.empty()) error = "cannot connect to " + u.host + ":" + u.port;
  return -1;
}

// Plain or TLS I/O over the socket, with the deadline.
class Channel {
 public:
  Channel(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}

  bool WriteAll(std::string_view data, Clock::time_point deadline) {
    while (!data.empty()) {
      ssize_t n;
      if (ssl_ != nullptr) {
        n = SSL_write(ssl_, data.data(), static_cast<int>(data.size()));
        if (n <= 0 && !Wait(static_cast<int>(n), deadline)) return false;
      } else {
        n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && !((errno == EAGAIN || errno == EINTR) && WaitFor(fd_, POLLOUT, deadline))) {
          return false;
        }
      }
      if (n > 0) data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads until the status line is complete; returns the status, or 0.
  int ReadStatus(Clock::time_point deadline) {
    std::string got;
    char buf[1024];
    while (got.find("\r\n") == std::string::npos && got.size() < 8192) {
      ssize_t n;
      if (ssl_ != nullptr) {
        n = SSL_read(ssl_, buf, sizeof buf);
        if (n <= 0) {
          if (!Wait(static_cast<int>(n), deadline)) return 0;
          continue;
        }
      } else {
        n = ::recv(fd_, buf, sizeof buf, 0);
        if (n == 0) return 0;
        if (n < 0) {
          if ((errno == EAGAIN || errno == EINTR) && WaitFor(fd_, POLLIN, deadline)) continue;
          return 0;
        }
      }
      got.append(buf, static_cast<size_t>(n));
    }
    // "HTTP/1.1 204 No Content"
    const size_t space = got.find(' ');
    if (!got.starts_with("HTTP/1.") || space == std::string::npos || got.size() < space + 4) {
      return 0;
    }
    int status = 0;
    for (size_t i = space + 1; i < space + 4; ++i) {
      if (got[i] < '0' || got[i] > '9') return 0;
      status = status * 10 + (got[i] - '0');
    }
    return status;
  }

 private:
  bool Wait(int rc, Clock::time_point deadline) {
    const int e = SSL_get_error(ssl_, rc);
    if (e == SSL_ERROR_WANT_READ) return WaitFor(fd_, POLLIN, deadline);
    if (e == SSL_ERROR_WANT_WRITE) return WaitFor(fd_, POLLOUT, deadline);
    return false;
  }

  int fd_;
  SSL* ssl_;
};

}  // namespace

Result<ParsedUrl> ParseWebhookUrl(const std::string& url, const std::string& field) {
  ParsedUrl u;
  std::string_view rest = url;
  if (rest.starts_with("https://")) {
    u.tls = true;
    rest.remove_prefix(8);
  } else if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else {
    return Error::BadInput("must start with https:// or http://", field);
  }
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    return Error::BadInput("must name a host (and no user information)", field);
  }
  const size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']') == std::string_view::npos) {
    u.host = std::string(authority.substr(0, colon));
    u.port = std::string(authority.substr(colon + 1));
  } else {
    u.host = std::string(authority);
    u.port = u.tls ? "443" : "80";
  }
  if (u.host.empty() || u.port.empty() || u.port.size() > 5 ||
      u.port.find_first_not_of("0123456789") != std::string::npos) {
    return Error::BadInput("has a malformed host or port", field);
  }
  for (char c : u.target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return Error::BadInput("has a space or control character in its path", field);
    }
  }
  return u;
}

Status PostJson(const std::string& url, const std::string& body,
                const std::vector<std::pair<std::string, std::string>>& headers,
                std::chrono::milliseconds timeout) {
  auto parsed = ParseWebhookUrl(url);
  if (!parsed.ok()) return parsed.error();
  const ParsedUrl& u = *parsed;
  const auto deadline = Clock::now() + timeout;
  std::string error;
  const int fd = Connect(u, deadline, error);
  if (fd < 0) return Error::Unavailable(error);
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(nullptr, SSL_CTX_free);
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(nullptr, SSL_free);
  if (u.tls) {
    ctx.reset(SSL_CTX_new(TLS_client_method()));
    if (!ctx) {
      ::close(fd);
      return Error::Internal("TLS is unavailable");
    }
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_default_verify_paths(ctx.get());
    ssl.reset(SSL_new(ctx.get()));
    SSL_set_fd(ssl.get(), fd);
    SSL_set_tlsext_host_name(ssl.get(), u.host.c_str());
    SSL_set1_host(ssl.get(), u.host.c_str());
    for (;;) {
      const int rc = SSL_connect(ssl.get());
      if (rc == 1) break;
      const int e = SSL_get_error(ssl.get(), rc);
      const bool again = (e == SSL_ERROR_WANT_READ && WaitFor(fd, POLLIN, deadline)) ||
                         (e == SSL_ERROR_WANT_WRITE && WaitFor(fd, POLLOUT, deadline));
      if (!again) {
        ::close(fd);
        return Error::Unavailable("TLS handshake with " + u.host + " failed");
      }
    }
  }
  std::string request = "POST " + u.target + " HTTP/1.1\r\nHost: " + u.host +
                        "\r\nUser-Agent: isoguard-webhook\r\nContent-Type: application/json\r\n"
                        "Connection: close\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n";
  for (const auto& [k, v] : headers) request += k + ": " + v + "\r\n";
  request += "\r\n";
  request += body;
  Channel channel(fd, ssl.get());
  Status result;
  if (!channel.WriteAll(request, deadline)) {
    result = Error::Unavailable("sending to " + u.host + " failed or timed out");
  } else {
    const int status = channel.ReadStatus(deadline);
    if (status == 0) {
      result = Error::Unavailable("no HTTP answer from " + u.host + " in time");
    } else if (status < 200 || status > 299) {
      result = Error::Unavailable(u.host + " answered " + std::to_string(status));
    }
  }
  if (ssl) SSL_shutdown(ssl.get());
  ::close(fd);
  return result;
}

}  // namespace isoguard::server
