// The isoguard REST API under /v1, plus /healthz, /readyz, /metrics and /openapi.json.
//
// Handlers are thin: decode the request (strictly: unknown fields in the API's own bodies are
// refused, naming them), call the Service, encode the answer. Every route but the public ones
// authenticates the bearer token first; every route that touches a patient (or is refused)
// is written to the access audit with who, what, when, from where and the outcome. Errors are
// problem+json through the one mapping in problem.h.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/result.h"
#include "server/audit_log.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/router.h"
#include "service/service.h"

namespace isoguard::server {

struct ApiEnvironment {
  service::Service& service;
  AuditLog& audit;
  Metrics& metrics;
  Logger& logger;
  // /readyz: ok when the databases answer.
  std::function<Status()> ready;
  // The OpenAPI 3.1 document served at /openapi.json (api/openapi.json of the data
  // directory, read at start).
  std::string openapi_json;
};

// Largest request body the API takes (a record's worth of events).
inline constexpr size_t kMaxApiBodyBytes = size_t{10} << 20;

// Adds the routes; they call into the returned object, which must outlive the router's use
// (keep it as long as the server runs). `env` must outlive it too.
std::shared_ptr<void> AddApiRoutes(Router& router, ApiEnvironment& env);

}  // namespace isoguard::server
