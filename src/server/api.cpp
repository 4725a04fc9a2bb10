#include "server/api.h"

#include <boost/json.hpp>
#include <charconv>
#include <chrono>
#include <memory>
#include <optional>

#include "rules/dose_planner.h"
#include "server/json_body.h"
#include "server/problem.h"
#include "server/url.h"
#include "server/webhook_sender.h"

namespace isoguard::server {
namespace {

namespace json = boost::json;
using service::Principal;

constexpr size_t kDefaultPageSize = 50;
constexpr size_t kMaxHeaderValueBytes = 200;  // Idempotency-Key, If-Match

// One API call as its handler sees it.
struct Call {
  const HttpRequest& request;
  const PathParams& params;
  std::optional<Principal> who;
  std::string audit_patient;  // the patient the call touched, for the audit
  std::string audit_detail;
  bool audit_durably = false;  // the audit record is the only record of the outcome

  const std::string& Param(std::string_view name) const {
    static const std::string empty;
    const std::string* v = FindParam(params, name);
    return v != nullptr ? *v : empty;
  }
  const Principal& principal() const { return *who; }
};

using ApiHandler = std::function<HttpResponse(Call&)>;

HttpResponse Json(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse JsonValue(int status, const json::value& value) {
  return Json(status, json::serialize(value));
}
HttpResponse Json(int status, const json::object& value) { return JsonValue(status, value); }

std::string Quoted(std::string_view s) {
  return json::serialize(json::string_view(s.data(), s.size()));
}

// ---- Strict decoding of the API's own JSON bodies.

class Body {
 public:
  static Result<Body> Parse(const HttpRequest& request) {
    auto value = ParseJsonBody(request);
    if (!value.ok()) return value.error();
    if (!value->is_object()) return Error::BadInput("the body must be a JSON object", "body");
    Body b;
    b.object_ = std::move(value->get_object());
    return b;
  }

  std::string String(std::string_view key, bool required,
                     size_t max_bytes = service::kMaxTextBytes) {
    taken_.emplace_back(key);
    const json::value* v = object_.if_contains(key);
    if (v == nullptr || v->is_null()) {
      if (required) Fail(key, "required");
      return {};
    }
    if (!v->is_string()) {
      Fail(key, "must be a string");
      return {};
    }
    if (v->get_string().size() > max_bytes) {
      Fail(key, "is longer than " + std::to_string(max_bytes) + " bytes");
      return {};
    }
    if (required && v->get_string().empty()) Fail(key, "must not be empty");
    return std::string(v->get_string());
  }

  std::optional<double> Number(std::string_view key, bool required) {
    taken_.emplace_back(key);
    const json::value* v = object_.if_contains(key);
    if (v == nullptr || v->is_null()) {
      if (required) Fail(key, "required");
      return std::nullopt;
    }
    if (!v->is_number()) {
      Fail(key, "must be a number");
      return std::nullopt;
    }
    return v->to_number<double>();
  }

  std::optional<int64_t> Integer(std::string_view key, bool required) {
    taken_.emplace_back(key);
    const json::value* v = object_.if_contains(key);
    if (v == nullptr || v->is_null()) {
      if (required) Fail(key, "required");
      return std::nullopt;
    }
    if (v->is_int64()) return v->get_int64();
    if (v->is_uint64() && v->get_uint64() <= static_cast<uint64_t>(INT64_MAX)) {
      return static_cast<int64_t>(v->get_uint64());
    }
    Fail(key, "must be an integer");
    return std::nullopt;
  }

  std::optional<bool> Bool(std::string_view key, bool required) {
    taken_.emplace_back(key);
    const json::value* v = object_.if_contains(key);
    if (v == nullptr || v->is_null()) {
      if (required) Fail(key, "required");
      return std::nullopt;
    }
    if (!v->is_bool()) {
      Fail(key, "must be true or false");
      return std::nullopt;
    }
    return v->get_bool();
  }

  // The raw member (events); marks it taken.
  const json::value* Raw(std::string_view key) {
    taken_.emplace_back(key);
    return object_.if_contains(key);
  }

  // The first problem, or an unknown field.
  Status Finish() {
    if (error_) return *error_;
    for (const auto& member : object_) {
      bool known = false;
      for (const std::string& k : taken_) known = known || k == member.key();
      if (!known) {
        return Error::BadInput("unknown field (this body takes: " + Expected() + ")",
                               std::string(member.key()));
      }
    }
    return {};
  }

 private:
  void Fail(std::string_view key, std::string message) {
    if (!error_) error_ = Error::BadInput(std::move(message), std::string(key));
  }
  std::string Expected() const {
    std::string out;
    for (const std::string& k : taken_) out += (out.empty() ? "" : ", ") + k;
    return out;
  }

  json::object object_;
  std::vector<std::string> taken_;
  std::optional<Error> error_;
};

// ---- Headers and query parameters.

Result<std::string> IdempotencyKey(const HttpRequest& request) {
  const std::string* key = request.header("idempotency-key");
  if (key == nullptr) return std::string();
  if (key->empty() || key->size() > kMaxHeaderValueBytes) {
    return Error::BadInput("must be 1 to " + std::to_string(kMaxHeaderValueBytes) + " characters",
                           "Idempotency-Key");
  }
  for (char c : *key) {
    if (c < 0x21 || c > 0x7e) {
      return Error::BadInput("must be printable ASCII without spaces", "Idempotency-Key");
    }
  }
  return *key;
}

// If-Match: "7", W/"7" or 7 -> 7; absent -> nullopt.
Result<std::optional<int64_t>> IfMatchVersion(const HttpRequest& request) {
  const std::string* value = request.header("if-match");
  if (value == nullptr) return std::optional<int64_t>();
  std::string_view v = *value;
  if (v.starts_with("W/")) v.remove_prefix(2);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  int64_t version = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), version);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || version < 0) {
    return Error::BadInput("must be the ETag of the patient's record, e.g. \"7\"", "If-Match");
  }
  return std::optional<int64_t>(version);
}

std::string ETag(int64_t version) { return "\"" + std::to_string(version) + "\""; }

Result<size_t> QuerySize(const HttpRequest& request, std::string_view name, size_t fallback,
                         size_t max) {
  const std::string* v = request.query_param(name);
  if (v == nullptr) return fallback;
  size_t n = 0;
  auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (v->empty() || ec != std::errc() || end != v->data() + v->size() || n > max) {
    return Error::BadInput("must be an integer from 0 to " + std::to_string(max),
                           std::string(name));
  }
  return n;
}

Result<std::optional<Instant>> QueryInstant(const HttpRequest& request, std::string_view name) {
  const std::string* v = request.query_param(name);
  if (v == nullptr) return std::optional<Instant>();
  auto t = ParseOffsetTime(*v);
  if (!t.ok()) {
    return Error::BadInput("must be a time with an offset, e.g. 2026-09-14T10:00:00-04:00",
                           std::string(name));
  }
  return std::optional<Instant>(t->instant);
}

// ---- Encoders.

json::object AccountJson(const service::Account& a) {
  json::object o;
  o["id"] = a.id;
  o["org_id"] = a.org_id;
  o["role"] = service::ToString(a.role);
  o["name"] = a.name;
  if (!a.patient_id.empty()) o["patient_id"] = a.patient_id;
  o["disabled"] = a.disabled;
  return o;
}

json::object IssuedTokenJson(const service::IssuedToken& t) {
  json::object o;
  o["token"] = t.token;
  o["token_id"] = t.record.id;
  o["kind"] = t.record.kind;
  o["account_id"] = t.record.account_id;
  o["expires_at"] = FormatUtc(t.record.expires_at);
  return o;
}

json::object AuthorizationRecordJson(const service::AuthorizationRecord& a) {
  json::object o;
  o["authorization_id"] = a.id;
  o["patient_id"] = a.patient_id;
  o["prescription_id"] = a.prescription_id;
  o["pharmacy_id"] = a.pharmacy_id;
  o["pharmacist_id"] = a.pharmacist_id;
  o["status"] = service::ToString(a.status);
  o["created_at"] = FormatUtc(a.created_at);
  o["dispense_by"] = FormatUtc(a.dispense_by);
  if (a.closed_at) o["closed_at"] = FormatUtc(*a.closed_at);
  if (!a.closed_by.empty()) o["closed_by"] = a.closed_by;
  if (!a.lot_id.empty()) o["lot_id"] = a.lot_id;
  return o;
}

json::object AppendJson(const service::AppendOutcome& out, const std::string& patient_id) {
  json::object o;
  o["patient_id"] = patient_id;
  o["first_version"] = out.result.first_version;
  o["version"] = out.result.last_version;
  json::array ids;
  for (const std::string& id : out.result.event_ids) ids.emplace_back(id);
  o["event_ids"] = std::move(ids);
  o["replayed"] = out.result.replayed;
  if (out.crisis != nullptr) {
    o["crisis"] = json::object{{"service", out.crisis->service},
                               {"phone", out.crisis->phone},
                               {"how", out.crisis->how},
                               {"jurisdiction", ToString(out.crisis->jurisdiction)}};
  }
  if (!out.contact_prescriber_now.empty()) {
    json::array effects;
    for (const std::string& e : out.contact_prescriber_now) effects.emplace_back(e);
    o["contact_prescriber_now"] = std::move(effects);
  }
  return o;
}

json::object LotJson(const service::Lot& l) {
  json::object o;
  o["lot_id"] = l.id;
  o["product"] = l.product;
  o["strength_mg"] = l.strength_mg;
  o["lot_number"] = l.lot_number;
  o["expiry"] = l.expiry.ToString();
  o["location"] = l.location;
  o["quantity_capsules"] = l.quantity_capsules;
  o["received_at"] = FormatUtc(l.received_at);
  o["quarantined"] = l.quarantined;
  if (l.quarantined) o["quarantine_reason"] = l.quarantine_reason;
  return o;
}

json::object ReadingJson(const service::TemperatureReading& r) {
  return json::object{{"id", r.id},
                      {"location", r.location},
                      {"at", FormatUtc(r.at)},
                      {"celsius", r.celsius},
                      {"recorded_by", r.recorded_by}};
}

// ---- The route table.

class Api {
 public:
  Api(Router& router, ApiEnvironment& env)
      : router_(router),
        env_(env),
        authorizations_authorized_(env.metrics.counter("isoguard_authorizations_total",
                                                       "Authorization decisions by outcome",
                                                       {{"decision", "authorized"}})),
        authorizations_denied_(env.metrics.counter("isoguard_authorizations_total",
                                                   "Authorization decisions by outcome",
                                                   {{"decision", "denied"}})),
        authorizations_existing_(env.metrics.counter("isoguard_authorizations_total",
                                                     "Authorization decisions by outcome",
                                                     {{"decision", "existing"}})) {}

  void AddAll();

 private:
  enum class Auth { kPublic, kToken };

  void Add(std::string method, std::string pattern, Auth auth, ApiHandler handler,
           size_t max_body = 0) {
    const std::string action = method + " " + pattern;
    RouteOptions options;
    options.max_body_bytes = max_body;
    router_.Add(
        method, pattern,
        [this, auth, action, handler = std::move(handler)](const HttpRequest& request,
                                                           const PathParams& params) {
          return Run(auth, action, handler, request, params);
        },
        options);
  }

  HttpResponse Run(Auth auth, const std::string& action, const ApiHandler& handler,
                   const HttpRequest& request, const PathParams& params) {
    Call call{request, params, std::nullopt, {}, {}};
    if (const std::string* patient = FindParam(params, "patient_id")) call.audit_patient = *patient;
    HttpResponse response;
    if (auth == Auth::kToken) {
      const std::string* header = request.header("authorization");
      auto who = env_.service.authenticator().Authenticate(header != nullptr ? *header : "",
                                                           env_.service.Now());
      if (!who.ok()) {
        response = Fail(request, who.error());
        Audit(call, action, response.status, who.error().message);
        return response;
      }
      who->source = request.source();
      who->request_id = request.request_id;
      call.who = std::move(*who);
    }
    response = handler(call);
    if (auth == Auth::kToken) {
      Audit(call, action, response.status, call.audit_detail, call.audit_durably);
    }
    return response;
  }

  void Audit(const Call& call, const std::string& action, int status, std::string detail,
             bool durably = false) {
    service::AuditRecord r = RequestAuditRecord(env_.service.Now(), call.request,
                                                call.who ? &call.who->account : nullptr, action,
                                                call.audit_patient, status, std::move(detail));
    if (durably) {
      env_.audit.RecordDurably(std::move(r));
    } else {
      env_.audit.Record(std::move(r));
    }
  }

  HttpResponse Fail(const HttpRequest& request, const Error& e) {
    return ProblemFromError(e, request.request_id, env_.logger);
  }
  HttpResponse Fail(Call& call, const Error& e) {
    if (call.audit_detail.empty()) call.audit_detail = e.ToString();
    return Fail(call.request, e);
  }

  // Handlers.
  HttpResponse SignIn(Call& c);
  HttpResponse Enroll(Call& c);
  HttpResponse ReadPatient(Call& c);
  HttpResponse Timeline(Call& c);
  HttpResponse AppendEvents(Call& c);
  HttpResponse Correct(Call& c);
  HttpResponse Prescribe(Call& c);
  HttpResponse CancelPrescription(Call& c);
  HttpResponse EvaluatePrescription(Call& c);
  HttpResponse Calendar(Call& c);
  HttpResponse PharmacyView(Call& c);
  HttpResponse Authorize(Call& c);
  HttpResponse GetAuthorization(Call& c);
  HttpResponse Reverse(Call& c);
  HttpResponse Dispense(Call& c);
  HttpResponse PrescriberWorklist(Call& c);
  HttpResponse PharmacyWorklist(Call& c);
  HttpResponse AddLot(Call& c);
  HttpResponse ListLots(Call& c);
  HttpResponse ReleaseLot(Call& c);
  HttpResponse QuarantineEvents(Call& c);
  HttpResponse RecordTemperature(Call& c);
  HttpResponse ListTemperatures(Call& c);
  HttpResponse Notifications(Call& c);
  HttpResponse MarkRead(Call& c);
  HttpResponse CreateOrganisation(Call& c);
  HttpResponse CreateAccount(Call& c);
  HttpResponse SetDisabled(Call& c, bool disabled);
  HttpResponse NewToken(Call& c);
  HttpResponse AuditLogRoute(Call& c);
  HttpResponse AddWebhook(Call& c);
  HttpResponse ListWebhooks(Call& c);
  HttpResponse Registry(Call& c);

  // Appends the events of `c`'s request as AppendEvents does (shared by the typed routes).
  HttpResponse AppendAndAnswer(Call& c, std::vector<std::string> events);

  Router& router_;
  ApiEnvironment& env_;
  Counter& authorizations_authorized_;
  Counter& authorizations_denied_;
  Counter& authorizations_existing_;
};

// GET /v1/knowledge: what the web app draws and says from knowledge/*.toml and programs/*.toml
// (lab thresholds, the target band, product strengths, serious effects, crisis lines, each
// program's windows), so that no clinical number is written into the app. Read-only; no patient
// data, so any signed-in account may read it.
json::object ThresholdJson(const Threshold& t, const std::string& code, const std::string& advice) {
  return json::object{{"value", t.value},
                      {"compare", t.compare == Comparison::kAtLeast ? "at_least" : "above"},
                      {"code", code},
                      {"advice", advice}};
}

json::object KnowledgeJson(const Rulebook& rulebook) {
  const Knowledge& k = rulebook.knowledge;
  json::array products;
  for (const ProductInfo& p : k.products) {
    json::array strengths;
    for (double mg : p.strengths_mg) strengths.push_back(mg);
    products.push_back(json::object{{"product", ToString(p.product)},
                                    {"name", p.name},
                                    {"strengths_mg", std::move(strengths)},
                                    {"usual_min_mg_per_kg_day", p.usual_min_mg_per_kg_day},
                                    {"usual_max_mg_per_kg_day", p.usual_max_mg_per_kg_day},
                                    {"max_mg_per_kg_day", p.max_mg_per_kg_day},
                                    {"take_with_food", p.take_with_food}});
  }
  json::array labs;
  for (const LabFamily& f : k.lab_families) {
    json::array tests;
    for (LabTest t : f.tests) tests.push_back(json::string(ToString(t)));
    json::object o{{"name", f.name},
                   {"tests", std::move(tests)},
                   {"relative_to_uln", f.relative_to_uln},
                   {"warning", ThresholdJson(f.warning, f.warning_code, f.warning_advice)},
                   {"critical", ThresholdJson(f.critical, f.critical_code, f.critical_advice)}};
    if (f.relative_to_uln) o["default_uln"] = f.default_uln;
    if (f.mmol_to_mg_dl) o["mmol_to_mg_dl"] = *f.mmol_to_mg_dl;
    labs.push_back(std::move(o));
  }
  json::array crisis;
  for (const CrisisResource& r : k.safety.crisis) {
    crisis.push_back(json::object{{"jurisdiction", ToString(r.jurisdiction)},
                                  {"service", r.service},
                                  {"phone", r.phone},
                                  {"how", r.how}});
  }
  json::array serious;
  for (const SeriousEffect& e : k.safety.serious_effects) {
    json::array terms;
    for (const std::string& t : e.terms) terms.push_back(json::string(t));
    serious.push_back(
        json::object{{"code", e.code}, {"title", e.title}, {"terms", std::move(terms)}});
  }
  json::array programs;
  for (const Program& p : rulebook.programs) {
    json::object o{{"id", p.id},
                   {"title", p.title},
                   {"jurisdiction", ToString(p.jurisdiction)},
                   {"time_zone", p.time_zone},
                   {"pregnancy_test_window_days", p.tests.window_days},
                   {"contraception_lead_in_days", p.contraception.lead_in_days},
                   {"max_refills", p.supply.max_refills},
                   {"monthly_interval_days", p.due.monthly_interval_days},
                   {"post_treatment_test_days", p.due.post_treatment_test_days},
                   {"contraception_after_last_dose_days", p.due.contraception_after_last_dose_days},
                   {"no_blood_donation_days", p.due.no_blood_donation_days}};
    if (p.supply.max_days_supply_can_get_pregnant) {
      o["max_days_supply_can_get_pregnant"] = *p.supply.max_days_supply_can_get_pregnant;
    }
    programs.push_back(std::move(o));
  }
  const auto& target = k.treatment.default_target_mg_per_kg;
  return json::object{{"target_mg_per_kg", json::array{target[0], target[1]}},
                      {"products", std::move(products)},
                      {"lab_families", std::move(labs)},
                      {"phq9", json::object{{"moderate_min_total", k.mood.moderate_min_total},
                                            {"severe_min_total", k.mood.severe_min_total},
                                            {"self_harm_item", k.mood.self_harm_item}}},
                      {"storage", json::object{{"min_celsius", k.safety.storage_min_celsius},
                                               {"max_celsius", k.safety.storage_max_celsius}}},
                      {"crisis", std::move(crisis)},
                      {"serious_effects", std::move(serious)},
                      {"programs", std::move(programs)}};
}

// GET /v1/dose-plan?product=&weight_kg=&mg_per_kg_day=: the dose planner of `isoguard dose`
// (capsules per dose for the product's real strengths), for the web app's prescription form.
Result<double> QueryNumber(const HttpRequest& request, std::string_view name) {
  const std::string* v = request.query_param(name);
  if (v == nullptr || v->empty()) return Error::BadInput("required", std::string(name));
  double x = 0;
  auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), x);
  if (v->size() > 32 || ec != std::errc() || end != v->data() + v->size()) {
    return Error::BadInput("must be a number", std::string(name));
  }
  return x;
}

Result<std::string> DosePlanAnswer(const Rulebook& rulebook, const HttpRequest& request) {
  DosePlanRequest plan;
  const std::string* product = request.query_param("product");
  auto parsed = ParseProduct(product != nullptr ? *product : "generic");
  if (!parsed) return Error::BadInput("must be generic, absorica or absorica_ld", "product");
  plan.product = *parsed;
  auto weight = QueryNumber(request, "weight_kg");
  if (!weight.ok()) return weight.error();
  auto rate = QueryNumber(request, "mg_per_kg_day");
  if (!rate.ok()) return rate.error();
  plan.weight_kg = *weight;
  plan.mg_per_kg_day = *rate;
  auto answer = PlanDose(rulebook.knowledge, plan);
  if (!answer.ok()) {
    Error e = answer.error();
    e.field = e.field == "--weight-kg" ? "weight_kg" : "mg_per_kg_day";
    return e;
  }
  return DosePlanToJson(*answer, plan.product);
}

void Api::AddAll() {
  RouteOptions inline_route;
  inline_route.inline_on_io_thread = true;
  router_.Add(
      "GET", "/healthz",
      [](const HttpRequest&, const PathParams&) { return Json(200, R"({"status":"ok"})"); },
      inline_route);
  router_.Add("GET", "/readyz", [this](const HttpRequest& request, const PathParams&) {
    Status st = env_.ready ? env_.ready() : Status();
    if (!st.ok()) {
      return UnavailableProblem("not ready: " + st.error().message, 1);
    }
    (void)request;
    return Json(200, R"({"status":"ready"})");
  });
  router_.Add(
      "GET", "/metrics",
      [this](const HttpRequest&, const PathParams&) {
        HttpResponse r;
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        r.body = env_.metrics.Render();
        return r;
      },
      inline_route);
  router_.Add(
      "GET", "/openapi.json",
      [this](const HttpRequest&, const PathParams&) {
        HttpResponse r;
        r.body = env_.openapi_json;
        r.headers.emplace_back("Cache-Control", "public, max-age=300");
        return r;
      },
      inline_route);

  Add("POST", "/v1/sessions", Auth::kPublic, [this](Call& c) { return SignIn(c); });
  Add("DELETE", "/v1/sessions/current", Auth::kToken, [this](Call& c) {
    if (auto st = env_.service.SignOut(c.principal()); !st.ok()) return Fail(c, st.error());
    HttpResponse r;
    r.status = 204;
    r.content_type.clear();
    return r;
  });
  Add("GET", "/v1/knowledge", Auth::kToken,
      [this](Call&) { return Json(200, KnowledgeJson(env_.service.rulebook())); });
  Add("GET", "/v1/dose-plan", Auth::kToken, [this](Call& c) {
    auto plan = DosePlanAnswer(env_.service.rulebook(), c.request);
    return plan.ok() ? Json(200, std::move(*plan)) : Fail(c, plan.error());
  });
  Add("GET", "/v1/me", Auth::kToken, [](Call& c) {
    json::object o = AccountJson(c.principal().account);
    return Json(200, o);
  });

  Add("POST", "/v1/patients", Auth::kToken, [this](Call& c) { return Enroll(c); });
  Add("GET", "/v1/patients/{patient_id}", Auth::kToken, [this](Call& c) { return ReadPatient(c); });
  Add("GET", "/v1/patients/{patient_id}/events", Auth::kToken,
      [this](Call& c) { return Timeline(c); });
  Add(
      "POST", "/v1/patients/{patient_id}/events", Auth::kToken,
      [this](Call& c) { return AppendEvents(c); }, kMaxApiBodyBytes);
  Add("POST", "/v1/patients/{patient_id}/events/{event_id}/correction", Auth::kToken,
      [this](Call& c) { return Correct(c); });
  Add("POST", "/v1/patients/{patient_id}/prescriptions", Auth::kToken,
      [this](Call& c) { return Prescribe(c); });
  Add("POST", "/v1/patients/{patient_id}/prescriptions/{prescription_id}/cancel", Auth::kToken,
      [this](Call& c) { return CancelPrescription(c); });
  Add("GET", "/v1/patients/{patient_id}/prescriptions/{prescription_id}/evaluation", Auth::kToken,
      [this](Call& c) { return EvaluatePrescription(c); });
  Add("GET", "/v1/patients/{patient_id}/calendar.ics", Auth::kToken,
      [this](Call& c) { return Calendar(c); });
  Add("GET", "/v1/patients/{patient_id}/pharmacy-view", Auth::kToken,
      [this](Call& c) { return PharmacyView(c); });

  Add("POST", "/v1/authorizations", Auth::kToken, [this](Call& c) { return Authorize(c); });
  Add("GET", "/v1/authorizations/{authorization_id}", Auth::kToken,
      [this](Call& c) { return GetAuthorization(c); });
  Add("POST", "/v1/authorizations/{authorization_id}/reversal", Auth::kToken,
      [this](Call& c) { return Reverse(c); });
  Add("POST", "/v1/dispenses", Auth::kToken, [this](Call& c) { return Dispense(c); });

  Add("GET", "/v1/worklists/prescriber", Auth::kToken,
      [this](Call& c) { return PrescriberWorklist(c); });
  Add("GET", "/v1/worklists/pharmacy", Auth::kToken,
      [this](Call& c) { return PharmacyWorklist(c); });

  Add("POST", "/v1/stock/lots", Auth::kToken, [this](Call& c) { return AddLot(c); });
  Add("GET", "/v1/stock/lots", Auth::kToken, [this](Call& c) { return ListLots(c); });
  Add("POST", "/v1/stock/lots/{lot_id}/release", Auth::kToken,
      [this](Call& c) { return ReleaseLot(c); });
  Add("GET", "/v1/stock/lots/{lot_id}/quarantine-events", Auth::kToken,
      [this](Call& c) { return QuarantineEvents(c); });
  Add("POST", "/v1/stock/temperatures", Auth::kToken,
      [this](Call& c) { return RecordTemperature(c); });
  Add("GET", "/v1/stock/temperatures", Auth::kToken,
      [this](Call& c) { return ListTemperatures(c); });

  Add("GET", "/v1/notifications", Auth::kToken, [this](Call& c) { return Notifications(c); });
  Add("POST", "/v1/notifications/{notification_id}/read", Auth::kToken,
      [this](Call& c) { return MarkRead(c); });

  Add("POST", "/v1/organisations", Auth::kToken, [this](Call& c) { return CreateOrganisation(c); });
  Add("POST", "/v1/accounts", Auth::kToken, [this](Call& c) { return CreateAccount(c); });
  Add("POST", "/v1/accounts/{account_id}/disable", Auth::kToken,
      [this](Call& c) { return SetDisabled(c, true); });
  Add("POST", "/v1/accounts/{account_id}/enable", Auth::kToken,
      [this](Call& c) { return SetDisabled(c, false); });
  Add("POST", "/v1/accounts/{account_id}/tokens", Auth::kToken,
      [this](Call& c) { return NewToken(c); });
  Add("POST", "/v1/webhooks", Auth::kToken, [this](Call& c) { return AddWebhook(c); });
  Add("GET", "/v1/webhooks", Auth::kToken, [this](Call& c) { return ListWebhooks(c); });
  Add("GET", "/v1/audit", Auth::kToken, [this](Call& c) { return AuditLogRoute(c); });
  Add("GET", "/v1/registry/pregnancies", Auth::kToken, [this](Call& c) { return Registry(c); });
}

// ---- Sessions and accounts.

HttpResponse Api::SignIn(Call& c) {
  auto body = Body::Parse(c.request);
  if (!body.ok()) return Fail(c, body.error());
  const std::string account = body->String("account_id", true, service::kMaxIdBytes);
  const std::string password = body->String("password", true, service::kMaxTextBytes);
  if (auto st = body->Finish(); !st.ok()) return Fail(c, st.error());
  // Rate limits are per address, not per connection: the client's address without its port
  // (behind a trusted proxy, the client it names).
  auto issued = env_.service.SignIn(account, password, c.request.client_address());
  // Every attempt is in the access audit (never the password): who tried, from where, and
  // whether it worked.
  HttpResponse response;
  if (!issued.ok()) {
    response = Fail(c, issued.error());
  } else {
    auto acct = env_.service.store().GetAccount(account);
    json::object o = IssuedTokenJson(*issued);
    if (acct.ok()) o["account"] = AccountJson(*acct);
    response = Json(201, o);
  }
  Audit(c, "POST /v1/sessions", response.status,
        "sign-in as " + account.substr(0, service::kMaxIdBytes) +
            (issued.ok() ? "" : ": " + issued.error().message));
  return response;
}

HttpResponse Api::CreateOrganisation(Call& c) {
  auto body = Body::Parse(c.request);
  if (!body.ok()) return Fail(c, body.error());
  service::Organisation org;
  org.id = body->String("id", true, service::kMaxIdBytes);
  const std::string kind = body->String("kind", true, 32);
  org.name = body->String("name", true);
  org.jurisdiction = body->String("jurisdiction", true, 8);
  if (auto st = body->Finish(); !st.ok()) return Fail(c, st.error());
  auto k = service::ParseOrgKind(kind);
  if (!k) return Fail(c, Error::BadInput("must be clinic, pharmacy or program", "kind"));
  org.kind = *k;
  if (!ParseJurisdiction(org.jurisdiction)) {
    return Fail(c, Error::BadInput("must be US, EU or UK", "jurisdiction"));
  }
  if (auto st = env_.service.CreateOrganisation(&c.principal(), org); !st.ok()) {
    return Fail(c, st.error());
  }
  return Json(201, json::object{{"id", org.id}, {"kind", kind}, {"name", org.name}});
}

HttpResponse Api::CreateAccount(Call& c) {
  auto body = Body::Parse(c.request);
  if (!body.ok()) return Fail(c, body.error());
  service::Account a;
  a.id = body->String("id", true, service::kMaxIdBytes);
  a.org_id = body->String("org_id", true, service::kMaxIdBytes);
  const std::string role = body->String("role", true, 32);
  a.name = body->String("name", false);
  a.patient_id = body->String("patient_id", false, service::kMaxIdBytes);
  const std::string password = body->String("password", false);
  const auto ttl_days = body->Integer("token_ttl_days", false);
  if (auto st = body->Finish(); !st.ok()) return Fail(c, st.error());
  auto r = service::ParseRole(role);
  if (!r) {
    return Fail(c, Error::BadInput("must be prescriber, clinic_staff, pharmacist, patient or admin",
                                   "role"));
  }
  a.role = *r;
  const int64_t days = ttl_days.value_or(90);
  if (days < 1 || days > 3660)
    return Fail(c, Error::BadInput("must be 1 to 3660", "token_ttl_days"));
  auto issued =
      env_.service.CreateAccount(&c.principal(), a, password, std::chrono::hours(24 * days));
  if (!issued.ok()) return Fail(c, issued.error());
  json::object o = IssuedTokenJson(*issued);
  o["account"] = AccountJson(a);
  return Json(201, o);
}

HttpResponse Api::SetDisabled(Call& c, bool disabled) {
  if (auto st = env_.service.SetAccountDisabled(&c.principal(), c.Param("account_id"), disabled);
      !st.ok()) {
    return Fail(c, st.error());
  }
  return Json(200, json::object{{"account_id", c.Param("account_id")}, {"disabled", disabled}});
}

HttpResponse Api::NewToken(Call& c) {
  auto body = Body::Parse(c.request);
  if (!body.ok()) return Fail(c, body.error());
  std::string label = body->String("label", false, 200);
  const auto ttl_days = body->Integer("ttl_days", false);
  if (auto st = body->Finish(); !st.ok()) return Fail(c, st.error());
  const int64_t days = ttl_days.value_or(90);
  if (days < 1 || days > 3660) return Fail(c, Error::BadInput("must be 1 to 3660", "ttl_days"));
  auto issued = env_.service.IssueToken(&c.principal(), c.Param("account_id"), "api",
                                        label.empty() ? "issued by an admin" : label,
                                        std::chrono::hours(24 * days));
  if (!issued.ok()) return Fail(c, issued.error());
  return Json(201, IssuedTokenJson(*issued));
}

// ---- Patients.

HttpResponse Api::Enroll(Call& c) {
  auto body = Body::Parse(c.request);
  if (!body.ok()) return Fail(c, body.error());
  service::EnrollRequest r;
  r.patient_id = body->String("patient_id", false, store::kMaxPatientIdBytes);
  r.birth_date = body->String("birth_date", true, 10);
  r.jurisdiction = body->String("jurisdiction", true, 8);
  r.category = body->String("category", true, 64);
  r.time_zone = body->String("time_zone", false, 64);
  r.program = body->String("program", false, 64);
  if (auto st = body->Finish(); !st.ok()) return Fail(c, st.error());
  auto key = IdempotencyKey(c.request);
  if (!key.ok()) return Fail(c, key.error());
  r.idempotency_key = *key;
  c.audit_patient = r.patient_id;
  std::string id;
  auto result = env_.service.Enroll(c.principal(), r, &id);
  if (!result.ok()) return Fail(c, result.error());
  c.audit_patient = id;
  HttpResponse resp =
      Json(result->replayed ? 200 : 201, json::object{{"patient_id", id},
                                                      {"version", result->last_version},
                                                      {"replayed", result->replayed}});
  resp.headers.emplace_back("Location", "/v1/patients/" + PercentEncode(id));
  resp.headers.emplace_back("ETag", ETag(result->last_version));
  return resp;
}

HttpResponse Api::ReadPatient(Call& c) {
  auto at = QueryInstant(c.request, "at");
  if (!at.ok()) return Fail(c, at.error());
  auto view = env_.service.ReadPatient(c.principal(), c.Param("patient_id"), *at);
  if (!view.ok()) return Fail(c, view.error());
  std::string body = "{\"patient_id\":" + Quoted(view->patient_id) +
                     ",\"version\":" + std::to_string(view->version) +
                     ",\"erased\":" + (view->erased ? "true" : "false");
  if (!view->erased) {
    body += ",\"record\":" + view->record_json + ",\"evaluation\":" + view->evaluation_json;
  }
  body += "}";
  HttpResponse resp = Json(200, std::move(body));
  resp.headers.emplace_back("ETag", ETag(view->version));
  return resp;
}

HttpResponse Api::Timeline(Call& c) {
  auto stream = env_.service.ReadTimeline(c.principal(), c.Param("patient_id"));
  if (!stream.ok()) return Fail(c, stream.error());
  std::string body = "{\"patient_id\":" + Quoted(stream->patient_id) +
                     ",\"version\":" + std::to_string(stream->version) + ",\"entries\":[";
  bool first = true;
  for (const store::StoredEntry& e : stream->entries) {
    if (!first) body += ",";
    first = false;
    json::object meta{
        {"position", e.position},
        {"version", e.version},
        {"event_id", e.event_id},
        {"type", e.type},
        {"recorded_at", FormatUtc(e.recorded_at)},
        {"actor",
         json::object{{"id", e.actor.id}, {"role", e.actor.role}, {"source", e.actor.source}}}};
    std::string m = json::serialize(meta);
    m.pop_back();  // the closing brace: the event itself goes in raw
    body += m + ",\"event\":" + (e.json.empty() ? std::string("null") : e.json) + "}";
  }
  body += "]}";
  HttpResponse resp = Json(200, std::move(body));
  resp.headers.emplace_back("ETag", ETag(stream->version));
  return resp;
}

HttpResponse Api::AppendAndAnswer(Call& c, std::vector<std::string> events) {
  service::AppendEventsRequest r;
  r.patient_id = c.Param("patient_id");
  r.events = std::move(events);
  auto if_match = IfMatchVersion(c.request);
  if (!if_match.ok()) return Fail(c, if_match.error());
  r.if_match_version = *if_match;
  auto key = IdempotencyKey(c.request);
  if (!key.ok()) return Fail(c, key.error());
  r.idempotency_key = *key;
  auto out = env_.service.AppendEvents(c.principal(), r);
  if (!out.ok()) return Fail(c, out.error());
  HttpResponse resp = Json(out->result.replayed ? 200 : 201, AppendJson(*out, r.patient_id));
  resp.headers.emplace_back("ETag", ETag(out->result.last_version));
  return resp;
}

HttpResponse Api::AppendEvents(Call& c) {
  auto value = ParseJsonBody(c.request);
  if (!value.ok()) return Fail(c, value.error());
  // {"events": [...]} or a single event object.
  std::vector<std::string> events;
  if (value->is_object() && value->get_object().contains("events")) {
    const json::object& o = value->get_object();
    if (o.size() != 1) {
      for (const auto& m : o) {
        if (m.key() != "events") {
          return Fail(
              c, Error::BadInput("unknown field (this body takes: events)", std::string(m.key())));
        }
      }
    }
    const json::value& list = o.at("events");
    if (!list.is_array()) return Fail(c, Error::BadInput("must be an array", "events"));
    for (const json::value& e : list.get_array()) events.push_back(json::serialize(e));
  } else if (value->is_object()) {
    events.push_back(json::serialize(*value));
  } else {
    return Fail(c,
                Error::BadInput("the body must be an event object or {\"events\": [...]}", "body"));
  }
  return AppendAndAnswer(c, std::move(events));
}

HttpResponse Api::Correct(Call& c) {
  auto key = IdempotencyKey(c.request);
  if (!key.ok()) return Fail(c, key.error());
  auto out = env_.service.Correct(c.principal(), c.Param("patient_id"), c.Param("event_id"), *key);
  if (!out.ok()) return Fail(c, out.error());
  return Json(out->result.replayed ? 200 : 201, AppendJson(*out, c.Param("patient_id")));
}

HttpResponse Api::Prescribe(Call& c) {
  auto value = ParseJsonBody(c.request);
  if (!value.ok()) return Fail(c, value.error());
  if (!value->is_object()) return Fail(c, Error::BadInput("must be a JSON object", "body"));
  json::object event = value->get_object();
  if (event.contains("type")) {
    return Fail(c, Error::BadInput("the type is implied by the route", "type"));
  }
  event["type"] = "prescription";
  if (!event.contains("at")) event["at"] = FormatUtc(env_.service.Now());
  if (!event.contains("id")) event["id"] = service::NewRandomId("rx-", 10);
  const std::string id = event["id"].is_string() ? std::string(event["id"].get_string()) : "";
  HttpResponse resp = AppendAndAnswer(c, {json::serialize(event)});
  if (resp.status >= 300) return resp;
  // The answer adds the evaluation of the new prescription.
  auto view = env_.service.ReadPatient(c.principal(), c.Param("patient_id"), std::nullopt, id);
  if (view.ok()) {
    resp.body.pop_back();
    resp.body +=
        ",\"prescription_id\":" + Quoted(id) + ",\"evaluation\":" + view->evaluation_json + "}";
  }
  resp.headers.emplace_back("Location", "/v1/patients/" + PercentEncode(c.Param("patient_id")) +
                                            "/prescriptions/" + PercentEncode(id) + "/evaluation");
  return resp;
}

HttpResponse Api::CancelPrescription(Call& c) {
  json::object event{{"type", "prescription_cancel"},
                     {"at", FormatUtc(env_.service.Now())},
                     {"prescription", c.Param("prescription_id")}};
  if (!c.request.body.empty()) {
    return Fail(c, Error::BadInput("this request takes no body", "body"));
  }
  return AppendAndAnswer(c, {json::serialize(event)});
}

HttpResponse Api::EvaluatePrescription(Call& c) {
  auto at = QueryInstant(c.request, "at");
  if (!at.ok()) return Fail(c, at.error());
  auto view = env_.service.ReadPatient(c.principal(), c.Param("patient_id"), *at,
                                       c.Param("prescription_id"));
  if (!view.ok()) return Fail(c, view.error());
  if (view->erased)
    return Fail(c, Error::BadInput("the patient's record was erased", "patient_id"));
  HttpResponse resp = Json(200, view->evaluation_json);
  resp.headers.emplace_back("ETag", ETag(view->version));
  return resp;
}

HttpResponse Api::Calendar(Call& c) {
  auto ics = env_.service.Calendar(c.principal(), c.Param("patient_id"));
  if (!ics.ok()) return Fail(c, ics.error());
  HttpResponse resp;
  resp.content_type = "text/calendar; charset=utf-8";
  resp.body = std::move(*ics);
  resp.headers.emplace_back("Content-Disposition", "attachment; filename=\"isoguard-due.ics\"");
  return resp;
}

HttpResponse Api::PharmacyView(Call& c) {
  auto view = env_.service.PharmacyView(c.principal(), c.Param("patient_id"));
  if (!view.ok()) return Fail(c, view.error());
  return Json(200, std::move(*view));
}

// ---- Pharmacy.

HttpResponse Api::Authorize(Call& c) {
  auto body = Body::Parse(c.request);
  if (!body.ok()) return Fail(c, body.error());
  service::AuthorizationRequest r;
  r.patient_id = body->String("patient_id", true, store::kMaxPatientIdBytes);
  r.prescription_id = body->String("prescription_id", true, service::kMaxIdBytes);
  if (auto st = body->Finish(); !st.ok()) return Fail(c, st.error());
  c.audit_patient = r.patient_id;
  auto answer = env_.service.Authorize(c.principal(), r);
  if (!answer.ok()) return Fail(c, answer.error());
  json::object o;
  o["decision"] = answer->authorized ? "authorized" : "denied";
  o["patient_id"] = answer->patient_id;
  o["prescription_id"] = answer->prescription_id;
  if (!answer->program_id.empty()) o["program"] = answer->program_id;
  o["decided_at"] = FormatUtc(answer->decided_at);
  if (answer->authorized) {
    o["authorization_id"] = answer->authorization_id;
    o["dispense_by"] = FormatUtc(*answer->dispense_by);
    o["existing"] = answer->existing;
  }
  json::array reasons;
  std::string codes;
  for (const Reason& reason : answer->reasons) {
    reasons.push_back(json::object{{"code", reason.code}, {"message", reason.message}});
    codes += (codes.empty() ? "" : ",") + std::string(reason.code);
  }
  o["reasons"] = std::move(reasons);
  if (!answer->authorized) {
    authorizations_denied_.Inc();
    c.audit_detail = "denied: " + codes;
    c.audit_durably = true;  // a denial is recorded only here
    return Json(200, o);
  }
  if (answer->existing) {
    authorizations_existing_.Inc();
    c.audit_detail = "existing " + answer->authorization_id;
    return Json(200, o);
  }
  authorizations_authorized_.Inc();
  c.audit_detail = "authorized " + answer->authorization_id;
  HttpResponse resp = Json(201, o);
  resp.headers.emplace_back("Location",
                            "/v1/authorizations/" + PercentEncode(answer->authorization_id));
  return resp;
}

HttpResponse Api::GetAuthorization(Call& c) {
  if (auto st = service::Require(c.principal(), service::Capability::kAuthorize); !st.ok()) {
    return Fail(c, st.error());
  }
  auto a = env_.service.store().GetAuthorization(c.Param("authorization_id"));
  if (!a.ok()) return Fail(c, a.error());
  if (!a->has_value() || (*a)->pharmacy_id != c.principal().account.org_id) {
    return Fail(c, Error::NotFound("no such authorization for your pharmacy", "authorization_id"));
  }
  c.audit_patient = (*a)->patient_id;
  return Json(200, AuthorizationRecordJson(**a));
}

HttpResponse Api::Reverse(Call& c) {
  std::string reason;
  if (!c.request.body.empty()) {
    auto body = Body::Parse(c.request);
    if (!body.ok()) return Fail(c, body.error());
    reason = body->String("reason", false);
    if (auto st = body->Finish(); !st.ok()) return Fail(c, st.error());
  }
  auto a = env_.service.Reverse(c.principal(), c.Param("authorization_id"), reason);
  if (!a.ok()) return Fail(c, a.error());
  c.audit_patient = a->patient_id;
  return Json(200, AuthorizationRecordJson(*a));
}

HttpResponse Api::Dispense(Call& c) {
  auto body = Body::Parse(c.request);
  if (!body.ok()) return Fail(c, body.error());
  service::DispenseRequest r;
  r.authorization_id = body->String("authorization_id", true, service::kMaxIdBytes);
  r.lot_id = body->String("lot_id", true, service::kMaxIdBytes);
  const auto guide = body->Bool("medication_guide_given", true);
  if (auto st = body->Finish(); !st.ok()) return Fail(c, st.error());
  r.medication_guide_given = guide.value_or(false);
  auto key = IdempotencyKey(c.request);
  if (!key.ok()) return Fail(c, key.error());
  r.idempotency_key = *key;
  auto d = env_.service.Dispense(c.principal(), r);
  if (!d.ok()) return Fail(c, d.error());
  c.audit_patient = d->patient_id;
  return Json(201, json::object{{"patient_id", d->patient_id},
                                {"authorization_id", d->authorization_id},
                                {"prescription_id", d->prescription_id},
                                {"lot_id", d->lot_id},
                                {"event_id", d->event_id},
                                {"capsules", d->capsules},
                                {"dispensed_at", FormatUtc(d->dispensed_at)}});
}

// ---- Worklists.

HttpResponse Api::PrescriberWorklist(Call& c) {
  LocalDate as_of(static_cast<int32_t>(
      std::chrono::floor<std::chrono::days>(env_.service.Now()).time_since_epoch().count()));
  if (const std::string* v = c.request.query_param("as_of")) {
    auto d = ParseDate(*v);
    if (!d.ok()) return Fail(c, Error::BadInput("must be a date YYYY-MM-DD", "as_of"));
    as_of = *d;
  }
  auto limit = QuerySize(c.request, "limit", kDefaultPageSize, service::kMaxListLimit);
  if (!limit.ok()) return Fail(c, limit.error());
  auto offset = QuerySize(c.request, "offset", 0, SIZE_MAX / 2);
  if (!offset.ok()) return Fail(c, offset.error());
  service::WorklistFilter filter;
  if (const std::string* v = c.request.query_param("severity")) filter.severity = *v;
  if (const std::string* v = c.request.query_param("status")) filter.status = *v;
  if (const std::string* v = c.request.query_param("q")) filter.text = *v;
  auto list = env_.service.PrescriberWorklist(c.principal(), as_of, *limit, *offset, filter);
  if (!list.ok()) return Fail(c, list.error());
  json::array items;
  for (const service::WorklistItem& i : list->items) {
    json::object o;
    o["patient_id"] = i.patient_id;
    o["worst_severity"] =
        i.worst_severity.empty() ? json::value(nullptr) : json::value(i.worst_severity);
    json::array alerts, overdue, due;
    for (const auto& a : i.alerts) alerts.emplace_back(a);
    for (const auto& a : i.overdue) overdue.emplace_back(a);
    for (const auto& a : i.due) due.emplace_back(a);
    o["alerts"] = std::move(alerts);
    o["overdue"] = std::move(overdue);
    o["due"] = std::move(due);
    if (i.next_due_by) o["next_due_by"] = i.next_due_by->ToString();
    items.push_back(std::move(o));
  }
  return Json(200, json::object{{"as_of", as_of.ToString()},
                                {"total", list->total},
                                {"offset", *offset},
                                {"items", std::move(items)}});
}

HttpResponse Api::PharmacyWorklist(Call& c) {
  auto limit = QuerySize(c.request, "limit", kDefaultPageSize, service::kMaxListLimit);
  if (!limit.ok()) return Fail(c, limit.error());
  auto offset = QuerySize(c.request, "offset", 0, SIZE_MAX / 2);
  if (!offset.ok()) return Fail(c, offset.error());
  auto list = env_.service.OpenAuthorizations(c.principal(), *limit, *offset);
  if (!list.ok()) return Fail(c, list.error());
  json::array items;
  for (const auto& a : *list) items.push_back(AuthorizationRecordJson(a));
  return Json(200, json::object{{"offset", *offset}, {"items", std::move(items)}});
}

// ---- Stock.

HttpResponse Api::AddLot(Call& c) {
  auto body = Body::Parse(c.request);
  if (!body.ok()) return Fail(c, body.error());
  service::Lot lot;
  lot.id = body->String("lot_id", false, service::kMaxIdBytes);
  lot.product = body->String("product", true, 32);
  lot.strength_mg = body->Number("strength_mg", true).value_or(0);
  lot.lot_number = body->String("lot_number", true, service::kMaxIdBytes);
  const std::string expiry = body->String("expiry", true, 10);
  lot.location = body->String("location", true, service::kMaxIdBytes);
  lot.quantity_capsules = body->Integer("quantity_capsules", true).value_or(0);
  if (auto st = body->Finish(); !st.ok()) return Fail(c, st.error());
  auto date = ParseDate(expiry);
  if (!date.ok()) return Fail(c, Error::BadInput("must be a date YYYY-MM-DD", "expiry"));
  lot.expiry = *date;
  if (lot.id.empty()) lot.id = service::NewRandomId("L-", 10);
  if (auto st = env_.service.AddLot(c.principal(), lot); !st.ok()) return Fail(c, st.error());
  auto stored = env_.service.store().GetLot(lot.id);
  if (!stored.ok()) return Fail(c, stored.error());
  return Json(201, LotJson(*stored));
}

HttpResponse Api::ListLots(Call& c) {
  auto lots = env_.service.ListLots(c.principal());
  if (!lots.ok()) return Fail(c, lots.error());
  json::array items;
  for (const auto& l : *lots) items.push_back(LotJson(l));
  return Json(200, json::object{{"items", std::move(items)}});
}

HttpResponse Api::ReleaseLot(Call& c) {
  auto body = Body::Parse(c.request);
  if (!body.ok()) return Fail(c, body.error());
  const std::string reason = body->String("reason", true);
  if (auto st = body->Finish(); !st.ok()) return Fail(c, st.error());
  if (auto st = env_.service.ReleaseLot(c.principal(), c.Param("lot_id"), reason); !st.ok()) {
    return Fail(c, st.error());
  }
  auto lot = env_.service.store().GetLot(c.Param("lot_id"));
  if (!lot.ok()) return Fail(c, lot.error());
  return Json(200, LotJson(*lot));
}

HttpResponse Api::QuarantineEvents(Call& c) {
  auto lots = env_.service.ListLots(c.principal());  // checks the role and the pharmacy
  if (!lots.ok()) return Fail(c, lots.error());
  bool own = false;
  for (const auto& l : *lots) own = own || l.id == c.Param("lot_id");
  if (!own) return Fail(c, Error::NotFound("no such lot in your pharmacy", "lot_id"));
  auto events = env_.service.store().ListQuarantineEvents(c.Param("lot_id"));
  if (!events.ok()) return Fail(c, events.error());
  json::array items;
  for (const auto& e : *events) {
    items.push_back(json::object{{"id", e.id},
                                 {"action", e.action},
                                 {"reason", e.reason},
                                 {"at", FormatUtc(e.at)},
                                 {"by", e.by}});
  }
  return Json(200, json::object{{"lot_id", c.Param("lot_id")}, {"items", std::move(items)}});
}

HttpResponse Api::RecordTemperature(Call& c) {
  auto body = Body::Parse(c.request);
  if (!body.ok()) return Fail(c, body.error());
  service::TemperatureReading reading;
  reading.location = body->String("location", true, service::kMaxIdBytes);
  reading.celsius = body->Number("celsius", true).value_or(0);
  const std::string at = body->String("at", false, 64);
  if (auto st = body->Finish(); !st.ok()) return Fail(c, st.error());
  if (!at.empty()) {
    auto t = ParseOffsetTime(at);
    if (!t.ok()) return Fail(c, Error::BadInput("must be a time with an offset", "at"));
    reading.at = t->instant;
  }
  auto result = env_.service.RecordTemperature(c.principal(), reading);
  if (!result.ok()) return Fail(c, result.error());
  json::array quarantined;
  for (const auto& id : result->quarantined_lot_ids) quarantined.emplace_back(id);
  json::object o = ReadingJson(result->reading);
  o["excursion"] = result->excursion;
  o["quarantined_lot_ids"] = std::move(quarantined);
  return Json(201, o);
}

HttpResponse Api::ListTemperatures(Call& c) {
  auto after = QuerySize(c.request, "after", 0, SIZE_MAX / 2);
  if (!after.ok()) return Fail(c, after.error());
  auto limit = QuerySize(c.request, "limit", kDefaultPageSize, service::kMaxListLimit);
  if (!limit.ok()) return Fail(c, limit.error());
  auto readings =
      env_.service.ListTemperatures(c.principal(), static_cast<int64_t>(*after), *limit);
  if (!readings.ok()) return Fail(c, readings.error());
  json::array items;
  for (const auto& r : *readings) items.push_back(ReadingJson(r));
  return Json(200, json::object{{"items", std::move(items)}});
}

// ---- Notifications.

HttpResponse Api::Notifications(Call& c) {
  auto after = QuerySize(c.request, "after", 0, SIZE_MAX / 2);
  if (!after.ok()) return Fail(c, after.error());
  auto limit = QuerySize(c.request, "limit", kDefaultPageSize, service::kMaxListLimit);
  if (!limit.ok()) return Fail(c, limit.error());
  const std::string* unread = c.request.query_param("unread");
  if (unread != nullptr && *unread != "true" && *unread != "false") {
    return Fail(c, Error::BadInput("must be true or false", "unread"));
  }
  auto list = env_.service.store().ListNotifications(c.principal().account.id,
                                                     unread != nullptr && *unread == "true",
                                                     static_cast<int64_t>(*after), *limit);
  if (!list.ok()) return Fail(c, list.error());
  json::array items;
  for (const auto& n : *list) {
    json::object o{{"id", n.id},
                   {"kind", n.kind},
                   {"severity", n.severity},
                   {"message", n.message},
                   {"created_at", FormatUtc(n.created_at)}};
    if (!n.patient_id.empty()) o["patient_id"] = n.patient_id;
    o["read_at"] = n.read_at ? json::value(FormatUtc(*n.read_at)) : json::value(nullptr);
    items.push_back(std::move(o));
  }
  return Json(200, json::object{{"items", std::move(items)}});
}

HttpResponse Api::MarkRead(Call& c) {
  int64_t id = 0;
  const std::string& text = c.Param("notification_id");
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size() || id <= 0) {
    return Fail(c, Error::BadInput("must be a notification id", "notification_id"));
  }
  if (auto st = env_.service.store().MarkNotificationRead(id, c.principal().account.id,
                                                          env_.service.Now());
      !st.ok()) {
    return Fail(c, st.error());
  }
  return Json(200, json::object{{"id", id}, {"read", true}});
}

// ---- Webhooks.

HttpResponse Api::AddWebhook(Call& c) {
  auto body = Body::Parse(c.request);
  if (!body.ok()) return Fail(c, body.error());
  const std::string url = body->String("url", true, 2048);
  const std::string secret = body->String("secret", false, 256);
  if (auto st = body->Finish(); !st.ok()) return Fail(c, st.error());
  if (auto parsed = ParseWebhookUrl(url); !parsed.ok()) return Fail(c, parsed.error());
  auto hook = env_.service.AddWebhook(c.principal(), url, secret);
  if (!hook.ok()) return Fail(c, hook.error());
  return Json(201, json::object{{"id", hook->id},
                                {"org_id", hook->org_id},
                                {"url", hook->url},
                                {"secret", hook->secret},
                                {"created_at", FormatUtc(hook->created_at)}});
}

HttpResponse Api::ListWebhooks(Call& c) {
  auto hooks = env_.service.ListWebhooks(c.principal());
  if (!hooks.ok()) return Fail(c, hooks.error());
  json::array items;
  for (const auto& h : *hooks) {  // the secrets were shown when made
    items.push_back(
        json::object{{"id", h.id}, {"url", h.url}, {"created_at", FormatUtc(h.created_at)}});
  }
  return Json(200, json::object{{"items", std::move(items)}});
}

// ---- Admin.

HttpResponse Api::AuditLogRoute(Call& c) {
  if (auto st = service::Require(c.principal(), service::Capability::kAuditLog); !st.ok()) {
    return Fail(c, st.error());
  }
  service::AuditFilter f;
  if (const std::string* p = c.request.query_param("patient_id")) f.patient_id = *p;
  if (const std::string* a = c.request.query_param("actor_id")) f.actor_id = *a;
  auto after = QuerySize(c.request, "after", 0, SIZE_MAX / 2);
  if (!after.ok()) return Fail(c, after.error());
  auto limit = QuerySize(c.request, "limit", kDefaultPageSize, service::kMaxListLimit);
  if (!limit.ok()) return Fail(c, limit.error());
  f.after_id = static_cast<int64_t>(*after);
  f.limit = *limit;
  env_.audit.Flush();  // the admin sees every access made before the request
  auto records = env_.service.store().ListAudit(f);
  if (!records.ok()) return Fail(c, records.error());
  json::array items;
  for (const auto& r : *records) {
    items.push_back(json::object{{"id", r.id},
                                 {"at", FormatUtc(r.at)},
                                 {"request_id", r.request_id},
                                 {"actor_id", r.actor_id},
                                 {"actor_role", r.actor_role},
                                 {"org_id", r.org_id},
                                 {"source", r.source},
                                 {"action", r.action},
                                 {"patient_id", r.patient_id},
                                 {"outcome", r.outcome},
                                 {"status", r.status},
                                 {"detail", r.detail}});
  }
  return Json(200, json::object{{"items", std::move(items)}});
}

HttpResponse Api::Registry(Call& c) {
  if (auto st = service::Require(c.principal(), service::Capability::kReports); !st.ok()) {
    return Fail(c, st.error());
  }
  auto after = QuerySize(c.request, "after", 0, SIZE_MAX / 2);
  if (!after.ok()) return Fail(c, after.error());
  auto limit = QuerySize(c.request, "limit", kDefaultPageSize, service::kMaxListLimit);
  if (!limit.ok()) return Fail(c, limit.error());
  auto reports = env_.service.store().ListPregnancyReports(static_cast<int64_t>(*after), *limit);
  if (!reports.ok()) return Fail(c, reports.error());
  json::array items;
  for (const auto& r : *reports) {
    items.push_back(json::object{{"id", r.id},
                                 {"patient_id", r.patient_id},
                                 {"event_id", r.event_id},
                                 {"program", r.program_id},
                                 {"clinic_id", r.clinic_id},
                                 {"reported_at", FormatUtc(r.reported_at)}});
  }
  return Json(200, json::object{{"items", std::move(items)}});
}

}  // namespace

std::shared_ptr<void> AddApiRoutes(Router& router, ApiEnvironment& env) {
  auto api = std::make_shared<Api>(router, env);
  api->AddAll();
  return api;
}

}  // namespace isoguard::server
