// HttpGet: the FhirFetcher of `isoguard serve` (fhir_api.h). One HTTP/1.0 GET per call, so the
// answer is never chunked and ends when the server closes; every step shares one deadline.
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "fhir/fhir_api.h"
#include "server/webhook_sender.h"

namespace isoguard::fhir {
namespace {

constexpr size_t kMaxFetchBytes = size_t{10} << 20;

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

int MillisLeft(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Waits for `events` on the socket until the deadline: false on timeout.
bool Wait(int fd, short events, std::chrono::steady_clock::time_point deadline) {
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

}  // namespace

Result<std::string> HttpGet(const std::string& url, const std::string& access_token,
                            std::chrono::milliseconds timeout) {
  auto parsed = server::ParseWebhookUrl(url, "fhirServer");
  if (!parsed.ok()) return parsed.error();
  if (parsed->tls) {
    return Error::Unavailable("https FHIR servers are not fetched by this server; send prefetch",
                              "fhirServer");
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(parsed->host.c_str(), parsed->port.c_str(), &hints, &found) != 0 ||
      found == nullptr) {
    return Error::Unavailable("cannot resolve " + parsed->host, "fhirServer");
  }
  Socket s(::socket(found->ai_family, found->ai_socktype | SOCK_NONBLOCK, found->ai_protocol));
  const int rc = s.fd() < 0 ? -1 : ::connect(s.fd(), found->ai_addr, found->ai_addrlen);
  ::freeaddrinfo(found);
  if (s.fd() < 0 || (rc != 0 && errno != EINPROGRESS)) {
    return Error::Unavailable("cannot connect to " + parsed->host, "fhirServer");
  }
  if (rc != 0) {
    int err = 0;
    socklen_t len = sizeof err;
    if (!Wait(s.fd(), POLLOUT, deadline) ||
        ::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      return Error::Unavailable("cannot connect to " + parsed->host + " in time", "fhirServer");
    }
  }
  std::string request = "GET " + parsed->target + " HTTP/1.0\r\nHost: " + parsed->host +
                        "\r\nAccept: application/fhir+json\r\n";
  if (!access_token.empty()) request += "Authorization: Bearer " + access_token + "\r\n";
  request += "\r\n";
  size_t sent = 0;
  while (sent < request.size()) {
    if (!Wait(s.fd(), POLLOUT, deadline))
      return Error::Unavailable("timed out sending", "fhirServer");
    const ssize_t n = ::send(s.fd(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) return Error::Unavailable("the connection broke", "fhirServer");
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buf[16384];
  for (;;) {
    if (!Wait(s.fd(), POLLIN, deadline))
      return Error::Unavailable("timed out reading", "fhirServer");
    const ssize_t n = ::recv(s.fd(), buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) return Error::Unavailable("the connection broke", "fhirServer");
    if (n == 0) break;
    response.append(buf, static_cast<size_t>(n));
    if (response.size() > kMaxFetchBytes)
      return Error::Unavailable("answer too large", "fhirServer");
  }
  const size_t head_end = response.find("\r\n\r\n");
  if (head_end == std::string::npos || !response.starts_with("HTTP/1.")) {
    return Error::Unavailable("not an HTTP answer", "fhirServer");
  }
  int status = 0;
  const size_t space = response.find(' ');
  if (space == std::string::npos || space + 4 > response.size()) {
    return Error::Unavailable("not an HTTP answer", "fhirServer");
  }
  std::from_chars(response.data() + space + 1, response.data() + space + 4, status);
  if (status < 200 || status > 299) {
    return Error::Unavailable("the FHIR server answered " + std::to_string(status), "fhirServer");
  }
  return response.substr(head_end + 4);
}

}  // namespace isoguard::fhir
