#include "fhir/cds_hooks.h"

#include <sodium.h>

#include <boost/json.hpp>
#include <cmath>

#include "fhir/fhir_resources.h"
#include "rules/dose_planner.h"
#include "rules/evaluate.h"
#include "server/url.h"

namespace isoguard::fhir {
namespace {

namespace json = boost::json;

constexpr std::string_view kOrderSelect = "order-select";
constexpr std::string_view kOrderSign = "order-sign";
constexpr std::string_view kPatientView = "patient-view";
constexpr std::string_view kPatientIdToken = "{{context.patientId}}";

std::string Str(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string();
}

// A random (version 4) UUID.
std::string NewUuid() {
  std::array<unsigned char, 16> b{};
  randombytes_buf(b.data(), b.size());
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[b[i] >> 4];
    out += kHex[b[i] & 15];
  }
  return out;
}

std::string Humanize(std::string_view code) {
  std::string out;
  for (char c : code) {
    out += c == '_' ? ' ' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

std::string FormatMg(double mg) {
  char buf[32];
  if (mg == std::floor(mg)) {
    std::snprintf(buf, sizeof buf, "%.0f", mg);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f", mg);
  }
  return buf;
}

std::string ServiceHook(const FhirKnowledge& k, std::string_view id) {
  if (id == k.cds_hooks.order_select_id) return std::string(kOrderSelect);
  if (id == k.cds_hooks.order_sign_id) return std::string(kOrderSign);
  if (id == k.cds_hooks.patient_view_id) return std::string(kPatientView);
  return {};
}

// The resources of a prefetch value: a Bundle's entries, or the resource itself.
std::vector<const json::object*> ResourcesOf(const json::value* v) {
  std::vector<const json::object*> out;
  if (v == nullptr || !v->is_object()) return out;
  const json::object& o = v->get_object();
  if (Str(o, "resourceType") != "Bundle") {
    out.push_back(&o);
    return out;
  }
  const json::value* entries = o.if_contains("entry");
  if (entries == nullptr || !entries->is_array()) return out;
  for (const json::value& e : entries->get_array()) {
    if (!e.is_object()) continue;
    const json::value* r = e.get_object().if_contains("resource");
    if (r != nullptr && r->is_object()) out.push_back(&r->get_object());
  }
  return out;
}

}  // namespace

struct CdsHooks::Prefetched {
  std::optional<json::value> weight;       // an Observation or a searchset Bundle
  std::optional<json::value> medications;  // a searchset Bundle of MedicationRequests
};

CdsHooks::CdsHooks(const FhirKnowledge& knowledge, const Rulebook& rulebook, ParseOptions parse,
                   FhirFetcher fetch, std::chrono::milliseconds fetch_timeout)
    : k_(knowledge),
      rulebook_(rulebook),
      parse_(std::move(parse)),
      fetch_(std::move(fetch)),
      fetch_timeout_(fetch_timeout) {}

std::string CdsHooks::TemplateFor(std::string_view key) const {
  if (key == "weight") {
    const ObservationCode* w = k_.FindObservation("weight");
    return "Observation?patient=" + std::string(kPatientIdToken) + "&code=" + k_.systems.loinc +
           "|" + (w != nullptr ? w->loinc : std::string()) + "&_sort=-date&_count=1";
  }
  if (key == "medications") {
    return "MedicationRequest?patient=" + std::string(kPatientIdToken) + "&status=active";
  }
  return {};
}

json::object CdsHooks::Discovery() const {
  json::object order_prefetch{{"weight", TemplateFor("weight")},
                              {"medications", TemplateFor("medications")}};
  auto service = [&](std::string_view hook, const std::string& id, std::string_view title,
                     std::string_view description, bool prefetch) {
    json::object s{{"hook", hook}, {"id", id}, {"title", title}, {"description", description}};
    if (prefetch) s["prefetch"] = order_prefetch;
    s["usageRequirements"] =
        "Authorization: Bearer <an isoguard API token of the prescriber or clinic staff>.";
    return s;
  };
  return json::object{
      {"services",
       json::array{
           service(kOrderSelect, k_.cds_hooks.order_select_id, "Isotretinoin safety program",
                   "Checks a selected isotretinoin order against the patient's safety program: "
                   "unmet requirements, dose for the weight, interactions, lab and mood alerts.",
                   true),
           service(kOrderSign, k_.cds_hooks.order_sign_id, "Isotretinoin safety program",
                   "Checks isotretinoin orders before signing: unmet requirements, dose for the "
                   "weight (with the planner's dose as a suggestion), interactions, lab and mood "
                   "alerts.",
                   true),
           service(kPatientView, k_.cds_hooks.patient_view_id, "Isotretinoin: what is due",
                   "What the patient's safety program needs next, and what is overdue.", false),
       }}};
}

bool CdsHooks::IsService(std::string_view id) const { return !ServiceHook(k_, id).empty(); }

Result<std::string> CdsHooks::CheckRequest(std::string_view service_id,
                                           const json::object& request) const {
  const std::string hook = ServiceHook(k_, service_id);
  if (hook.empty()) return Error::NotFound("no such CDS service", "service");
  const json::value* h = request.if_contains("hook");
  if (h == nullptr || !h->is_string()) return Error::BadInput("required", "hook");
  if (h->get_string() != hook) {
    return Error::BadInput("must be '" + hook + "' for this service", "hook");
  }
  const json::value* instance = request.if_contains("hookInstance");
  if (instance == nullptr || !instance->is_string() || instance->get_string().empty()) {
    return Error::BadInput("required (a UUID)", "hookInstance");
  }
  if (const json::value* server = request.if_contains("fhirServer"); server != nullptr) {
    if (!server->is_string() || !(server->get_string().starts_with("http://") ||
                                  server->get_string().starts_with("https://"))) {
      return Error::BadInput("must be an http(s) URL", "fhirServer");
    }
  }
  if (const json::value* auth = request.if_contains("fhirAuthorization");
      auth != nullptr && !auth->is_null()) {
    if (!request.contains("fhirServer")) {
      return Error::BadInput("fhirAuthorization needs fhirServer", "fhirServer");
    }
    if (!auth->is_object()) return Error::BadInput("must be an object", "fhirAuthorization");
    for (std::string_view key : {"access_token", "token_type", "scope", "subject"}) {
      const json::value* v = auth->get_object().if_contains(key);
      if (v == nullptr || !v->is_string()) {
        return Error::BadInput("required", "fhirAuthorization." + std::string(key));
      }
    }
    if (Str(auth->get_object(), "token_type") != "Bearer") {
      return Error::BadInput("must be 'Bearer'", "fhirAuthorization.token_type");
    }
  }
  const json::value* ctx = request.if_contains("context");
  if (ctx == nullptr || !ctx->is_object()) return Error::BadInput("required", "context");
  const json::object& context = ctx->get_object();
  for (std::string_view key : {"userId", "patientId"}) {
    const json::value* v = context.if_contains(key);
    if (v == nullptr || !v->is_string() || v->get_string().empty()) {
      return Error::BadInput("required", "context." + std::string(key));
    }
  }
  if (hook != kPatientView) {
    const json::value* draft = context.if_contains("draftOrders");
    if (draft == nullptr || !draft->is_object() ||
        Str(draft->get_object(), "resourceType") != "Bundle") {
      return Error::BadInput("required: a Bundle of the draft orders", "context.draftOrders");
    }
    const json::value* entries = draft->get_object().if_contains("entry");
    if (entries != nullptr &&
        (!entries->is_array() || entries->get_array().size() > kMaxDraftOrders)) {
      return Error::BadInput(
          "must be a list of at most " + std::to_string(kMaxDraftOrders) + " entries",
          "context.draftOrders.entry");
    }
    if (hook == kOrderSelect) {
      const json::value* selections = context.if_contains("selections");
      if (selections == nullptr || !selections->is_array()) {
        return Error::BadInput("required: the selected orders ('MedicationRequest/<id>')",
                               "context.selections");
      }
    }
  }
  if (const json::value* prefetch = request.if_contains("prefetch");
      prefetch != nullptr && !prefetch->is_null() && !prefetch->is_object()) {
    return Error::BadInput("must be an object", "prefetch");
  }
  return Str(context, "patientId");
}

CdsHooks::Prefetched CdsHooks::Prefetch(const json::object& request,
                                        std::string_view patient_id) const {
  Prefetched out;
  const json::value* prefetch = request.if_contains("prefetch");
  auto take = [&](std::string_view key) -> std::optional<json::value> {
    if (prefetch != nullptr && prefetch->is_object()) {
      const json::value* v = prefetch->get_object().if_contains(key);
      if (v != nullptr && !v->is_null()) return *v;
    }
    const std::string server = Str(request, "fhirServer");
    if (!fetch_ || server.empty()) return std::nullopt;
    // The template rendered, percent-encoded where a request target may not hold the
    // character as is ("system|code", an id with reserved characters).
    std::string path;
    const std::string raw = TemplateFor(key);
    const size_t token_at = raw.find(kPatientIdToken);
    constexpr std::string_view kTemplateStructure = "/?=&:";
    path += server::PercentEncode(std::string_view(raw).substr(0, token_at), kTemplateStructure);
    path += server::PercentEncode(patient_id);
    path += server::PercentEncode(std::string_view(raw).substr(token_at + kPatientIdToken.size()),
                                  kTemplateStructure);
    std::string token;
    if (const json::value* auth = request.if_contains("fhirAuthorization");
        auth != nullptr && auth->is_object()) {
      token = Str(auth->get_object(), "access_token");
    }
    auto body =
        fetch_((server.ends_with("/") ? server : server + "/") + path, token, fetch_timeout_);
    if (!body.ok()) return std::nullopt;
    boost::system::error_code ec;
    json::value v = json::parse(*body, ec);
    if (ec) return std::nullopt;
    return v;
  };
  out.weight = take("weight");
  out.medications = take("medications");
  return out;
}

std::string CdsHooks::Summary(std::string_view text) {
  size_t chars = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte
    if (chars == kMaxSummaryChars - 1) {
      // Room for one more character: keep it when it is the last one, else end with "…".
      size_t rest = 0;
      for (size_t j = i; j < text.size(); ++j)
        rest += (static_cast<unsigned char>(text[j]) & 0xC0) != 0x80;
      if (rest <= 1) return std::string(text);
      return std::string(text.substr(0, i)) + "\u2026";
    }
    ++chars;
  }
  return std::string(text);
}

Result<json::object> CdsHooks::Answer(std::string_view service_id, const json::object& request,
                                      const std::optional<std::string>& record_json, Instant now,
                                      const std::string& patient_page) const {
  const std::string hook = ServiceHook(k_, service_id);
  const json::object& context = request.at("context").get_object();
  const std::string patient_id = Str(context, "patientId");
  json::array cards;

  auto card = [&](std::string summary, std::string detail, std::string_view indicator,
                  std::string_view system, std::string_view code) {
    json::object c{{"uuid", NewUuid()},
                   {"summary", Summary(summary)},
                   {"indicator", indicator},
                   {"source", json::object{{"label", k_.cds_hooks.source_label},
                                           {"url", k_.cds_hooks.source_url},
                                           {"topic", json::object{{"system", system},
                                                                  {"code", code},
                                                                  {"display", Humanize(code)}}}}},
                   {"links", json::array{json::object{{"label", "Open the patient in isoguard"},
                                                      {"url", patient_page},
                                                      {"type", "absolute"}}}}};
    if (!detail.empty()) c["detail"] = std::move(detail);
    if (indicator == "critical") {
      json::array reasons;
      for (const OverrideReason& r : k_.cds_hooks.override_reasons) {
        reasons.push_back(json::object{
            {"system", k_.systems.isoguard_override}, {"code", r.code}, {"display", r.display}});
      }
      c["overrideReasons"] = std::move(reasons);
    }
    return c;
  };

  // The drafts this hook judges.
  std::vector<std::pair<std::string, const json::object*>> drafts;  // (element path, resource)
  if (hook != kPatientView) {
    std::vector<std::string> selected;
    if (const json::value* s = context.if_contains("selections"); s != nullptr && s->is_array()) {
      for (const json::value& v : s->get_array()) {
        if (v.is_string()) selected.emplace_back(v.get_string());
      }
    }
    const json::value* entries = context.at("draftOrders").get_object().if_contains("entry");
    if (entries != nullptr && entries->is_array()) {
      size_t i = 0;
      for (const json::value& e : entries->get_array()) {
        const std::string path = "context.draftOrders.entry[" + std::to_string(i++) + "].resource";
        if (!e.is_object()) continue;
        const json::value* r = e.get_object().if_contains("resource");
        if (r == nullptr || !r->is_object()) continue;
        const json::object& resource = r->get_object();
        if (Str(resource, "resourceType") != "MedicationRequest") continue;
        if (!IsIsotretinoin(k_, resource.if_contains("medicationCodeableConcept"))) continue;
        if (hook == kOrderSelect &&
            std::find(selected.begin(), selected.end(),
                      "MedicationRequest/" + Str(resource, "id")) == selected.end()) {
          continue;
        }
        drafts.emplace_back(path, &resource);
      }
    }
    if (drafts.empty()) return json::object{{"cards", json::array{}}};
  }

  if (!record_json) {
    if (hook != kPatientView) {
      cards.push_back(
          card("No isoguard record of this patient for your clinic: enroll before prescribing",
               "isoguard has no record of patient `" + patient_id +
                   "` that you may see. The safety program requires the patient's "
                   "enrollment before isotretinoin is prescribed.",
               "critical", k_.systems.isoguard_reason, "NOT_ENROLLED"));
    }
    return json::object{{"cards", std::move(cards)}};
  }

  boost::system::error_code ec;
  json::value parsed = json::parse(*record_json, ec);
  if (ec || !parsed.is_object()) return Error::Internal("the patient's record does not parse");
  json::object record = std::move(parsed.get_object());
  json::array& events = record["events"].as_array();

  if (hook == kPatientView) {
    auto r = ParseRecordObject(record, parse_);
    if (!r.ok()) return Error::Internal(r.error().ToString());
    EvaluateOptions eo;
    eo.at = now;
    auto ev = Evaluate(rulebook_, *r, eo);
    if (!ev.ok()) return ev.error();
    ZoneCursor cursor(ev->zone);
    const LocalDate today = cursor.LocalDateOf(now);
    for (const DueItem& d : ev->due) {
      const bool overdue = d.due_by < today;
      std::string summary = (overdue ? "Overdue: " : "Due: ") + Humanize(d.code) +
                            (overdue ? " (was due " : " by ") + d.due_by.ToString() +
                            (overdue ? ")" : "");
      std::string detail = summary;
      if (d.not_before) detail += ", not before " + d.not_before->ToString();
      cards.push_back(card(summary, detail + ".", overdue ? "warning" : "info",
                           k_.systems.isoguard_due, d.code));
    }
    return json::object{{"cards", std::move(cards)}};
  }

  // What the EHR knows that isoguard may not: the latest weight and the active medications.
  const Prefetched prefetched = Prefetch(request, patient_id);
  const std::string now_text = FormatUtc(now);
  if (prefetched.weight) {
    const json::object* latest = nullptr;
    Instant latest_at{};
    const ObservationCode* w = k_.FindObservation("weight");
    for (const json::object* o : ResourcesOf(&*prefetched.weight)) {
      if (w == nullptr || Str(*o, "resourceType") != "Observation") continue;
      auto event = EventFromResource(k_, *o, "prefetch.weight", now);
      if (!event.ok() || Str(*event, "type") != "weight") continue;
      auto t = ParseOffsetTime(Str(*event, "at"));
      Instant at = t.ok() ? t->instant : now;
      if (latest == nullptr || at > latest_at) {
        latest = o;
        latest_at = at;
      }
    }
    if (latest != nullptr) {
      auto event = EventFromResource(k_, *latest, "prefetch.weight", now);
      if (event.ok() && latest_at <= now) {
        (*event)["id"] = "cds-prefetch-weight";
        events.push_back(std::move(*event));
      }
    }
  }
  if (prefetched.medications) {
    size_t n = 0;
    for (const json::object* o : ResourcesOf(&*prefetched.medications)) {
      if (Str(*o, "resourceType") != "MedicationRequest" || Str(*o, "status") != "active") continue;
      if (IsIsotretinoin(k_, o->if_contains("medicationCodeableConcept"))) continue;
      const json::value* m = o->if_contains("medicationCodeableConcept");
      if (m == nullptr || !m->is_object()) continue;
      json::object statement{{"resourceType", "MedicationStatement"},
                             {"status", "active"},
                             {"medicationCodeableConcept", *m}};
      auto event = EventFromResource(k_, statement, "prefetch.medications", now);
      if (!event.ok()) continue;
      auto authored = ParseOffsetTime(Str(*o, "authoredOn"));
      (*event)["at"] =
          authored.ok() && authored->instant <= now ? FormatUtc(authored->instant) : now_text;
      (*event)["id"] = "cds-prefetch-medication-" + std::to_string(n++);
      events.push_back(std::move(*event));
    }
  }

  size_t draft_index = 0;
  for (const auto& [path, draft] : drafts) {
    const std::string id = "cds-draft-" + std::to_string(draft_index++);
    auto prescription = PrescriptionFromMedicationRequest(k_, *draft, path, id, now);
    if (!prescription.ok()) {
      cards.push_back(
          card("isoguard cannot check this isotretinoin order yet: " + prescription.error().message,
               "`" + prescription.error().field + "`: " + prescription.error().message, "info",
               k_.systems.isoguard_reason, "NO_PRESCRIPTION"));
      continue;
    }
    (*prescription)["at"] = now_text;
    json::object with_draft = record;
    with_draft["events"].as_array().push_back(*prescription);
    auto r = ParseRecordObject(with_draft, parse_);
    if (!r.ok()) {
      cards.push_back(card("isoguard cannot check this isotretinoin order: " + r.error().message,
                           "`" + r.error().field + "`: " + r.error().message, "info",
                           k_.systems.isoguard_reason, "NO_PRESCRIPTION"));
      continue;
    }
    EvaluateOptions eo;
    eo.at = now;
    eo.prescription = id;
    auto ev = Evaluate(rulebook_, *r, eo);
    if (!ev.ok()) return ev.error();
    for (const Reason& reason : ev->authorization.reasons) {
      cards.push_back(card(reason.message,
                           "**" + std::string(reason.code) + "**: " + reason.message, "critical",
                           k_.systems.isoguard_reason, reason.code));
    }
    for (const Alert& alert : ev->alerts) {
      json::object c = card(alert.message, "**" + std::string(alert.code) + "**: " + alert.message,
                            ToString(alert.severity), k_.systems.isoguard_alert, alert.code);
      if (alert.code == "DOSE_OUT_OF_RANGE") {
        // The planner's dose at the nearest edge of the product's usual range.
        const Event* weight = nullptr;
        for (const Event& e : r->events) {
          if (e.type == EventType::kWeight && e.at <= now) weight = &e;
        }
        const Event* rx = nullptr;
        for (const Event& e : r->events) {
          if (e.type == EventType::kPrescription && e.id == id) rx = &e;
        }
        if (weight != nullptr && rx != nullptr) {
          const ProductInfo& product = rulebook_.knowledge.product(rx->product);
          const double current = rx->DailyMg() / weight->kg;
          DosePlanRequest plan_request;
          plan_request.weight_kg = weight->kg;
          plan_request.product = rx->product;
          plan_request.mg_per_kg_day =
              std::clamp(current, product.usual_min_mg_per_kg_day, product.usual_max_mg_per_kg_day);
          auto plan = PlanDose(rulebook_.knowledge, plan_request);
          if (plan.ok()) {
            json::object updated = *draft;
            json::array dosage;
            std::string doses_text;
            int64_t sequence = 1;
            for (double mg : plan->doses_mg) {
              doses_text += (doses_text.empty() ? "" : " + ") + FormatMg(mg) + " mg";
              dosage.push_back(json::object{
                  {"sequence", sequence++},
                  {"text", FormatMg(mg) + " mg once a day"},
                  {"timing", json::object{{"repeat", json::object{{"frequency", 1},
                                                                  {"period", 1},
                                                                  {"periodUnit", "d"}}}}},
                  {"doseAndRate", json::array{json::object{
                                      {"doseQuantity",
                                       json::object{{"value", mg},
                                                    {"unit", k_.isotretinoin.dose_unit_ucum},
                                                    {"system", k_.systems.ucum},
                                                    {"code", k_.isotretinoin.dose_unit_ucum}}}}}}});
            }
            updated["dosageInstruction"] = std::move(dosage);
            char per_kg[32];
            std::snprintf(per_kg, sizeof per_kg, "%.2f", plan->mg_per_kg_day);
            const std::string label = "Change to " + FormatMg(plan->daily_mg) + " mg a day (" +
                                      doses_text + ", " + per_kg + " mg/kg/day)";
            c["suggestions"] = json::array{json::object{
                {"label", Summary(label)},
                {"uuid", NewUuid()},
                {"isRecommended", true},
                {"actions", json::array{json::object{
                                {"type", "update"},
                                {"description", label + " for " + FormatMg(weight->kg) + " kg."},
                                {"resource", std::move(updated)}}}}}};
            c["selectionBehavior"] = "at-most-one";
          }
        }
      }
      cards.push_back(std::move(c));
    }
  }
  return json::object{{"cards", std::move(cards)}};
}

Result<std::vector<std::string>> CdsHooks::Feedback(std::string_view service_id,
                                                    const json::object& body) const {
  if (!IsService(service_id)) return Error::NotFound("no such CDS service", "service");
  const json::value* items = body.if_contains("feedback");
  if (items == nullptr || !items->is_array() || items->get_array().empty()) {
    return Error::BadInput("required: a list of feedback items", "feedback");
  }
  if (items->get_array().size() > kMaxCdsFeedbackItems) {
    return Error::BadInput("at most " + std::to_string(kMaxCdsFeedbackItems) + " items",
                           "feedback");
  }
  std::vector<std::string> lines;
  size_t i = 0;
  for (const json::value& item : items->get_array()) {
    const std::string path = "feedback[" + std::to_string(i++) + "]";
    if (!item.is_object()) return Error::BadInput("must be an object", path);
    const json::object& f = item.get_object();
    const std::string card = Str(f, "card");
    const std::string outcome = Str(f, "outcome");
    if (card.empty() || card.size() > 128)
      return Error::BadInput("required: the card's uuid", path + ".card");
    if (outcome != "accepted" && outcome != "overridden") {
      return Error::BadInput("must be accepted or overridden", path + ".outcome");
    }
    const std::string at = Str(f, "outcomeTimestamp");
    if (!ParseOffsetTime(at).ok()) {
      return Error::BadInput("required: a time with an offset", path + ".outcomeTimestamp");
    }
    if (outcome == "accepted" && !f.contains("acceptedSuggestions")) {
      return Error::BadInput("required for an accepted card", path + ".acceptedSuggestions");
    }
    std::string line = std::string(service_id) + " card " + card + " " + outcome + " at " + at;
    if (const json::value* accepted = f.if_contains("acceptedSuggestions")) {
      if (!accepted->is_array())
        return Error::BadInput("must be a list", path + ".acceptedSuggestions");
      for (const json::value& s : accepted->get_array()) {
        if (!s.is_object() || Str(s.get_object(), "id").empty()) {
          return Error::BadInput("each needs an id", path + ".acceptedSuggestions");
        }
        line += " suggestion " + Str(s.get_object(), "id");
      }
    }
    if (const json::value* reason = f.if_contains("overrideReason")) {
      if (outcome != "overridden" || !reason->is_object()) {
        return Error::BadInput("only with outcome overridden, as an object",
                               path + ".overrideReason");
      }
      const json::value* coding = reason->get_object().if_contains("reason");
      if (coding != nullptr && coding->is_object()) {
        line += " reason " + Str(coding->get_object(), "system") + "|" +
                Str(coding->get_object(), "code");
      }
      const std::string comment = Str(reason->get_object(), "userComment");
      if (!comment.empty()) line += " comment: " + comment;
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

}  // namespace isoguard::fhir
