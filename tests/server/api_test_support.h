// The API as the integration tests see it: a real `isoguard serve` stack in the test process
// (event store, service store, service, audit writer, router, HTTP server on a free loopback
// port) over SQLite or the throwaway PostgreSQL cluster, a clock the test sets, the
// organisations and accounts of a small world, and a client speaking HTTP over a socket.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "../store/postgres_backend.h"
#include "../store/store_test_support.h"
#include "fhir/fhir_api.h"
#include "http_test_client.h"
#include "rules/rulebook_loader.h"
#include "server/api.h"
#include "server/audit_log.h"
#include "server/http_server.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/router.h"
#include "server/timed_event_store.h"
#include "service/service.h"
#include "service/service_store.h"
#include "store/sqlite/sqlite_event_store.h"

namespace isoguard::server::testing {

namespace json = boost::json;

struct ApiBackend {
  std::string name;
  bool postgres = false;
};

inline const Rulebook& TestRulebook() {
  static const Rulebook book = [] {
    auto loaded = LoadRulebook(ISOGUARD_SOURCE_DIR);
    if (!loaded.ok()) throw std::runtime_error(loaded.error().ToString());
    return std::move(*loaded);
  }();
  return book;
}

inline ParseOptions TestParseOptions() {
  ParseOptions options;
  options.is_known_program = [](std::string_view id) {
    return TestRulebook().FindProgram(id) != nullptr;
  };
  return options;
}

// The FHIR routes' options: the codes of knowledge/fhir.toml, and the real fetcher (tests point
// a CDS Hooks request's fhirServer at the test server's own /fhir).
inline fhir::FhirOptions FhirTestOptions() {
  auto k = fhir::LoadFhirKnowledge(ISOGUARD_SOURCE_DIR);
  if (!k.ok()) throw std::runtime_error(k.error().ToString());
  fhir::FhirOptions options;
  options.knowledge = std::move(*k);
  options.fetch = fhir::HttpGet;
  return options;
}

// 2026-09-14T14:00:00Z, a Monday.
inline constexpr int64_t kTestNowMs = 1789394400000;

struct Reply {
  int status = 0;
  RawResponse raw;
  json::value body;  // null when the body is not JSON

  const json::object& obj() const {
    static const json::object empty;
    return body.is_object() ? body.get_object() : empty;
  }
  std::string str(std::string_view key) const {
    const json::value* v = obj().if_contains(key);
    return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string();
  }
};

// One request to the server on `port`, on a fresh connection: `Authorization: Bearer <token>`
// when the token is not empty, the body's type and length when there is a body (or a POST).
inline Reply CallServer(uint16_t port, const std::string& method, const std::string& target,
                        const std::string& token = {}, const std::string& body = {},
                        std::vector<std::pair<std::string, std::string>> headers = {},
                        const std::string& content_type = "application/json") {
  TestConnection c(port);
  Reply reply;
  if (!c.connected()) {
    ADD_FAILURE() << "cannot connect";
    return reply;
  }
  std::string extra = "Connection: close\r\n";
  if (!token.empty()) extra += "Authorization: Bearer " + token + "\r\n";
  for (const auto& [k, v] : headers) extra += k + ": " + v + "\r\n";
  if ((!body.empty() || method == "POST") && !content_type.empty()) {
    extra += "Content-Type: " + content_type + "\r\n";
  }
  c.Send(RequestText(method, target, extra, body));
  auto r = c.ReadResponse();
  if (!r) {
    ADD_FAILURE() << "no response to " << method << " " << target;
    return reply;
  }
  reply.status = r->status;
  reply.raw = std::move(*r);
  boost::system::error_code ec;
  reply.body = json::parse(reply.raw.body, ec);
  if (ec) reply.body = nullptr;
  return reply;
}

class ApiWorld {
 public:
  explicit ApiWorld(const ApiBackend& backend) {
    if (backend.postgres) {
      url_ = store::testing::FreshPgDatabase();
    } else {
      url_ = "sqlite:" + dir_.File("isoguard.db");
    }
    Open();
  }
  ~ApiWorld() { Close(); }

  void Open() {
    store::StoreOptions so;
    so.parse = TestParseOptions();
    auto events = store::OpenEventStore(url_, so);
    if (!events.ok()) throw std::runtime_error(events.error().ToString());
    events_ = std::make_unique<TimedEventStore>(std::move(*events), metrics_);
    auto svc = service::OpenServiceStore(url_);
    if (!svc.ok()) throw std::runtime_error(svc.error().ToString());
    service_store_ = std::move(*svc);
    service::ServiceOptions options;
    options.parse = TestParseOptions();
    service_ = std::make_unique<service::Service>(*events_, *service_store_, TestRulebook(),
                                                  options, [this] { return Now(); });
    audit_ = std::make_unique<AuditLog>(*service_store_, logger_, AuditLog::Options{});
    env_ = std::make_unique<ApiEnvironment>(ApiEnvironment{
        *service_, *audit_, metrics_, logger_, [] { return Status(); }, R"({"openapi":"3.1.0"})"});
    router_ = std::make_unique<Router>();
    routes_ = AddApiRoutes(*router_, *env_);
    fhir_routes_ = fhir::AddFhirRoutes(*router_, *env_, FhirTestOptions());
    ServerOptions options_http;
    options_http.listen = "127.0.0.1:0";
    options_http.worker_threads = 8;
    options_http.max_queued_requests = 256;
    options_http.max_body_bytes = kMaxApiBodyBytes;
    options_http.trusted_proxies = trusted_proxies_;
    auto http = HttpServer::Start(options_http, *router_, metrics_, logger_);
    if (!http.ok()) throw std::runtime_error(http.error().ToString());
    http_ = std::move(*http);
  }

  void Close() {
    if (http_) {
      http_->Stop();
      http_->Wait();
    }
    http_.reset();
    routes_.reset();
    fhir_routes_.reset();
    router_.reset();
    env_.reset();
    if (audit_) audit_->Stop();
    audit_.reset();
    service_.reset();
    service_store_.reset();
    events_.reset();
  }

  // The same world served again, believing X-Forwarded-For from these peers.
  void ReopenTrustingProxies(std::vector<IpNetwork> proxies) {
    Close();
    trusted_proxies_ = std::move(proxies);
    Open();
  }

  Instant Now() const { return Instant(std::chrono::milliseconds(now_ms_.load())); }
  void SetNow(int64_t ms) { now_ms_ = ms; }
  void Advance(std::chrono::milliseconds d) { now_ms_ += d.count(); }

  uint16_t port() const { return http_->port(); }
  service::Service& service() { return *service_; }
  service::ServiceStore& service_store() { return *service_store_; }
  store::EventStore& events() { return *events_; }
  AuditLog& audit() { return *audit_; }
  const Router& router() const { return *router_; }
  const std::string& url() const { return url_; }

  // One request on a fresh connection.
  Reply Call(const std::string& method, const std::string& target, const std::string& token = {},
             const std::string& body = {},
             std::vector<std::pair<std::string, std::string>> headers = {},
             const std::string& content_type = "application/json") {
    return CallServer(port(), method, target, token, body, std::move(headers), content_type);
  }

  // The small world: two clinics, two pharmacies, the program; an account of every role.
  void MakeWorld() {
    using service::OrgKind;
    using service::Role;
    Org("clinic-a", OrgKind::kClinic);
    Org("clinic-b", OrgKind::kClinic);
    Org("pharmacy-a", OrgKind::kPharmacy);
    Org("pharmacy-b", OrgKind::kPharmacy);
    Org("program", OrgKind::kProgram);
    tokens["dr-a"] = User("dr-a", "clinic-a", Role::kPrescriber);
    tokens["staff-a"] = User("staff-a", "clinic-a", Role::kClinicStaff);
    tokens["dr-b"] = User("dr-b", "clinic-b", Role::kPrescriber);
    tokens["ph-a"] = User("ph-a", "pharmacy-a", Role::kPharmacist);
    tokens["ph-b"] = User("ph-b", "pharmacy-b", Role::kPharmacist);
    tokens["admin"] = User("admin", "program", Role::kAdmin);
  }

  void Org(const std::string& id, service::OrgKind kind) {
    service::Organisation o;
    o.id = id;
    o.kind = kind;
    o.name = id;
    o.jurisdiction = "US";
    auto st = service_->CreateOrganisation(nullptr, o);
    if (!st.ok()) throw std::runtime_error(st.error().ToString());
  }

  std::string User(const std::string& id, const std::string& org, service::Role role,
                   const std::string& patient = {}, const std::string& password = {}) {
    service::Account a;
    a.id = id;
    a.org_id = org;
    a.role = role;
    a.name = id;
    a.patient_id = patient;
    auto issued = service_->CreateAccount(nullptr, a, password, std::chrono::hours(24 * 365));
    if (!issued.ok()) throw std::runtime_error(issued.error().ToString());
    return issued->token;
  }

  std::map<std::string, std::string> tokens;

 private:
  store::testing::TempDir dir_;
  std::string url_;
  std::atomic<int64_t> now_ms_{kTestNowMs};
  std::vector<IpNetwork> trusted_proxies_;
  Logger logger_{-1};
  Metrics metrics_;
  std::unique_ptr<TimedEventStore> events_;
  std::unique_ptr<service::ServiceStore> service_store_;
  std::unique_ptr<service::Service> service_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<ApiEnvironment> env_;
  std::unique_ptr<Router> router_;
  std::shared_ptr<void> routes_;
  std::shared_ptr<void> fhir_routes_;
  std::unique_ptr<HttpServer> http_;
};

}  // namespace isoguard::server::testing
