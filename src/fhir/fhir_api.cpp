#include "fhir/fhir_api.h"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <optional>

#include "domain/record_parser.h"
#include "fhir/cds_auth.h"
#include "fhir/cds_hooks.h"
#include "fhir/fhir_resources.h"
#include "rules/evaluate.h"
#include "server/json_body.h"
#include "server/log.h"
#include "server/problem.h"
#include "server/url.h"
#include "service/credentials.h"

namespace isoguard::fhir {
namespace {

namespace json = boost::json;
using server::HttpRequest;
using server::HttpResponse;
using server::PathParams;
using service::Principal;

constexpr std::string_view kFhirJson = "application/fhir+json";
constexpr size_t kMaxHeaderValueBytes = 200;

// One call as its handler sees it (the FHIR twin of the native API's Call).
struct Call {
  const HttpRequest& request;
  const PathParams& params;
  std::optional<Principal> who;
  std::string audit_patient;
  std::string audit_detail;
  std::string cds_client;  // the iss of a verified CDS client JWT, for the audit

  const std::string& Param(std::string_view name) const {
    static const std::string empty;
    const std::string* v = server::FindParam(params, name);
    return v != nullptr ? *v : empty;
  }
  const Principal& principal() const { return *who; }
};

HttpResponse FhirJson(int status, const json::value& body) {
  HttpResponse r;
  r.status = status;
  r.content_type = std::string(kFhirJson);
  r.body = json::serialize(body);
  return r;
}

std::string WeakETag(int64_t version) { return "W/\"" + std::to_string(version) + "\""; }

// W/"7", "7" or 7 -> 7.
std::optional<int64_t> ParseETag(std::string_view v) {
  if (v.starts_with("W/")) v.remove_prefix(2);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  int64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n < 0) return std::nullopt;
  return n;
}

// Maps a record field the engine names ("events[2].kg") to the FHIR element it came from.
std::string ElementOfRecordField(std::string_view resource_type, std::string_view field) {
  const size_t dot = field.find("].");
  std::string_view name = dot == std::string_view::npos ? field : field.substr(dot + 2);
  if (const size_t bracket = name.find('['); bracket != std::string_view::npos) {
    name = name.substr(0, bracket);
  }
  struct Row {
    std::string_view type, field, element;
  };
  static constexpr Row kRows[] = {
      {"Observation", "kg", "valueQuantity.value"},
      {"Observation", "value", "valueQuantity.value"},
      {"Observation", "unit", "valueQuantity.code"},
      {"Observation", "uln", "referenceRange[0].high.value"},
      {"Observation", "items", "component"},
      {"Observation", "at", "effectiveDateTime"},
      {"Observation", "collected_at", "effectiveDateTime"},
      {"Observation", "setting", "extension"},
      {"Observation", "result", "valueCodeableConcept"},
      {"MedicationRequest", "doses_mg", "dosageInstruction"},
      {"MedicationRequest", "days_supply", "dispenseRequest.expectedSupplyDuration.value"},
      {"MedicationRequest", "refills", "dispenseRequest.numberOfRepeatsAllowed"},
      {"MedicationRequest", "at", "authoredOn"},
      {"MedicationRequest", "product", "medicationCodeableConcept.coding"},
      {"MedicationStatement", "name", "medicationCodeableConcept.text"},
      {"MedicationStatement", "atc", "medicationCodeableConcept.coding"},
      {"MedicationStatement", "at", "effectiveDateTime"},
  };
  for (const Row& r : kRows) {
    if (r.type == resource_type && r.field == name) {
      return std::string(resource_type) + "." + std::string(r.element);
    }
  }
  return std::string(resource_type);
}

// A FHIR date search value: prefix and the instant range it denotes.
struct DateParam {
  std::string prefix = "eq";
  Instant begin{}, end{};  // [begin, end)
};

Result<DateParam> ParseDateParam(std::string_view name, std::string_view v) {
  DateParam p;
  for (std::string_view prefix : {"eq", "ne", "ge", "le", "gt", "lt"}) {
    if (v.starts_with(prefix)) {
      p.prefix = std::string(prefix);
      v.remove_prefix(2);
      break;
    }
  }
  if (auto d = ParseDate(v); d.ok() && v.size() == 10) {
    p.begin = Instant(std::chrono::days(d->days_since_epoch()));
    p.end = p.begin + std::chrono::days(1);
    return p;
  }
  if (auto t = ParseOffsetTime(v); t.ok()) {
    p.begin = t->instant;
    p.end = t->instant + std::chrono::milliseconds(1);
    return p;
  }
  return Error::BadInput("must be [eq|ne|ge|le|gt|lt]YYYY-MM-DD or a time with an offset",
                         std::string(name));
}

bool DateMatches(const DateParam& p, Instant t) {
  if (p.prefix == "eq") return t >= p.begin && t < p.end;
  if (p.prefix == "ne") return t < p.begin || t >= p.end;
  if (p.prefix == "ge") return t >= p.begin;
  if (p.prefix == "gt") return t >= p.end;
  if (p.prefix == "le") return t < p.end;
  return t < p.begin;  // lt
}

class FhirApi {
 public:
  FhirApi(server::Router& router, server::ApiEnvironment& env, FhirOptions options)
      : router_(router), env_(env), options_(std::move(options)) {
    parse_.is_known_program = [this](std::string_view id) {
      return env_.service.rulebook().FindProgram(id) != nullptr;
    };
    // A prefetch that cannot be fetched leaves the cards to isoguard's record alone; the log
    // says why (certificate not trusted, host name mismatch, timeout, ...). The error names
    // the FHIR server's host, never the URL's query (a patient id) or the token.
    FhirFetcher fetch = options_.fetch;
    if (fetch) {
      fetch = [this, inner = std::move(fetch)](const std::string& url, const std::string& token,
                                               std::chrono::milliseconds timeout) {
        auto body = inner(url, token, timeout);
        if (!body.ok()) {
          env_.logger.Warn("CDS Hooks prefetch not fetched", {{"error", body.error().ToString()}});
        }
        return body;
      };
    }
    cds_ = std::make_unique<CdsHooks>(options_.knowledge, env_.service.rulebook(), parse_,
                                      std::move(fetch), options_.fetch_timeout);
  }

  void AddAll();

 private:
  // kCdsClient: an isoguard API token, or a CDS client's JWT when --cds-clients is given.
  enum class Auth { kPublic, kToken, kCdsClient };
  using Handler = std::function<HttpResponse(Call&)>;

  void Add(std::string method, std::string pattern, Auth auth, Handler handler) {
    const std::string action = method + " " + pattern;
    server::RouteOptions route_options;
    route_options.max_body_bytes = server::kMaxApiBodyBytes;
    router_.Add(
        method, pattern,
        [this, auth, action, handler = std::move(handler)](const HttpRequest& request,
                                                           const PathParams& params) {
          return Run(auth, action, handler, request, params);
        },
        route_options);
  }

  HttpResponse Run(Auth auth, const std::string& action, const Handler& handler,
                   const HttpRequest& request, const PathParams& params) {
    Call call{request, params, std::nullopt, {}, {}, {}};
    if (auth != Auth::kPublic) {
      const std::string* header = request.header("authorization");
      const std::string_view value = header != nullptr ? std::string_view(*header) : "";
      constexpr std::string_view kBearer = "Bearer ";
      const bool jwt = auth == Auth::kCdsClient && options_.cds_clients != nullptr &&
                       value.starts_with(kBearer) &&
                       CdsClients::LooksLikeJwt(value.substr(kBearer.size()));
      auto who = jwt ? AuthenticateCdsClient(call, value.substr(kBearer.size()))
                     : env_.service.authenticator().Authenticate(value, env_.service.Now());
      if (!who.ok() && auth == Auth::kCdsClient && options_.cds_clients != nullptr &&
          value.starts_with(kBearer) && !jwt &&
          !service::LooksLikeToken(value.substr(kBearer.size()))) {
        who = Error::Unauthenticated(
            "the token is neither an isoguard API token nor a CDS client JWT (three base64url "
            "parts joined by dots)",
            "Authorization");
      }
      if (!who.ok()) {
        // The refused attempt names the patient it asked for, as the native API's do.
        call.audit_patient = PatientNamed(request, params);
        // The CDS routes answer problem details, as their handlers do; FHIR routes an
        // OperationOutcome.
        HttpResponse response =
            auth == Auth::kCdsClient
                ? server::ProblemFromError(who.error(), request.request_id, env_.logger)
                : Fail(call, who.error());
        Audit(call, action, response.status, who.error().message);
        return response;
      }
      who->source = request.source();
      who->request_id = request.request_id;
      call.who = std::move(*who);
    }
    HttpResponse response = handler(call);
    if (auth != Auth::kPublic) Audit(call, action, response.status, call.audit_detail);
    return response;
  }

  // A CDS client's JWT (cds_auth.h) as the principal of the account the client acts for:
  // that account must exist, be enabled, and be a prescriber or clinic staff (the roles that
  // see their clinic's patients, as a CDS client does).
  Result<Principal> AuthenticateCdsClient(Call& call, std::string_view jwt) {
    std::string_view path = call.request.target;
    if (const size_t q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
    auto client = options_.cds_clients->Verify(jwt, path, env_.service.Now());
    if (!client.ok()) return client.error();
    call.cds_client = client->iss;
    auto account = env_.service.store().GetAccount(client->account_id);
    if (!account.ok()) {
      if (account.error().kind != ErrorKind::kNotFound) return account.error();
      return Error::Unauthenticated("the account '" + client->account_id + "' of CDS client '" +
                                        client->iss + "' does not exist",
                                    "Authorization");
    }
    if (account->disabled) {
      return Error::Unauthenticated("the account of CDS client '" + client->iss + "' is disabled",
                                    "Authorization");
    }
    if (account->role != service::Role::kPrescriber &&
        account->role != service::Role::kClinicStaff) {
      return Error::Forbidden("a CDS client acts for a prescriber or clinic staff account",
                              "Authorization");
    }
    Principal p;
    p.account = std::move(*account);
    return p;
  }

 public:
  // The patient a request names before anything is read: Patient/{id}, or a search's
  // `patient`, `subject` or `_id` ("" when it names none).
  static std::string PatientNamed(const HttpRequest& request, const PathParams& params) {
    const std::string* type = server::FindParam(params, "resource_type");
    const std::string* id = server::FindParam(params, "id");
    if (type != nullptr && id != nullptr && *type == "Patient") return *id;
    for (const auto& [name, value] : request.query) {
      if (name == "patient" || name == "subject" ||
          (name == "_id" && type != nullptr && *type == "Patient")) {
        return value.starts_with("Patient/") ? value.substr(8) : value;
      }
    }
    return {};
  }

  void Audit(const Call& call, const std::string& action, int status, std::string detail) {
    if (!call.cds_client.empty()) detail = "CDS client " + call.cds_client + ": " + detail;
    env_.audit.Record(server::RequestAuditRecord(env_.service.Now(), call.request,
                                                 call.who ? &call.who->account : nullptr, action,
                                                 call.audit_patient, status, std::move(detail)));
  }

  // An OperationOutcome answer for an error, with the status of problem.h's mapping. An
  // internal error's message is logged, never sent.
  HttpResponse Fail(Call& call, const Error& e, std::string_view expression = {}) {
    if (call.audit_detail.empty()) call.audit_detail = e.ToString();
    const int status = server::StatusFor(e);
    std::string diagnostics = e.message;
    if (e.kind == ErrorKind::kInternal) {
      env_.logger.Error("FHIR request failed",
                        {{"request_id", call.request.request_id}, {"error", e.ToString()}});
      diagnostics = "internal error; the server log has the details under the request id " +
                    call.request.request_id;
    }
    std::string where(expression.empty() ? std::string_view(e.field) : expression);
    if (where == "body") where.clear();
    HttpResponse r =
        FhirJson(status, OperationOutcome("error", IssueTypeFor(e), std::move(diagnostics), where));
    if (e.kind == ErrorKind::kUnauthenticated) r.headers.emplace_back("WWW-Authenticate", "Bearer");
    if (e.kind == ErrorKind::kUnavailable) r.headers.emplace_back("Retry-After", "1");
    return r;
  }

  std::string BaseUrl(const HttpRequest& request) const {
    if (!options_.base_url.empty()) return options_.base_url;
    const std::string* host = request.header("host");
    return "http://" + (host != nullptr ? *host : std::string("localhost")) + "/fhir";
  }

  // The patient's stream and (when `with_evaluation`) its evaluation now, as FHIR resources.
  Result<std::vector<Resource>> PatientResources(Call& c, const std::string& patient_id,
                                                 bool with_evaluation) {
    c.audit_patient = patient_id;
    auto stream = env_.service.ReadTimeline(c.principal(), patient_id);
    if (!stream.ok()) return stream.error();
    if (stream->version == 0) return Error::NotFound("no such patient", "patient");
    for (const store::StoredEntry& e : stream->entries) {
      if (e.erased) return Error::NotFound("the patient's record was erased", "patient");
    }
    std::optional<json::object> evaluation;
    if (with_evaluation) {
      auto view = env_.service.ReadPatient(c.principal(), patient_id, std::nullopt);
      if (!view.ok()) return view.error();
      boost::system::error_code ec;
      json::value v = json::parse(view->evaluation_json, ec);
      if (ec || !v.is_object()) return Error::Internal("the evaluation does not parse");
      evaluation = std::move(v.get_object());
    }
    return ResourcesOfStream(options_.knowledge, env_.service.rulebook(), *stream,
                             evaluation ? &*evaluation : nullptr, env_.service.Now());
  }

  HttpResponse Metadata(Call& c);
  HttpResponse Read(Call& c);
  HttpResponse Search(Call& c);
  HttpResponse Create(Call& c);
  HttpResponse Transaction(Call& c);
  HttpResponse RemsEtasu(Call& c);
  HttpResponse CdsDiscovery(Call& c);
  HttpResponse CdsService(Call& c);
  HttpResponse CdsFeedback(Call& c);

  // Appends the events of created resources to one patient's stream; errors name the FHIR
  // element (`paths[i]` is entry i's path, `types[i]` its resource type).
  HttpResponse AppendCreated(Call& c, const std::string& patient_id,
                             std::vector<std::string> events, const std::vector<std::string>& types,
                             const std::vector<std::string>& paths, bool bundle);

 private:
  server::Router& router_;
  server::ApiEnvironment& env_;
  FhirOptions options_;
  ParseOptions parse_;
  std::unique_ptr<CdsHooks> cds_;
};

// ---- The CapabilityStatement.

HttpResponse FhirApi::Metadata(Call& c) {
  const FhirKnowledge& k = options_.knowledge;
  json::array resources;
  for (std::string_view type : kReadTypes) {
    json::array interactions{json::object{{"code", "read"}}, json::object{{"code", "search-type"}}};
    if (IsCreateType(type)) interactions.push_back(json::object{{"code", "create"}});
    json::array params;
    auto param = [&params](std::string_view name, std::string_view type_name,
                           std::string_view doc) {
      params.push_back(json::object{{"name", name}, {"type", type_name}, {"documentation", doc}});
    };
    if (type == "Patient") {
      param("_id", "token", "The patient's id (search needs it: access follows care).");
      param("identifier", "token", k.systems.isoguard_patient_id + "|<id>");
    } else {
      param("patient", "reference", "Required: Patient/<id> or <id>.");
      param("code", "token", "system|code, or a code alone.");
      param(
          "date", "date",
          "Effective, authored, handed-over, identified or due date; prefixes eq ne ge le gt lt.");
    }
    param("_count", "number", "Page size, at most 1000 (default 50).");
    param("_offset", "number", "Where the page starts (the next link carries it).");
    json::object r{{"type", type},
                   {"interaction", std::move(interactions)},
                   {"versioning", "versioned"},
                   {"readHistory", false},
                   {"updateCreate", false},
                   {"conditionalRead", "not-match"},
                   {"searchParam", std::move(params)}};
    if (type == "Observation" || type == "MedicationRequest" || type == "MedicationStatement") {
      r["documentation"] =
          "Created resources become events of the patient's stream; they are "
          "never updated or deleted (corrections are new events).";
    }
    resources.push_back(std::move(r));
  }
  json::object capability{
      {"resourceType", "CapabilityStatement"},
      {"status", "active"},
      {"date", FormatUtc(env_.service.Now()).substr(0, 10)},
      {"publisher", "isoguard"},
      {"kind", "instance"},
      {"software", json::object{{"name", "isoguard"}}},
      {"implementation",
       json::object{{"description", "isoguard FHIR R4 facade"}, {"url", BaseUrl(c.request)}}},
      {"fhirVersion", "4.0.1"},
      {"format", json::array{"application/fhir+json"}},
      {"rest",
       json::array{json::object{
           {"mode", "server"},
           {"security", json::object{{"cors", false},
                                     {"description",
                                      "Bearer tokens of isoguard accounts; access follows care."}}},
           {"resource", std::move(resources)},
           {"interaction", json::array{json::object{{"code", "transaction"}}}},
           {"operation",
            json::array{json::object{
                {"name", k.rems.operation},
                {"definition", "http://hl7.org/fhir/us/medication-rems/OperationDefinition/" +
                                   k.rems.operation}}}}}}}};
  return FhirJson(200, capability);
}

// ---- Read and search.

HttpResponse FhirApi::Read(Call& c) {
  const std::string& type = c.Param("resource_type");
  const std::string& id = c.Param("id");
  if (!IsReadType(type)) {
    return Fail(c,
                Error::NotFound("this server has no resource type '" + type + "'", "resourceType"));
  }
  if (!IsFhirId(id)) return Fail(c, Error::BadInput("is not a FHIR id", "id"));
  const std::string patient(PatientOfResourceId(id));
  if (type == "Patient" && patient != id) return Fail(c, Error::NotFound("no such Patient", "id"));
  auto resources = PatientResources(c, patient, type == "DetectedIssue" || type == "Task");
  if (!resources.ok()) return Fail(c, resources.error());
  for (const Resource& r : *resources) {
    if (r.type != type || r.id != id) continue;
    if (const std::string* none_match = c.request.header("if-none-match")) {
      if (ParseETag(*none_match) == r.version) {
        HttpResponse not_modified;
        not_modified.status = 304;
        not_modified.content_type.clear();
        not_modified.headers.emplace_back("ETag", WeakETag(r.version));
        return not_modified;
      }
    }
    HttpResponse response = FhirJson(200, r.body);
    response.headers.emplace_back("ETag", WeakETag(r.version));
    response.headers.emplace_back("Last-Modified", FormatUtc(r.last_updated));
    return response;
  }
  return Fail(c, Error::NotFound("no such " + type, "id"));
}

HttpResponse FhirApi::Search(Call& c) {
  const std::string& type = c.Param("resource_type");
  if (!IsReadType(type)) {
    return Fail(c,
                Error::NotFound("this server has no resource type '" + type + "'", "resourceType"));
  }
  std::string patient;
  std::vector<std::pair<std::string, std::string>> codes;  // (system or empty, code)
  std::vector<DateParam> dates;
  size_t count = kDefaultSearchCount, offset = 0;
  for (const auto& [name, value] : c.request.query) {
    auto size_param = [&](size_t max) -> Result<size_t> {
      size_t n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (value.empty() || ec != std::errc() || end != value.data() + value.size() || n > max) {
        return Error::BadInput("must be an integer from 0 to " + std::to_string(max), name);
      }
      return n;
    };
    if (name == "_count") {
      auto n = size_param(kMaxSearchCount);
      if (!n.ok()) return Fail(c, n.error());
      count = *n;
    } else if (name == "_offset") {
      auto n = size_param(SIZE_MAX / 2);
      if (!n.ok()) return Fail(c, n.error());
      offset = *n;
    } else if (type == "Patient" && (name == "_id" || name == "identifier")) {
      std::string v = value;
      if (name == "identifier") {
        const std::string prefix = options_.knowledge.systems.isoguard_patient_id + "|";
        if (!v.starts_with(prefix)) {
          return Fail(c, Error::BadInput("must be " + prefix + "<id>", "identifier"));
        }
        v = v.substr(prefix.size());
      }
      patient = v;
    } else if (type != "Patient" && (name == "patient" || name == "subject")) {
      patient = value.starts_with("Patient/") ? value.substr(8) : value;
    } else if (type != "Patient" && name == "code") {
      size_t start = 0;
      while (start <= value.size()) {  // a comma-separated list: any of them
        size_t comma = value.find(',', start);
        std::string one =
            value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        const size_t bar = one.find('|');
        if (bar == std::string::npos) {
          codes.emplace_back("", one);
        } else {
          codes.emplace_back(one.substr(0, bar), one.substr(bar + 1));
        }
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    } else if (type != "Patient" && name == "date") {
      auto d = ParseDateParam(name, value);
      if (!d.ok()) return Fail(c, d.error());
      dates.push_back(*d);
    } else {
      return Fail(c, Error::BadInput("unknown search parameter for " + type +
                                         " (see the CapabilityStatement at /fhir/metadata)",
                                     name));
    }
  }
  if (patient.empty()) {
    return Fail(c,
                Error::BadInput(type == "Patient" ? "required: search Patients by _id or identifier"
                                                  : "required: search by patient",
                                type == "Patient" ? "_id" : "patient"));
  }
  if (!IsFhirId(patient) || patient.find('.') != std::string::npos) {
    return Fail(c, Error::BadInput("is not a patient id", type == "Patient" ? "_id" : "patient"));
  }
  auto resources = PatientResources(c, patient, type == "DetectedIssue" || type == "Task");
  if (!resources.ok() && resources.error().kind != ErrorKind::kNotFound) {
    return Fail(c, resources.error());
  }
  std::vector<const Resource*> matches;
  if (resources.ok()) {
    for (const Resource& r : *resources) {
      if (r.type != type) continue;
      bool ok = true;
      if (!codes.empty()) {
        bool any = false;
        for (const auto& [system, code] : codes) {
          for (const auto& [rs, rc] : r.codes)
            any = any || (rc == code && (system.empty() || rs == system));
        }
        ok = any;
      }
      for (const DateParam& d : dates) ok = ok && r.date && DateMatches(d, *r.date);
      if (ok) matches.push_back(&r);
    }
  }
  const std::string base = BaseUrl(c.request);
  auto link = [&](size_t at) {
    std::string url = base + "/" + type + "?";
    for (const auto& [name, value] : c.request.query) {
      if (name == "_offset" || name == "_count") continue;
      url += server::PercentEncode(name) + "=" + server::PercentEncode(value) + "&";
    }
    return url + "_count=" + std::to_string(count) + "&_offset=" + std::to_string(at);
  };
  json::array links{json::object{{"relation", "self"}, {"url", link(offset)}}};
  if (offset + count < matches.size()) {
    links.push_back(json::object{{"relation", "next"}, {"url", link(offset + count)}});
  }
  if (offset > 0) {
    links.push_back(
        json::object{{"relation", "previous"}, {"url", link(offset > count ? offset - count : 0)}});
  }
  json::array entries;
  for (size_t i = offset; i < matches.size() && i < offset + count; ++i) {
    entries.push_back(json::object{{"fullUrl", base + "/" + type + "/" + matches[i]->id},
                                   {"resource", matches[i]->body},
                                   {"search", json::object{{"mode", "match"}}}});
  }
  json::object bundle{{"resourceType", "Bundle"},
                      {"type", "searchset"},
                      {"total", matches.size()},
                      {"link", std::move(links)}};
  if (!entries.empty()) bundle["entry"] = std::move(entries);
  return FhirJson(200, bundle);
}

// ---- Create and transaction.

HttpResponse FhirApi::AppendCreated(Call& c, const std::string& patient_id,
                                    std::vector<std::string> events,
                                    const std::vector<std::string>& types,
                                    const std::vector<std::string>& paths, bool bundle) {
  service::AppendEventsRequest request;
  request.patient_id = patient_id;
  request.events = std::move(events);
  if (const std::string* if_match = c.request.header("if-match")) {
    auto v = ParseETag(*if_match);
    if (!v) return Fail(c, Error::BadInput("must be the Patient's ETag, e.g. W/\"7\"", "If-Match"));
    request.if_match_version = *v;
  }
  if (const std::string* key = c.request.header("idempotency-key")) {
    if (key->empty() || key->size() > kMaxHeaderValueBytes) {
      return Fail(c, Error::BadInput("must be 1 to 200 characters", "Idempotency-Key"));
    }
    request.idempotency_key = *key;
  }
  auto out = env_.service.AppendEvents(c.principal(), request);
  if (!out.ok()) {
    Error e = out.error();
    // "events[i].field" -> the FHIR element of entry i.
    if (e.field.starts_with("events[")) {
      size_t index = 0;
      std::from_chars(e.field.data() + 7, e.field.data() + e.field.size(), index);
      if (index < paths.size()) {
        std::string element = ElementOfRecordField(types[index], e.field);
        element = paths[index] + element.substr(types[index].size());
        e.message = e.message + " (" + e.field + " of the record)";
        return Fail(c, e, element);
      }
    }
    return Fail(c, e);
  }
  auto resources = PatientResources(c, patient_id, false);
  if (!resources.ok()) return Fail(c, resources.error());
  const std::string base = BaseUrl(c.request);
  json::array entries;
  HttpResponse single;
  for (size_t i = 0; i < out->result.event_ids.size(); ++i) {
    const std::string id = patient_id + "." + out->result.event_ids[i];
    const Resource* found = nullptr;
    for (const Resource& r : *resources) {
      if (r.id == id && i < types.size() && r.type == types[i]) found = &r;
    }
    if (found == nullptr)
      return Fail(c, Error::Internal("a created resource is not in the stream"));
    const std::string location = base + "/" + found->type + "/" + server::PercentEncode(found->id) +
                                 "/_history/" + std::to_string(found->version);
    if (!bundle) {
      single = FhirJson(out->result.replayed ? 200 : 201, found->body);
      single.headers.emplace_back("Location", location);
      single.headers.emplace_back("ETag", WeakETag(found->version));
      single.headers.emplace_back("Last-Modified", FormatUtc(found->last_updated));
    }
    entries.push_back(json::object{
        {"fullUrl", base + "/" + found->type + "/" + found->id},
        {"resource", found->body},
        {"response", json::object{{"status", out->result.replayed ? "200 OK" : "201 Created"},
                                  {"location", location},
                                  {"etag", WeakETag(found->version)},
                                  {"lastModified", FormatUtc(found->last_updated)}}}});
  }
  c.audit_detail = std::to_string(entries.size()) + " resource(s) created";
  if (!bundle) return single;
  return FhirJson(200, json::object{{"resourceType", "Bundle"},
                                    {"type", "transaction-response"},
                                    {"entry", std::move(entries)}});
}

HttpResponse FhirApi::Create(Call& c) {
  const std::string& type = c.Param("resource_type");
  auto body = server::ParseJsonBody(c.request);
  if (!body.ok()) return Fail(c, body.error());
  if (!body->is_object())
    return Fail(c, Error::BadInput("must be a FHIR resource (a JSON object)", "body"));
  const json::object& resource = body->get_object();
  const json::value* rt = resource.if_contains("resourceType");
  if (rt == nullptr || !rt->is_string() || rt->get_string() != type) {
    return Fail(c, Error::BadInput("must be '" + type + "' (the type of the URL)", "resourceType"),
                type + ".resourceType");
  }
  if (!IsCreateType(type)) {
    return Fail(c, Error::BadInput("this server creates Observation, MedicationRequest and "
                                   "MedicationStatement; " +
                                       type + " is read-only",
                                   type));
  }
  auto patient = SubjectPatient(resource, type);
  if (!patient.ok()) return Fail(c, patient.error());
  c.audit_patient = *patient;
  auto event = EventFromResource(options_.knowledge, resource, type, env_.service.Now());
  if (!event.ok()) return Fail(c, event.error());
  if (type == "MedicationRequest") (*event)["id"] = service::NewRandomId("rx-", 10);
  return AppendCreated(c, *patient, {json::serialize(*event)}, {type}, {type}, false);
}

HttpResponse FhirApi::Transaction(Call& c) {
  auto body = server::ParseJsonBody(c.request);
  if (!body.ok()) return Fail(c, body.error());
  if (!body->is_object())
    return Fail(c, Error::BadInput("must be a Bundle (a JSON object)", "body"));
  const json::object& bundle = body->get_object();
  const json::value* rt = bundle.if_contains("resourceType");
  if (rt == nullptr || !rt->is_string() || rt->get_string() != "Bundle") {
    return Fail(c, Error::BadInput("must be 'Bundle'", "Bundle.resourceType"));
  }
  const json::value* bt = bundle.if_contains("type");
  if (bt == nullptr || !bt->is_string() || bt->get_string() != "transaction") {
    return Fail(
        c, Error::BadInput("must be 'transaction' (this server takes no batch)", "Bundle.type"));
  }
  const json::value* entries = bundle.if_contains("entry");
  if (entries == nullptr || !entries->is_array() || entries->get_array().empty()) {
    return Fail(c, Error::BadInput("required: at least one entry", "Bundle.entry"));
  }
  if (entries->get_array().size() > kMaxBundleEntries) {
    c.audit_detail = "refused: " + std::to_string(entries->get_array().size()) + " entries";
    return FhirJson(
        413, OperationOutcome("error", "too-costly",
                              "a transaction takes at most " + std::to_string(kMaxBundleEntries) +
                                  " entries, this one has " +
                                  std::to_string(entries->get_array().size()),
                              "Bundle.entry"));
  }
  std::string patient;
  std::vector<std::string> events, types, paths;
  size_t i = 0;
  for (const json::value& entry : entries->get_array()) {
    const std::string path = "Bundle.entry[" + std::to_string(i++) + "]";
    if (!entry.is_object()) return Fail(c, Error::BadInput("must be an object", path));
    const json::value* request = entry.get_object().if_contains("request");
    const json::value* resource = entry.get_object().if_contains("resource");
    if (resource == nullptr || !resource->is_object()) {
      return Fail(c, Error::BadInput("required", path + ".resource"));
    }
    const json::value* rtype = resource->get_object().if_contains("resourceType");
    const std::string type =
        rtype != nullptr && rtype->is_string() ? std::string(rtype->get_string()) : "";
    if (request == nullptr || !request->is_object()) {
      return Fail(c, Error::BadInput("required", path + ".request"));
    }
    const json::value* method = request->get_object().if_contains("method");
    const json::value* url = request->get_object().if_contains("url");
    if (method == nullptr || !method->is_string() || method->get_string() != "POST") {
      return Fail(
          c, Error::BadInput("must be POST (this server only creates)", path + ".request.method"));
    }
    if (url == nullptr || !url->is_string() || url->get_string() != type) {
      return Fail(c, Error::BadInput("must be the resource's type", path + ".request.url"));
    }
    if (!IsCreateType(type)) {
      return Fail(c, Error::BadInput("this server creates Observation, MedicationRequest and "
                                     "MedicationStatement",
                                     path + ".resource.resourceType"));
    }
    auto p = SubjectPatient(resource->get_object(), path + ".resource");
    if (!p.ok()) return Fail(c, p.error());
    if (patient.empty()) patient = *p;
    if (*p != patient) {
      return Fail(c, Error::BadInput(
                         "a transaction records for one patient (entry 0 is for " + patient + ")",
                         path + ".resource.subject"));
    }
    auto event = EventFromResource(options_.knowledge, resource->get_object(), path + ".resource",
                                   env_.service.Now());
    if (!event.ok()) return Fail(c, event.error());
    if (type == "MedicationRequest") (*event)["id"] = service::NewRandomId("rx-", 10);
    events.push_back(json::serialize(*event));
    types.push_back(type);
    paths.push_back(path + ".resource." + type);
  }
  c.audit_patient = patient;
  // Entry paths carry the type so that ElementOfRecordField's answer can be spliced in.
  for (size_t j = 0; j < paths.size(); ++j)
    paths[j] = paths[j].substr(0, paths[j].size() - types[j].size() - 1);
  return AppendCreated(c, patient, std::move(events), types, paths, true);
}

// ---- $rems-etasu.

HttpResponse FhirApi::RemsEtasu(Call& c) {
  const FhirKnowledge& k = options_.knowledge;
  auto body = server::ParseJsonBody(c.request);
  if (!body.ok()) return Fail(c, body.error());
  if (!body->is_object()) return Fail(c, Error::BadInput("must be Parameters", "body"));
  const json::object& params = body->get_object();
  const json::value* rt = params.if_contains("resourceType");
  if (rt == nullptr || !rt->is_string() || rt->get_string() != "Parameters") {
    return Fail(c, Error::BadInput("must be 'Parameters'", "Parameters.resourceType"));
  }
  const json::value* list = params.if_contains("parameter");
  if (list == nullptr || !list->is_array()) {
    return Fail(c, Error::BadInput("required: patient and medication", "Parameters.parameter"));
  }
  const json::object* patient = nullptr;
  const json::object* medication = nullptr;
  std::string medication_path;
  size_t i = 0;
  for (const json::value& p : list->get_array()) {
    const std::string path = "Parameters.parameter[" + std::to_string(i++) + "]";
    if (!p.is_object()) return Fail(c, Error::BadInput("must be an object", path));
    const json::value* name = p.get_object().if_contains("name");
    const json::value* resource = p.get_object().if_contains("resource");
    if (name == nullptr || !name->is_string())
      return Fail(c, Error::BadInput("required", path + ".name"));
    if (resource == nullptr || !resource->is_object()) {
      return Fail(c, Error::BadInput("required", path + ".resource"));
    }
    if (name->get_string() == "patient") {
      patient = &resource->get_object();
    } else if (name->get_string() == "medication") {
      medication = &resource->get_object();
      medication_path = path + ".resource";
    } else {
      return Fail(c,
                  Error::BadInput("unknown parameter (this operation takes patient and medication)",
                                  path + ".name"));
    }
  }
  if (patient == nullptr)
    return Fail(c, Error::BadInput("required", "Parameters.parameter:patient"));
  if (medication == nullptr)
    return Fail(c, Error::BadInput("required", "Parameters.parameter:medication"));
  // The patient: isoguard's id as the resource id or as an identifier of isoguard's system.
  std::string patient_id;
  if (const json::value* ids = patient->if_contains("identifier");
      ids != nullptr && ids->is_array()) {
    for (const json::value& id : ids->get_array()) {
      if (!id.is_object()) continue;
      const json::value* system = id.get_object().if_contains("system");
      const json::value* value = id.get_object().if_contains("value");
      if (system != nullptr && system->is_string() &&
          system->get_string() == k.systems.isoguard_patient_id && value != nullptr &&
          value->is_string()) {
        patient_id = std::string(value->get_string());
      }
    }
  }
  if (patient_id.empty()) {
    if (const json::value* id = patient->if_contains("id"); id != nullptr && id->is_string()) {
      patient_id = std::string(id->get_string());
    }
  }
  if (patient_id.empty()) {
    return Fail(c,
                Error::BadInput("needs an id or an identifier of " + k.systems.isoguard_patient_id,
                                "Parameters.parameter:patient.resource.identifier"));
  }
  const std::string medication_type = [&] {
    const json::value* t = medication->if_contains("resourceType");
    return t != nullptr && t->is_string() ? std::string(t->get_string()) : std::string();
  }();
  const json::value* code = medication_type == "Medication" ? medication->if_contains("code")
                            : medication_type == "MedicationRequest"
                                ? medication->if_contains("medicationCodeableConcept")
                                : nullptr;
  if (!IsIsotretinoin(k, code)) {
    return Fail(c,
                Error::BadInput("not a REMS drug of this server: a Medication (code) or "
                                "MedicationRequest (medicationCodeableConcept) coding isotretinoin "
                                "(RxNorm " +
                                    k.isotretinoin.rxnorm + ", ATC " + k.isotretinoin.atc + ")",
                                medication_path));
  }
  c.audit_patient = patient_id;
  auto view = env_.service.ReadPatient(c.principal(), patient_id, std::nullopt);
  if (!view.ok()) return Fail(c, view.error());
  if (view->erased) return Fail(c, Error::NotFound("the patient's record was erased", "patient"));
  auto record = ParseRecord(view->record_json, parse_);
  if (!record.ok()) return Fail(c, Error::Internal(record.error().ToString()));
  EvaluateOptions eo;
  eo.at = env_.service.Now();
  auto evaluation = Evaluate(env_.service.rulebook(), *record, eo);
  if (!evaluation.ok()) return Fail(c, evaluation.error());
  const std::string jurisdiction(ToString(record->patient.jurisdiction));
  const std::string category(ToString(evaluation->category));
  const std::string subject = "Patient/" + patient_id;
  const std::string now = FormatUtc(eo.at);
  json::array requirements;
  bool all_met = true;
  for (const EtasuRequirement& req : k.rems.requirements) {
    if (std::find(req.jurisdictions.begin(), req.jurisdictions.end(), jurisdiction) ==
        req.jurisdictions.end()) {
      continue;
    }
    if (!req.categories.empty() &&
        std::find(req.categories.begin(), req.categories.end(), category) == req.categories.end()) {
      continue;
    }
    json::array reason_codes;
    json::array notes;
    for (const Reason& r : evaluation->authorization.reasons) {
      if (std::find(req.reasons.begin(), req.reasons.end(), r.code) == req.reasons.end()) continue;
      reason_codes.push_back(json::object{
          {"coding",
           json::array{json::object{{"system", k.systems.isoguard_reason}, {"code", r.code}}}},
          {"text", r.message}});
      notes.push_back(json::object{{"text", r.message}});
    }
    const bool met = reason_codes.empty();
    all_met = all_met && met;
    json::object guidance{{"resourceType", "GuidanceResponse"},
                          {"status", met ? k.rems.met_status : k.rems.not_met_status},
                          {"moduleUri", k.rems.module_uri},
                          {"subject", json::object{{"reference", subject}}},
                          {"occurrenceDateTime", now}};
    if (met) {
      notes.push_back(json::object{{"text", req.name + ": met"}});
    } else {
      guidance["reasonCode"] = std::move(reason_codes);
    }
    guidance["note"] = std::move(notes);
    requirements.push_back(json::object{{"name", req.name}, {"resource", std::move(guidance)}});
  }
  json::object outer{
      {"resourceType", "GuidanceResponse"},
      {"status", all_met ? k.rems.met_status : k.rems.not_met_status},
      {"moduleUri", k.rems.module_uri},
      {"subject", json::object{{"reference", subject}}},
      {"occurrenceDateTime", now},
      {"outputParameters", json::object{{"reference", "#" + k.rems.output_parameters_id}}},
      {"contained", json::array{json::object{{"resourceType", "Parameters"},
                                             {"id", k.rems.output_parameters_id},
                                             {"parameter", std::move(requirements)}}}}};
  c.audit_detail = all_met ? "etasu met" : "etasu not met";
  return FhirJson(
      200, json::object{{"resourceType", "Parameters"},
                        {"parameter", json::array{json::object{{"name", k.rems.operation},
                                                               {"resource", std::move(outer)}}}}});
}

// ---- CDS Hooks.

HttpResponse CdsJson(int status, const json::value& body) {
  HttpResponse r;
  r.status = status;
  r.body = json::serialize(body);
  return r;
}

HttpResponse FhirApi::CdsDiscovery(Call&) { return CdsJson(200, cds_->Discovery()); }

HttpResponse FhirApi::CdsService(Call& c) {
  auto fail = [&](const Error& e) {
    if (c.audit_detail.empty()) c.audit_detail = e.ToString();
    return server::ProblemFromError(e, c.request.request_id, env_.logger);
  };
  const std::string& id = c.Param("service_id");
  auto body = server::ParseJsonBody(c.request);
  if (!body.ok()) return fail(body.error());
  if (!body->is_object())
    return fail(Error::BadInput("must be a CDS Hooks request object", "body"));
  auto patient = cds_->CheckRequest(id, body->get_object());
  if (!patient.ok()) return fail(patient.error());
  c.audit_patient = *patient;
  std::optional<std::string> record;
  std::string without_record;
  auto view = env_.service.ReadPatient(c.principal(), *patient, std::nullopt);
  if (view.ok() && !view->erased) {
    record = std::move(view->record_json);
  } else if (!view.ok() && view.error().kind != ErrorKind::kForbidden &&
             view.error().kind != ErrorKind::kNotFound) {
    return fail(view.error());
  } else if (!view.ok()) {
    // The cards come without the record; the refused read is audited as such.
    Audit(c, "CDS patient record read", server::StatusFor(view.error()), view.error().message);
    without_record = " without the patient's record (" + view.error().message + ")";
  }
  std::string page = options_.patient_page;
  if (size_t at = page.find("{patient_id}"); at != std::string::npos) {
    page.replace(at, 12, server::PercentEncode(*patient));
  }
  if (page.starts_with("/")) {
    std::string base = BaseUrl(c.request);
    if (base.ends_with("/fhir")) base.resize(base.size() - 5);
    page = base + page;
  }
  auto answer = cds_->Answer(id, body->get_object(), record, env_.service.Now(), page);
  if (!answer.ok()) return fail(answer.error());
  c.audit_detail =
      std::to_string(answer->at("cards").as_array().size()) + " card(s)" + without_record;
  return CdsJson(200, *answer);
}

HttpResponse FhirApi::CdsFeedback(Call& c) {
  auto fail = [&](const Error& e) {
    if (c.audit_detail.empty()) c.audit_detail = e.ToString();
    return server::ProblemFromError(e, c.request.request_id, env_.logger);
  };
  auto body = server::ParseJsonBody(c.request);
  if (!body.ok()) return fail(body.error());
  if (!body->is_object()) return fail(Error::BadInput("must be a feedback object", "body"));
  auto lines = cds_->Feedback(c.Param("service_id"), body->get_object());
  if (!lines.ok()) return fail(lines.error());
  // One audit record per item beside the call's own.
  for (const std::string& line : *lines) {
    Audit(c, "CDS feedback", 200, "feedback " + line);
  }
  c.audit_detail = std::to_string(lines->size()) + " feedback item(s)";
  return CdsJson(200, json::object{});
}

void FhirApi::AddAll() {
  Add("GET", "/fhir/metadata", Auth::kPublic, [this](Call& c) { return Metadata(c); });
  Add("POST", "/fhir", Auth::kToken, [this](Call& c) { return Transaction(c); });
  Add("GET", "/fhir/{resource_type}", Auth::kToken, [this](Call& c) { return Search(c); });
  Add("POST", "/fhir/{resource_type}", Auth::kToken, [this](Call& c) { return Create(c); });
  Add("GET", "/fhir/{resource_type}/{id}", Auth::kToken, [this](Call& c) { return Read(c); });
  Add("POST", "/fhir/GuidanceResponse/$rems-etasu", Auth::kToken,
      [this](Call& c) { return RemsEtasu(c); });
  Add("GET", "/cds-services", Auth::kPublic, [this](Call& c) { return CdsDiscovery(c); });
  Add("POST", "/cds-services/{service_id}", Auth::kCdsClient,
      [this](Call& c) { return CdsService(c); });
  Add("POST", "/cds-services/{service_id}/feedback", Auth::kCdsClient,
      [this](Call& c) { return CdsFeedback(c); });
}

}  // namespace

std::shared_ptr<void> AddFhirRoutes(server::Router& router, server::ApiEnvironment& env,
                                    FhirOptions options) {
  auto api = std::make_shared<FhirApi>(router, env, std::move(options));
  api->AddAll();
  return api;
}

}  // namespace isoguard::fhir
