// What the https prefetch and CDS client JWT tests share: a second HTTP server over an
// ApiWorld's service, with FHIR options of the test's own (a fetcher trusting the test's CA, a
// set of trusted CDS clients), and the CDS Hooks requests they send. The ApiWorld's own server
// keeps serving /v1 (to enroll patients and read the audit).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "fhir_test_support.h"

namespace isoguard::server::testing {

class CdsServer {
 public:
  CdsServer(ApiWorld& world, fhir::FhirOptions options)
      : env_(ApiEnvironment{world.service(), world.audit(), metrics_, logger_,
                            [] { return Status(); }, "{}"}) {
    routes_ = fhir::AddFhirRoutes(router_, env_, std::move(options));
    ServerOptions so;
    so.listen = "127.0.0.1:0";
    so.worker_threads = 4;
    so.max_body_bytes = kMaxApiBodyBytes;
    auto http = HttpServer::Start(so, router_, metrics_, logger_);
    if (!http.ok()) throw std::runtime_error(http.error().ToString());
    http_ = std::move(*http);
  }
  ~CdsServer() {
    http_->Stop();
    http_->Wait();
  }
  CdsServer(const CdsServer&) = delete;
  CdsServer& operator=(const CdsServer&) = delete;

  // A POST with `Authorization: Bearer <bearer>` (none when empty), on a fresh connection.
  Reply Post(const std::string& target, const std::string& bearer, const std::string& body) {
    return CallServer(http_->port(), "POST", target, bearer, body);
  }

 private:
  Metrics metrics_;
  Logger logger_{-1};
  ApiEnvironment env_;
  Router router_;
  std::shared_ptr<void> routes_;
  std::unique_ptr<HttpServer> http_;
};

// An order-sign request as the CDS Hooks sandbox sends it, for one isotretinoin draft of
// `daily_mg`; `fhir_server` (with its bearer token "ehr-token-1") when not empty; no prefetch.
inline std::string OrderSignRequest(const std::string& patient, int daily_mg,
                                    const std::string& fhir_server = {}) {
  std::string r = R"({"hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","hook":"order-sign",)";
  if (!fhir_server.empty()) {
    r +=
        R"("fhirServer":")" + fhir_server +
        R"(","fhirAuthorization":{"access_token":"ehr-token-1","token_type":"Bearer","expires_in":300,"scope":"user/Observation.read","subject":"cds-service"},)";
  }
  r += R"("context":{"userId":"Practitioner/example","patientId":")" + patient +
       R"(","draftOrders":{"resourceType":"Bundle","entry":[{"resource":)" +
       IsotretinoinRequest(patient, "draft", {daily_mg}, 30) + "}]}}}";
  return r;
}

inline std::vector<std::string> CardTopics(const Reply& r) {
  std::vector<std::string> out;
  const json::value* cards = r.obj().if_contains("cards");
  if (cards == nullptr || !cards->is_array()) return out;
  for (const json::value& c : cards->get_array()) {
    out.emplace_back(c.at("source").at("topic").at("code").as_string());
  }
  return out;
}

}  // namespace isoguard::server::testing
