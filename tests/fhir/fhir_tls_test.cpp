// The prefetch fallback over https (fhir_client.cpp): a TLS server in the test, with
// certificates the test makes with the openssl command, serving a canned FHIR Bundle. The
// fetch succeeds with the CA file that trusts it, and fails with a message saying why without
// it (untrusted), for another host's certificate (host name mismatch), and against a server
// that never answers (the deadline), and an answer cut short is refused; then the same
// through the CDS order-sign route.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>

#include "cds_server_support.h"
#include "fhir/fhir_api.h"

namespace isoguard::server::testing {
namespace {

using std::chrono::milliseconds;

// A self-signed certificate (its own CA) for `san` ("DNS:localhost,IP:127.0.0.1").
struct TestCert {
  std::string cert, key;
};

TestCert MakeCert(const store::testing::TempDir& dir, const std::string& name,
                  const std::string& cn, const std::string& san) {
  TestCert c{dir.File(name + ".crt"), dir.File(name + ".key")};
  const std::string command =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=" +
      cn + " -addext subjectAltName=" + san + " -keyout " + c.key + " -out " + c.cert +
      " >/dev/null 2>&1";
  if (std::system(command.c_str()) != 0) throw std::runtime_error("openssl req failed");
  return c;
}

// The certificates of every test here, made once (and their directory removed at exit).
struct Certs {
  Certs()
      : localhost(MakeCert(dir, "localhost", "localhost", "DNS:localhost,IP:127.0.0.1")),
        other(MakeCert(dir, "other", "other.example", "DNS:other.example")) {}
  store::testing::TempDir dir;
  TestCert localhost, other;
};
const Certs& TheCerts() {
  static const Certs certs;
  return certs;
}

int ListenOnLoopback(uint16_t& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd, 16) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    throw std::runtime_error("cannot listen");
  }
  port = ntohs(a.sin_port);
  return fd;
}

// A TLS FHIR server on 127.0.0.1: one thread, one connection at a time; each request's head
// goes to `answer`, which gives the body of a 200 answer.
class TlsFhirServer {
 public:
  using Answer = std::function<std::string(const std::string& head)>;
  // How the answer ends: whole; with a Content-Length 100 bytes longer than the body; or
  // without Content-Length and without TLS close_notify (both: an answer cut short); or whole
  // by its Content-Length, but the connection kept open until the server stops.
  enum class Ending { kWhole, kShortOfItsLength, kNoCloseNotify, kKeptOpen };

  TlsFhirServer(const TestCert& cert, Answer answer, Ending ending = Ending::kWhole)
      : answer_(std::move(answer)), ending_(ending) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    if (ctx_ == nullptr || SSL_CTX_use_certificate_chain_file(ctx_, cert.cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx_, cert.key.c_str(), SSL_FILETYPE_PEM) != 1) {
      throw std::runtime_error("cannot load the test certificate");
    }
    listen_fd_ = ListenOnLoopback(port_);
    thread_ = std::thread([this] { Serve(); });
  }
  ~TlsFhirServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
    SSL_CTX_free(ctx_);
  }

  uint16_t port() const { return port_; }
  std::string last_head() {
    std::lock_guard lock(mu_);
    return last_head_;
  }
  std::string last_server_name() {
    std::lock_guard lock(mu_);
    return last_server_name_;
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      timeval tv{5, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      SSL* ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) == 1) {
        std::string head;
        char buf[4096];
        while (head.find("\r\n\r\n") == std::string::npos) {
          const int n = SSL_read(ssl, buf, sizeof buf);
          if (n <= 0) break;
          head.append(buf, static_cast<size_t>(n));
        }
        {
          std::lock_guard lock(mu_);
          last_head_ = head;
          const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
          last_server_name_ = sni != nullptr ? sni : "";
        }
        const std::string body = answer_(head);
        std::string response = "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n";
        if (ending_ != Ending::kNoCloseNotify) {
          const size_t extra = ending_ == Ending::kShortOfItsLength ? 100 : 0;
          response += "Content-Length: " + std::to_string(body.size() + extra) + "\r\n";
        }
        response += "Connection: close\r\n\r\n" + body;
        SSL_write(ssl, response.data(), static_cast<int>(response.size()));
        if (ending_ == Ending::kWhole) SSL_shutdown(ssl);
        while (ending_ == Ending::kKeptOpen && !stop_) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      }
      ERR_clear_error();
      SSL_free(ssl);
      ::close(fd);
    }
  }

  Answer answer_;
  Ending ending_;
  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string last_head_, last_server_name_;
  std::thread thread_;
};

constexpr std::string_view kBundle = R"({"resourceType":"Bundle","type":"searchset","entry":[]})";

std::string CannedBundle(const std::string&) { return std::string(kBundle); }

fhir::FhirFetcher FetcherTrusting(const std::string& ca_file) {
  auto f = fhir::MakeHttpFetcher(ca_file);
  if (!f.ok()) throw std::runtime_error(f.error().ToString());
  return std::move(*f);
}

TEST(FhirTlsFetch, FetchesFromAnHttpsServerTheCaFileTrusts) {
  const Certs& certs = TheCerts();
  TlsFhirServer server(certs.localhost, CannedBundle);
  auto fetch = FetcherTrusting(certs.localhost.cert);
  // By address: the certificate's iPAddress entry; no SNI for an address.
  const std::string by_ip = "https://127.0.0.1:" + std::to_string(server.port()) +
                            "/fhir/Observation?patient=p-1&code=http://loinc.org|29463-7";
  auto r = fetch(by_ip, "ehr-token-1", milliseconds(2000));
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(*r, kBundle);
  const std::string head = server.last_head();
  EXPECT_TRUE(head.starts_with("GET /fhir/Observation?patient=p-1&code=http://loinc.org|29463-7 "))
      << head;
  EXPECT_NE(head.find("Authorization: Bearer ehr-token-1\r\n"), std::string::npos) << head;
  EXPECT_EQ(server.last_server_name(), "");
  // By name: SNI and the certificate's DNS entry.
  auto named = fetch("https://localhost:" + std::to_string(server.port()) + "/fhir/Patient/p-1", "",
                     milliseconds(2000));
  ASSERT_TRUE(named.ok()) << named.error().ToString();
  EXPECT_EQ(server.last_server_name(), "localhost");
  EXPECT_EQ(server.last_head().find("Authorization"), std::string::npos);
}

TEST(FhirTlsFetch, RefusesAServerTheTrustStoreDoesNotTrust) {
  const Certs& certs = TheCerts();
  TlsFhirServer server(certs.localhost, CannedBundle);
  const std::string url = "https://localhost:" + std::to_string(server.port()) + "/fhir/Patient/1";
  // The system store does not hold the test's certificate; nor does a CA file of another one.
  for (const auto& fetch :
       {FetcherTrusting(""), FetcherTrusting(certs.other.cert), fhir::FhirFetcher(fhir::HttpGet)}) {
    auto r = fetch(url, "t", milliseconds(2000));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
    EXPECT_EQ(r.error().field, "fhirServer");
    EXPECT_NE(r.error().message.find("certificate is not trusted"), std::string::npos)
        << r.error().message;
  }
}

TEST(FhirTlsFetch, RefusesACertificateForAnotherHost) {
  const Certs& certs = TheCerts();
  // Trusted (the CA file holds it), but made for other.example.
  TlsFhirServer server(certs.other, CannedBundle);
  auto fetch = FetcherTrusting(certs.other.cert);
  for (const std::string host : {"localhost", "127.0.0.1"}) {
    auto r = fetch("https://" + host + ":" + std::to_string(server.port()) + "/fhir/Patient/1", "t",
                   milliseconds(2000));
    ASSERT_FALSE(r.ok()) << host;
    EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
    EXPECT_EQ(r.error().field, "fhirServer");
    EXPECT_NE(r.error().message.find("host name mismatch"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find(host), std::string::npos) << r.error().message;
  }
}

TEST(FhirTlsFetch, AServerThatNeverAnswersHitsTheDeadline) {
  // Connections complete in the listen backlog, but no TLS handshake ever comes back.
  uint16_t port = 0;
  const int fd = ListenOnLoopback(port);
  auto fetch = FetcherTrusting(TheCerts().localhost.cert);
  const auto start = std::chrono::steady_clock::now();
  auto r = fetch("https://127.0.0.1:" + std::to_string(port) + "/fhir/Patient/1", "t",
                 milliseconds(300));
  const auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
  EXPECT_EQ(r.error().field, "fhirServer");
  EXPECT_NE(r.error().message.find("timed out"), std::string::npos) << r.error().message;
  EXPECT_GE(took, milliseconds(290));
  EXPECT_LT(took, milliseconds(1500));
}

TEST(FhirTlsFetch, ANameThatDoesNotResolveFailsWithinTheDeadline) {
  // .invalid never resolves (RFC 6761): the resolver answers at once, or, without a reachable
  // DNS server, only after its own timeouts; either way the fetch ends by its deadline.
  auto fetch = FetcherTrusting(TheCerts().localhost.cert);
  const auto start = std::chrono::steady_clock::now();
  auto r = fetch("https://ehr.isoguard-test.invalid/fhir/Patient/1", "t", milliseconds(300));
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
  EXPECT_EQ(r.error().field, "fhirServer");
  EXPECT_TRUE(r.error().message.find("resolv") != std::string::npos) << r.error().message;
  EXPECT_LT(took, milliseconds(1500));
}

TEST(FhirTlsFetch, AnAnswerCutShortIsRefused) {
  const Certs& certs = TheCerts();
  auto fetch = FetcherTrusting(certs.localhost.cert);
  for (auto [ending, message] :
       {std::pair{TlsFhirServer::Ending::kShortOfItsLength, "not as long as its Content-Length"},
        std::pair{TlsFhirServer::Ending::kNoCloseNotify, "cut before its end"}}) {
    TlsFhirServer server(certs.localhost, CannedBundle, ending);
    auto r = fetch("https://127.0.0.1:" + std::to_string(server.port()) + "/fhir/Patient/1", "t",
                   milliseconds(2000));
    ASSERT_FALSE(r.ok()) << message;
    EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
    EXPECT_NE(r.error().message.find(message), std::string::npos) << r.error().message;
  }
}

TEST(FhirTlsFetch, AWholeAnswerIsTakenEvenIfTheServerKeepsTheConnectionOpen) {
  const Certs& certs = TheCerts();
  TlsFhirServer server(certs.localhost, CannedBundle, TlsFhirServer::Ending::kKeptOpen);
  auto r = FetcherTrusting(certs.localhost.cert)(
      "https://127.0.0.1:" + std::to_string(server.port()) + "/fhir/Patient/1", "t",
      milliseconds(2000));
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(*r, kBundle);
}

TEST(FhirTlsFetch, ACaFileThatCannotBeUsedIsRefusedNamingTheOption) {
  store::testing::TempDir dir;
  auto missing = fhir::MakeHttpFetcher(dir.File("no-such.pem"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind, ErrorKind::kBadInput);
  EXPECT_EQ(missing.error().field, "--fhir-ca-file");
  std::ofstream(dir.File("empty.pem")) << "not a certificate\n";
  auto empty = fhir::MakeHttpFetcher(dir.File("empty.pem"));
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().field, "--fhir-ca-file");
  EXPECT_NE(empty.error().message.find("no PEM certificate"), std::string::npos)
      << empty.error().message;
}

// ---- Through the CDS order-sign route: no prefetch, an https fhirServer.

class CdsHttpsPrefetchTest : public FhirWorldTest {};

TEST_P(CdsHttpsPrefetchTest, MissingPrefetchIsFetchedFromAnHttpsFhirServer) {
  EnrollReady("p-1");
  const Certs& certs = TheCerts();
  // The EHR weighs the patient at 100 kg: 40 mg a day is then under the usual range.
  TlsFhirServer ehr(certs.localhost, [](const std::string& head) {
    if (head.starts_with("GET /fhir/Observation")) {
      return R"({"resourceType":"Bundle","type":"searchset","entry":[{"resource":)" +
             WeightObservation("p-1", 100, "2026-09-14T13:55:00Z") + "}]}";
    }
    return std::string(kBundle);
  });
  const std::string fhir_server = "https://localhost:" + std::to_string(ehr.port()) + "/fhir";
  fhir::FhirOptions trusting = FhirTestOptions();
  trusting.fetch = FetcherTrusting(certs.localhost.cert);
  {
    CdsServer cds(w(), std::move(trusting));
    auto r = cds.Post("/cds-services/isoguard-order-sign", T("dr-a"),
                      OrderSignRequest("p-1", 40, fhir_server));
    ASSERT_EQ(r.status, 200) << r.raw.body;
    auto topics = CardTopics(r);
    EXPECT_NE(std::find(topics.begin(), topics.end(), "DOSE_OUT_OF_RANGE"), topics.end())
        << r.raw.body;
    EXPECT_NE(ehr.last_head().find("Authorization: Bearer ehr-token-1\r\n"), std::string::npos);
  }
  {
    // The system trust store (isoguard serve without --fhir-ca-file) does not trust the
    // test's EHR: the answer rests on isoguard's record alone (62 kg: 40 mg is in range).
    fhir::FhirOptions system = FhirTestOptions();
    CdsServer cds(w(), std::move(system));
    auto r = cds.Post("/cds-services/isoguard-order-sign", T("dr-a"),
                      OrderSignRequest("p-1", 40, fhir_server));
    ASSERT_EQ(r.status, 200) << r.raw.body;
    auto topics = CardTopics(r);
    EXPECT_EQ(std::find(topics.begin(), topics.end(), "DOSE_OUT_OF_RANGE"), topics.end())
        << r.raw.body;
  }
}

INSTANTIATE_TEST_SUITE_P(Sqlite, CdsHttpsPrefetchTest,
                         ::testing::Values(ApiBackend{"Sqlite", false}),
                         [](const auto& param_info) { return param_info.param.name; });
INSTANTIATE_TEST_SUITE_P(Postgres, CdsHttpsPrefetchTest,
                         ::testing::Values(ApiBackend{"Postgres", true}),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace isoguard::server::testing
