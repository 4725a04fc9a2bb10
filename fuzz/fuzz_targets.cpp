#include "fuzz/fuzz_targets.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "domain/record_parser.h"
#include "fhir/fhir_api.h"
#include "fhir/fhir_knowledge.h"
#include "fhir/fhir_resources.h"
#include "rules/evaluate.h"
#include "rules/rulebook_loader.h"
#include "server/api.h"
#include "server/audit_log.h"
#include "server/http_server.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/router.h"
#include "service/service.h"
#include "service/service_store.h"
#include "store/event_store.h"

namespace isoguard::fuzz {
namespace {

// A finding: the message on stderr, then abort() so that libFuzzer (or the test) reports it
// with the input.
[[noreturn]] void Finding(const std::string& what) {
  std::fprintf(stderr, "isoguard fuzz finding: %s\n", what.c_str());
  std::abort();
}

std::string& DataDir() {
  static std::string dir;
  return dir;
}

const Rulebook& Book() {
  static const Rulebook book = [] {
    auto loaded = LoadRulebook(DataDir());
    if (!loaded.ok())
      Finding("cannot load the rulebook from '" + DataDir() + "': " + loaded.error().ToString());
    return std::move(*loaded);
  }();
  return book;
}

ParseOptions Options() {
  ParseOptions o;
  o.is_known_program = [](std::string_view id) { return Book().FindProgram(id) != nullptr; };
  return o;
}

// 2026-09-14T14:00:00Z.
constexpr Instant kAt{std::chrono::milliseconds(1789394400000)};

// ---- http: a whole server stack in the process, on a throwaway store in a RAM directory.

class HttpStack {
 public:
  HttpStack() {
    char pattern[] = "/dev/shm/isoguard-fuzz-XXXXXX";
    const char* made = mkdtemp(pattern);
    if (made == nullptr) Finding("cannot make a temporary directory");
    dir_ = made;
    const std::string url = "sqlite:" + dir_ + "/fuzz.db";
    store::StoreOptions so;
    so.parse = Options();
    auto events = store::OpenEventStore(url, so);
    if (!events.ok()) Finding(events.error().ToString());
    events_ = std::move(*events);
    auto svc = service::OpenServiceStore(url);
    if (!svc.ok()) Finding(svc.error().ToString());
    service_store_ = std::move(*svc);
    service::ServiceOptions options;
    options.parse = Options();
    service_ = std::make_unique<service::Service>(*events_, *service_store_, Book(), options);
    audit_ =
        std::make_unique<server::AuditLog>(*service_store_, logger_, server::AuditLog::Options{});
    env_ = std::make_unique<server::ApiEnvironment>(server::ApiEnvironment{
        *service_, *audit_, metrics_, logger_, [] { return Status(); }, "{}"});
    routes_ = server::AddApiRoutes(router_, *env_);
    // /fhir and /cds-services as `isoguard serve` has them (no fetching from EHR servers).
    auto knowledge = fhir::LoadFhirKnowledge(DataDir());
    if (!knowledge.ok()) Finding(knowledge.error().ToString());
    fhir::FhirOptions fo;
    fo.knowledge = std::move(*knowledge);
    fhir_routes_ = fhir::AddFhirRoutes(router_, *env_, std::move(fo));
    server::ServerOptions ho;
    ho.listen = "127.0.0.1:0";
    ho.worker_threads = 2;
    ho.max_body_bytes = server::kMaxApiBodyBytes;
    ho.request_read_timeout = std::chrono::milliseconds(2000);
    auto http = server::HttpServer::Start(ho, router_, metrics_, logger_);
    if (!http.ok()) Finding(http.error().ToString());
    http_ = std::move(*http);
    MakeWorld();
  }

  ~HttpStack() {
    http_->Stop();
    http_->Wait();
    http_.reset();
    fhir_routes_.reset();
    routes_.reset();
    audit_->Stop();
    audit_.reset();
    service_.reset();
    service_store_.reset();
    events_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Returns once the audit writer has written every record of the requests so far: a writer
  // stuck on a record (retrying for ever) hangs here, which libFuzzer reports as a timeout
  // on the input that caused it.
  void FlushAudit() const { audit_->Flush(); }

  // The answer's status line code, or 0 when the connection closed without one.
  struct Answer {
    int status = 0;
    std::string text;
  };

  Answer Exchange(std::string_view bytes) const {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) Finding("socket()");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(http_->port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // libFuzzer's -timeout alarm (SIGALRM, installed without SA_RESTART) interrupts blocking
    // calls: an EINTR is the harness's signal, not the server's doing. An interrupted connect
    // goes on by itself; its outcome is read once the socket is writable.
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      int error = errno;
      if (error == EINTR) {
        pollfd p{fd, POLLOUT, 0};
        while (poll(&p, 1, 10000) < 0 && errno == EINTR) {
        }
        socklen_t len = sizeof error;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
      }
      if (error != 0) {
        close(fd);
        Finding(std::string("cannot connect to the server: ") + std::strerror(error));
      }
    }
    // Longer than the server's own read timeout: a request it could not finish is closed by
    // the server first; silence beyond this is a hang.
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // the server may close early (a request over a limit): fine
      sent += static_cast<size_t>(n);
    }
    shutdown(fd, SHUT_WR);
    Answer a;
    char buf[8192];
    for (;;) {
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n == 0) break;
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          close(fd);
          Finding("the server neither answered nor closed the connection within 10 s");
        }
        break;  // reset by the server: fine
      }
      if (a.text.size() < (size_t{1} << 20)) a.text.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    if (a.text.size() >= 12 && a.text.compare(0, 5, "HTTP/") == 0) {
      a.status = std::atoi(a.text.c_str() + 9);
    }
    return a;
  }

  const std::string& Token(uint8_t selector) const { return tokens_[selector % tokens_.size()]; }
  const std::string& patient() const { return patient_; }

 private:
  void MakeWorld() {
    Org("clinic", service::OrgKind::kClinic);
    Org("pharmacy", service::OrgKind::kPharmacy);
    Org("program", service::OrgKind::kProgram);
    tokens_.push_back("");  // no token
    tokens_.push_back(User("dr", "clinic", service::Role::kPrescriber));
    tokens_.push_back(User("staff", "clinic", service::Role::kClinicStaff));
    tokens_.push_back(User("ph", "pharmacy", service::Role::kPharmacist));
    tokens_.push_back(User("admin", "program", service::Role::kAdmin));
    const std::string body =
        R"({"patient_id":"p-fuzz","birth_date":"2001-02-03","jurisdiction":"US",)"
        R"("category":"can_get_pregnant"})";
    const Answer enrolled = Exchange(
        "POST /v1/patients HTTP/1.1\r\nHost: f\r\nAuthorization: Bearer " + tokens_[1] +
        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nConnection: close\r\n\r\n" + body);
    if (enrolled.status != 201) Finding("cannot enroll the fuzz patient: " + enrolled.text);
    patient_ = "p-fuzz";
    tokens_.push_back(User("pt", "clinic", service::Role::kPatient, patient_));
  }

  void Org(const std::string& id, service::OrgKind kind) {
    service::Organisation o;
    o.id = id;
    o.kind = kind;
    o.name = id;
    o.jurisdiction = "US";
    if (auto st = service_->CreateOrganisation(nullptr, o); !st.ok()) {
      Finding(st.error().ToString());
    }
  }

  std::string User(const std::string& id, const std::string& org, service::Role role,
                   const std::string& patient = {}) {
    service::Account a;
    a.id = id;
    a.org_id = org;
    a.role = role;
    a.name = id;
    a.patient_id = patient;
    auto issued = service_->CreateAccount(nullptr, a, "fuzz-password", std::chrono::hours(24));
    if (!issued.ok()) Finding(issued.error().ToString());
    return issued->token;
  }

  std::string dir_;
  server::Logger logger_{-1};
  server::Metrics metrics_;
  std::unique_ptr<store::EventStore> events_;
  std::unique_ptr<service::ServiceStore> service_store_;
  std::unique_ptr<service::Service> service_;
  std::unique_ptr<server::AuditLog> audit_;
  std::unique_ptr<server::ApiEnvironment> env_;
  server::Router router_;
  std::shared_ptr<void> routes_;
  std::shared_ptr<void> fhir_routes_;
  std::unique_ptr<server::HttpServer> http_;
  std::vector<std::string> tokens_;
  std::string patient_;
};

std::mutex http_mu;
std::unique_ptr<HttpStack>& Stack() {
  static std::unique_ptr<HttpStack> stack;
  return stack;
}

void ReplaceAll(std::string& s, std::string_view from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

}  // namespace

void SetDataDir(std::string dir) { DataDir() = std::move(dir); }

int FuzzRecord(std::string_view input) {
  const ParseOptions options = Options();
  auto record = ParseRecord(input, options);
  if (record.ok()) {
    EvaluateOptions eo;
    eo.at = kAt;
    auto evaluation = Evaluate(Book(), *record, eo);
    if (evaluation.ok()) (void)EvaluationToJson(*evaluation, *record, true);
  } else if (record.error().message.empty()) {
    Finding("a rejected record without a message");
  }
  (void)ParseEventJson(input, 0, options);
  (void)ParsePatientJson(input, options.limits);
  return 0;
}

int FuzzProgram(std::string_view input) {
  auto program = ParseProgramToml(input, "fuzz");
  if (!program.ok() && program.error().message.empty()) {
    Finding("a rejected program without a message");
  }
  return 0;
}

int FuzzFhir(std::string_view input) {
  static const fhir::FhirKnowledge knowledge = [] {
    auto k = fhir::LoadFhirKnowledge(DataDir());
    if (!k.ok()) Finding("cannot load knowledge/fhir.toml: " + k.error().ToString());
    return std::move(*k);
  }();
  boost::system::error_code ec;
  boost::json::parse_options po;
  po.max_depth = 64;
  const boost::json::value v = boost::json::parse(input, ec, {}, po);
  if (ec || !v.is_object()) return 0;
  const boost::json::object& resource = v.get_object();
  // One resource, or each entry of a Bundle, as the FHIR facade maps what it is sent.
  std::vector<const boost::json::object*> resources{&resource};
  if (const auto* entries = resource.if_contains("entry"); entries && entries->is_array()) {
    for (const boost::json::value& e : entries->get_array()) {
      if (!e.is_object()) continue;
      const auto* inner = e.get_object().if_contains("resource");
      if (inner != nullptr && inner->is_object()) resources.push_back(&inner->get_object());
      if (resources.size() > 100) break;
    }
  }
  const ParseOptions options = Options();
  for (const boost::json::object* r : resources) {
    (void)fhir::SubjectPatient(*r, "resource");
    (void)fhir::IsIsotretinoin(knowledge, r->if_contains("medicationCodeableConcept"));
    auto event = fhir::EventFromResource(knowledge, *r, "resource", kAt);
    if (event.ok()) {
      // What the mapping makes goes through the record parser, as the service sends it.
      (void)ParseEventJson(boost::json::serialize(*event), 0, options);
    } else if (event.error().message.empty()) {
      Finding("a refused FHIR resource without a message");
    }
    auto rx = fhir::PrescriptionFromMedicationRequest(knowledge, *r, "resource", "rx-fuzz", kAt);
    if (rx.ok()) (void)ParseEventJson(boost::json::serialize(*rx), 0, options);
  }
  return 0;
}

int FuzzHttp(std::string_view input) {
  if (input.empty()) return 0;
  std::lock_guard lock(http_mu);
  if (!Stack()) Stack() = std::make_unique<HttpStack>();
  const HttpStack& stack = *Stack();
  std::string bytes(input.substr(1));
  ReplaceAll(bytes, "$TOKEN", stack.Token(static_cast<uint8_t>(input[0])));
  ReplaceAll(bytes, "$PATIENT", stack.patient());
  const HttpStack::Answer answer = stack.Exchange(bytes);
  if (answer.status == 500) Finding("an internal error (500):\n" + answer.text);
  stack.FlushAudit();
  return 0;
}

void StopHttpTarget() {
  std::lock_guard lock(http_mu);
  Stack().reset();
}

}  // namespace isoguard::fuzz
