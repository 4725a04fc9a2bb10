#include "fhir/fhir_resources.h"

#include <boost/json.hpp>
#include <cmath>
#include <map>

#include "domain/codes.h"

namespace isoguard::fhir {
namespace {

namespace json = boost::json;

std::string Str(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string();
}
std::optional<double> Num(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_number()) return std::nullopt;
  return v->to_number<double>();
}
bool Has(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && !v->is_null();
}

// A record time ("2026-09-14T12:00:00-04:00" or a date) as FHIR dateTime and as an instant.
std::optional<Instant> InstantOf(const std::string& text) {
  auto t = ParseOffsetTime(text);
  if (t.ok()) return t->instant;
  auto d = ParseDate(text);
  if (d.ok()) return Instant(std::chrono::days(d->days_since_epoch()));
  return std::nullopt;
}

json::object Coding(std::string_view system, std::string_view code, std::string_view display = {}) {
  json::object c{{"system", system}, {"code", code}};
  if (!display.empty()) c["display"] = display;
  return c;
}
json::object Concept(json::array codings, std::string_view text = {}) {
  json::object c{{"coding", std::move(codings)}};
  if (!text.empty()) c["text"] = text;
  return c;
}
json::object Quantity(double value, std::string_view unit, std::string_view system,
                      std::string_view code) {
  return json::object{{"value", value}, {"unit", unit}, {"system", system}, {"code", code}};
}
json::object Reference(std::string_view type, std::string_view id) {
  return json::object{{"reference", std::string(type) + "/" + std::string(id)}};
}

// Lower case, '_' as '-': reason and due codes as parts of FHIR ids.
std::string IdPart(std::string_view code) {
  std::string out;
  for (char c : code) {
    if (c == '_') {
      out += '-';
    } else {
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  return out;
}

std::string ProductDisplay(const Rulebook& rulebook, std::string_view product) {
  auto p = ParseProduct(product);
  if (p) {
    for (const ProductInfo& info : rulebook.knowledge.products) {
      if (info.product == *p) return info.name;
    }
  }
  return std::string(product);
}

json::array IsotretinoinCodings(const FhirKnowledge& k) {
  return json::array{Coding(k.systems.rxnorm, k.isotretinoin.rxnorm, k.isotretinoin.rxnorm_display),
                     Coding(k.systems.atc, k.isotretinoin.atc, k.isotretinoin.atc_display)};
}

void AddCodes(Resource& r, const json::object& concept_object) {
  const json::value* codings = concept_object.if_contains("coding");
  if (codings == nullptr || !codings->is_array()) return;
  for (const json::value& c : codings->get_array()) {
    if (!c.is_object()) continue;
    r.codes.emplace_back(Str(c.get_object(), "system"), Str(c.get_object(), "code"));
  }
}

class StreamMapper {
 public:
  StreamMapper(const FhirKnowledge& k, const Rulebook& rulebook, const store::Stream& stream)
      : k_(k), rulebook_(rulebook), stream_(stream) {}

  std::vector<Resource> Map(const json::object* evaluation, Instant now) {
    // Corrections first: an entered_in_error entry changes its target's status and version.
    for (const store::StoredEntry& e : stream_.entries) {
      if (e.erased || e.json.empty()) continue;
      boost::system::error_code ec;
      json::value v = json::parse(e.json, ec);
      if (ec || !v.is_object()) continue;
      parsed_.emplace_back(&e, std::move(v.get_object()));
    }
    for (const auto& [entry, o] : parsed_) {
      const std::string type = Str(o, "type");
      if (type == "entered_in_error") corrected_[Str(o, "target")] = entry->version;
      if (type == "prescription_cancel") cancelled_[Str(o, "prescription")] = entry->version;
      if (type == "dispense") dispensed_[Str(o, "prescription")] = entry->version;
    }
    for (const auto& [entry, o] : parsed_) MapEntry(*entry, o);
    if (evaluation != nullptr) MapEvaluation(*evaluation, now);
    return std::move(out_);
  }

 private:
  Resource& Add(std::string type, const store::StoredEntry& entry, const std::string& event_id,
                int64_t version) {
    Resource r;
    r.type = std::move(type);
    r.id = stream_.patient_id + "." + event_id;
    r.version = version;
    r.last_updated = entry.recorded_at;
    for (const auto& [e, o] : parsed_) {
      if (e->version == version) r.last_updated = e->recorded_at;
    }
    r.body["resourceType"] = r.type;
    r.body["id"] = r.id;
    r.body["meta"] = json::object{{"versionId", std::to_string(r.version)},
                                  {"lastUpdated", FormatUtc(r.last_updated)}};
    out_.push_back(std::move(r));
    return out_.back();
  }

  // The version and status of an event-backed resource: entered-in-error when corrected.
  int64_t VersionOf(const store::StoredEntry& entry, const std::string& event_id) const {
    auto it = corrected_.find(event_id);
    return it != corrected_.end() ? it->second : entry.version;
  }
  bool Corrected(const std::string& event_id) const { return corrected_.contains(event_id); }

  void SetTime(Resource& r, std::string_view element, const std::string& at) {
    auto t = InstantOf(at);
    if (!t) return;
    r.date = *t;
    r.body[element] = at.size() == 10 ? at : FormatUtc(*t);
  }

  void MapEntry(const store::StoredEntry& entry, const json::object& o) {
    const std::string type = Str(o, "type");
    const std::string id = entry.event_id.empty() ? Str(o, "id") : entry.event_id;
    if (type == std::string(store::kPatientEntryType)) {
      MapPatient(entry, o);
      return;
    }
    if (id.empty()) return;
    if (type == "weight" || type == "lab" || type == "pregnancy_test" || type == "phq9") {
      MapObservation(entry, o, type, id);
    } else if (type == "prescription") {
      MapPrescription(entry, o, id);
    } else if (type == "dispense") {
      MapDispense(entry, o, id);
    } else if (type == "medication") {
      MapMedication(entry, o, id);
    } else if (type == "enrollment" || type == "risk_acknowledgement") {
      MapConsent(entry, o, type, id);
    }
  }

  void MapPatient(const store::StoredEntry& entry, const json::object& o) {
    // The latest patient entry wins.
    for (Resource& r : out_) {
      if (r.type == "Patient") {
        r.body = {};
        r.type.clear();
      }
    }
    std::erase_if(out_, [](const Resource& r) { return r.type.empty(); });
    Resource r;
    r.type = "Patient";
    r.id = stream_.patient_id;
    r.version = entry.version;
    r.last_updated = entry.recorded_at;
    r.body = json::object{
        {"resourceType", "Patient"},
        {"id", r.id},
        {"meta", json::object{{"versionId", std::to_string(r.version)},
                              {"lastUpdated", FormatUtc(r.last_updated)}}},
        {"identifier",
         json::array{json::object{{"system", k_.systems.isoguard_patient_id}, {"value", r.id}}}},
        {"active", true},
        {"birthDate", Str(o, "birth_date")},
        {"extension", json::array{
                          json::object{{"url", k_.systems.jurisdiction_extension},
                                       {"valueCode", Str(o, "jurisdiction")}},
                          json::object{{"url", k_.systems.category_extension},
                                       {"valueCode", Str(o, "category")}},
                      }}};
    out_.insert(out_.begin(), std::move(r));
  }

  void MapObservation(const store::StoredEntry& entry, const json::object& o,
                      const std::string& type, const std::string& id) {
    Resource& r = Add("Observation", entry, id, VersionOf(entry, id));
    json::object& b = r.body;
    b["status"] = Corrected(id) ? "entered-in-error" : "final";
    r.status = std::string(b["status"].get_string());
    auto category = [&](std::string_view code) {
      b["category"] =
          json::array{Concept(json::array{Coding(k_.systems.observation_category, code)})};
    };
    json::object code;
    if (type == "weight") {
      const ObservationCode* w = k_.FindObservation("weight");
      if (w == nullptr) return;
      category(w->category);
      code = Concept(json::array{Coding(k_.systems.loinc, w->loinc, w->display)}, w->display);
      b["code"] = code;
      b["subject"] = Reference("Patient", stream_.patient_id);
      SetTime(r, "effectiveDateTime", Str(o, "at"));
      const auto& unit = *w->units.begin();
      b["valueQuantity"] =
          Quantity(Num(o, "kg").value_or(0), unit.first, k_.systems.ucum, unit.second);
    } else if (type == "lab") {
      const ObservationCode* lab = k_.FindObservation(Str(o, "test"));
      if (lab == nullptr) return;
      const std::string unit = Str(o, "unit");
      const bool mmol = unit == "mmol/L" && !lab->loinc_mmol.empty();
      category(lab->category);
      code = Concept(json::array{Coding(k_.systems.loinc, mmol ? lab->loinc_mmol : lab->loinc,
                                        mmol ? std::string() : lab->display)},
                     lab->display);
      b["code"] = code;
      b["subject"] = Reference("Patient", stream_.patient_id);
      SetTime(r, "effectiveDateTime", Str(o, "at"));
      auto ucum = lab->units.find(unit);
      const std::string ucum_code = ucum != lab->units.end() ? ucum->second : unit;
      b["valueQuantity"] = Quantity(Num(o, "value").value_or(0), unit, k_.systems.ucum, ucum_code);
      if (auto uln = Num(o, "uln")) {
        b["referenceRange"] =
            json::array{json::object{{"high", Quantity(*uln, unit, k_.systems.ucum, ucum_code)}}};
      }
    } else if (type == "pregnancy_test") {
      const PregnancyTestCodes& p = k_.pregnancy_test;
      const bool serum = Str(o, "specimen") == "serum";
      category(p.category);
      code = Concept(json::array{Coding(k_.systems.loinc, serum ? p.serum_loinc : p.urine_loinc,
                                        serum ? p.serum_display : p.urine_display)});
      b["code"] = code;
      b["subject"] = Reference("Patient", stream_.patient_id);
      SetTime(r, "effectiveDateTime", Str(o, "collected_at"));
      const std::string result = Str(o, "result");
      if (result == "negative") {
        b["valueCodeableConcept"] =
            Concept(json::array{Coding(k_.systems.snomed, p.negative_snomed, p.negative_display)});
      } else if (result == "positive") {
        b["valueCodeableConcept"] =
            Concept(json::array{Coding(k_.systems.snomed, p.positive_snomed, p.positive_display)});
      } else {
        b["dataAbsentReason"] = Concept(
            json::array{Coding(k_.systems.data_absent_reason, p.invalid_data_absent_reason)});
      }
      b["extension"] = json::array{json::object{{"url", k_.systems.test_setting_extension},
                                                {"valueCode", Str(o, "setting")}}};
    } else {  // phq9
      const Phq9Codes& q = k_.phq9;
      category(q.category);
      code = Concept(json::array{Coding(k_.systems.loinc, q.panel_loinc, q.panel_display)},
                     q.panel_display);
      b["code"] = code;
      b["subject"] = Reference("Patient", stream_.patient_id);
      SetTime(r, "effectiveDateTime", Str(o, "at"));
      json::array components;
      int64_t total = 0;
      const json::value* items = o.if_contains("items");
      if (items != nullptr && items->is_array()) {
        size_t i = 0;
        for (const json::value& item : items->get_array()) {
          if (i >= q.item_loinc.size() || !item.is_number()) break;
          const auto score = static_cast<int64_t>(item.to_number<double>());
          total += score;
          components.push_back(json::object{
              {"code", Concept(json::array{Coding(k_.systems.loinc, q.item_loinc[i])})},
              {"valueInteger", score}});
          ++i;
        }
      }
      components.push_back(json::object{
          {"code", Concept(json::array{Coding(k_.systems.loinc, q.total_loinc, q.total_display)})},
          {"valueInteger", total}});
      b["component"] = std::move(components);
    }
    AddCodes(r, code);
  }

  json::object MedicationConcept(const std::string& product) {
    json::array codings = IsotretinoinCodings(k_);
    if (!product.empty()) {
      codings.push_back(
          Coding(k_.systems.isoguard_product, product, ProductDisplay(rulebook_, product)));
    }
    return Concept(std::move(codings),
                   ProductDisplay(rulebook_, product.empty() ? "generic" : product));
  }

  void MapPrescription(const store::StoredEntry& entry, const json::object& o,
                       const std::string& id) {
    int64_t version = VersionOf(entry, id);
    std::string status = "active";
    if (Corrected(id)) {
      status = "entered-in-error";
    } else if (auto c = cancelled_.find(id); c != cancelled_.end()) {
      status = "cancelled";
      version = std::max(version, c->second);
    } else if (auto d = dispensed_.find(id); d != dispensed_.end()) {
      status = "completed";
      version = std::max(version, d->second);
    }
    Resource& r = Add("MedicationRequest", entry, id, version);
    json::object& b = r.body;
    r.status = status;
    b["identifier"] = json::array{
        json::object{{"system", k_.systems.isoguard_prescription_id}, {"value", Str(o, "id")}}};
    b["status"] = status;
    b["intent"] = "order";
    json::object medication = MedicationConcept(Str(o, "product"));
    AddCodes(r, medication);
    b["medicationCodeableConcept"] = std::move(medication);
    b["subject"] = Reference("Patient", stream_.patient_id);
    SetTime(r, "authoredOn", Str(o, "at"));
    json::array dosage;
    const json::value* doses = o.if_contains("doses_mg");
    if (doses != nullptr && doses->is_array()) {
      int64_t sequence = 1;
      for (const json::value& d : doses->get_array()) {
        if (!d.is_number()) continue;
        dosage.push_back(json::object{
            {"sequence", sequence++},
            {"timing",
             json::object{
                 {"repeat", json::object{{"frequency", 1}, {"period", 1}, {"periodUnit", "d"}}}}},
            {"doseAndRate",
             json::array{json::object{
                 {"doseQuantity", Quantity(d.to_number<double>(), k_.isotretinoin.dose_unit_ucum,
                                           k_.systems.ucum, k_.isotretinoin.dose_unit_ucum)}}}}});
      }
    }
    b["dosageInstruction"] = std::move(dosage);
    json::object dispense;
    dispense["numberOfRepeatsAllowed"] = static_cast<int64_t>(Num(o, "refills").value_or(0));
    dispense["expectedSupplyDuration"] = json::object{{"value", Num(o, "days_supply").value_or(0)},
                                                      {"unit", "days"},
                                                      {"system", k_.systems.ucum},
                                                      {"code", k_.isotretinoin.supply_unit_ucum}};
    b["dispenseRequest"] = std::move(dispense);
  }

  void MapDispense(const store::StoredEntry& entry, const json::object& o, const std::string& id) {
    Resource& r = Add("MedicationDispense", entry, id, VersionOf(entry, id));
    json::object& b = r.body;
    r.status = Corrected(id) ? "entered-in-error" : "completed";
    b["status"] = r.status;
    // The product is the prescription's.
    std::string product;
    const std::string rx = Str(o, "prescription");
    for (const auto& [e, p] : parsed_) {
      if (Str(p, "type") == "prescription" && Str(p, "id") == rx) product = Str(p, "product");
    }
    json::object medication = MedicationConcept(product);
    AddCodes(r, medication);
    b["medicationCodeableConcept"] = std::move(medication);
    b["subject"] = Reference("Patient", stream_.patient_id);
    b["authorizingPrescription"] =
        json::array{Reference("MedicationRequest", stream_.patient_id + "." + rx)};
    if (auto days = Num(o, "days_supply")) {
      b["daysSupply"] = Quantity(*days, "days", k_.systems.ucum, k_.isotretinoin.supply_unit_ucum);
    }
    SetTime(r, "whenHandedOver", Str(o, "at"));
  }

  void MapMedication(const store::StoredEntry& entry, const json::object& o,
                     const std::string& id) {
    Resource& r = Add("MedicationStatement", entry, id, VersionOf(entry, id));
    json::object& b = r.body;
    if (Corrected(id)) {
      r.status = "entered-in-error";
    } else {
      r.status = Str(o, "action") == "stop" ? "stopped" : "active";
    }
    b["status"] = r.status;
    json::array codings;
    const std::string atc = Str(o, "atc");
    if (!atc.empty()) codings.push_back(Coding(k_.systems.atc, atc));
    json::object medication{{"text", Str(o, "name")}};
    if (!codings.empty()) medication["coding"] = std::move(codings);
    AddCodes(r, medication);
    b["medicationCodeableConcept"] = std::move(medication);
    b["subject"] = Reference("Patient", stream_.patient_id);
    SetTime(r, "effectiveDateTime", Str(o, "at"));
  }

  void MapConsent(const store::StoredEntry& entry, const json::object& o, const std::string& type,
                  const std::string& id) {
    Resource& r = Add("Consent", entry, id, VersionOf(entry, id));
    json::object& b = r.body;
    r.status = Corrected(id) ? "entered-in-error" : "active";
    b["status"] = r.status;
    b["scope"] = Concept(json::array{Coding(k_.systems.consent_scope, "treatment")});
    const std::string kind = type == "enrollment" ? "enrollment" : "risk-acknowledgement";
    json::object category = Concept(json::array{Coding(k_.systems.isoguard_consent, kind)});
    AddCodes(r, category);
    b["category"] = json::array{std::move(category)};
    b["patient"] = Reference("Patient", stream_.patient_id);
    SetTime(r, "dateTime", Str(o, "at"));
    const std::string program = Str(o, "program");
    b["policyRule"] =
        Concept(json::array{Coding(k_.systems.isoguard_consent, program.empty() ? kind : program)});
  }

  void MapEvaluation(const json::object& ev, Instant now) {
    const std::string identified = FormatUtc(now);
    const json::value* auth = ev.if_contains("authorization");
    std::string prescription;
    if (auth != nullptr && auth->is_object()) {
      prescription = Str(auth->get_object(), "prescription");
      const json::value* reasons = auth->get_object().if_contains("reasons");
      if (reasons != nullptr && reasons->is_array()) {
        for (const json::value& reason : reasons->get_array()) {
          if (!reason.is_object()) continue;
          const std::string code = Str(reason.get_object(), "code");
          Issue("reason-" + IdPart(code), k_.systems.isoguard_reason, code, "high",
                Str(reason.get_object(), "message"), prescription, {}, identified, now);
        }
      }
    }
    const json::value* alerts = ev.if_contains("alerts");
    if (alerts != nullptr && alerts->is_array()) {
      for (const json::value& alert : alerts->get_array()) {
        if (!alert.is_object()) continue;
        const json::object& a = alert.get_object();
        const std::string code = Str(a, "code");
        const std::string cls = Str(a, "class");
        const std::string severity = Str(a, "severity");
        Issue("alert-" + IdPart(code) + (cls.empty() ? "" : "-" + IdPart(cls)),
              k_.systems.isoguard_alert, code,
              severity == "critical"  ? "high"
              : severity == "warning" ? "moderate"
                                      : "low",
              Str(a, "message"), code == "DOSE_OUT_OF_RANGE" ? prescription : std::string(), cls,
              identified, now);
      }
    }
    const json::value* due = ev.if_contains("due");
    if (due != nullptr && due->is_array()) {
      for (const json::value& item : due->get_array()) {
        if (item.is_object()) DueTask(item.get_object(), identified, now);
      }
    }
  }

  Resource& Derived(std::string type, const std::string& suffix, Instant now) {
    Resource r;
    r.type = std::move(type);
    r.id = stream_.patient_id + "." + suffix;
    r.version = stream_.version;
    r.last_updated = now;
    r.date = now;
    r.body["resourceType"] = r.type;
    r.body["id"] = r.id;
    r.body["meta"] =
        json::object{{"versionId", std::to_string(r.version)}, {"lastUpdated", FormatUtc(now)}};
    out_.push_back(std::move(r));
    return out_.back();
  }

  void Issue(const std::string& suffix, const std::string& system, const std::string& code,
             std::string_view severity, const std::string& message, const std::string& prescription,
             const std::string& interaction_class, const std::string& identified, Instant now) {
    Resource& r = Derived("DetectedIssue", suffix, now);
    json::object& b = r.body;
    r.status = "final";
    b["status"] = "final";
    json::object code_concept = Concept(json::array{Coding(system, code)}, code);
    AddCodes(r, code_concept);
    b["code"] = std::move(code_concept);
    b["severity"] = severity;
    b["patient"] = Reference("Patient", stream_.patient_id);
    b["identifiedDateTime"] = identified;
    if (!message.empty()) b["detail"] = message;
    if (!prescription.empty()) {
      b["implicated"] =
          json::array{Reference("MedicationRequest", stream_.patient_id + "." + prescription)};
    }
    if (!interaction_class.empty()) {
      const std::string atc = AtcOfInteractionClass(rulebook_, interaction_class);
      json::object evidence_code =
          atc.empty() ? json::object{{"text", interaction_class}}
                      : Concept(json::array{Coding(k_.systems.atc, atc)}, interaction_class);
      b["evidence"] = json::array{json::object{{"code", json::array{std::move(evidence_code)}}}};
    }
  }

  void DueTask(const json::object& item, const std::string& identified, Instant now) {
    const std::string code = Str(item, "code");
    const std::string due_by = Str(item, "due_by");
    Resource& r = Derived("Task", "due-" + IdPart(code), now);
    json::object& b = r.body;
    auto due_date = ParseDate(due_by);
    const bool overdue =
        due_date.ok() &&
        LocalDate(static_cast<int32_t>(
            std::chrono::floor<std::chrono::days>(now).time_since_epoch().count())) > *due_date;
    r.status = "requested";
    b["status"] = "requested";
    b["businessStatus"] = json::object{{"text", overdue ? "overdue" : "due"}};
    b["intent"] = "plan";
    b["priority"] = overdue ? "urgent" : "routine";
    json::object code_concept = Concept(json::array{Coding(k_.systems.isoguard_due, code)}, code);
    AddCodes(r, code_concept);
    b["code"] = std::move(code_concept);
    b["for"] = Reference("Patient", stream_.patient_id);
    b["authoredOn"] = identified;
    json::object period;
    const std::string not_before = Str(item, "not_before");
    if (!not_before.empty()) period["start"] = not_before;
    if (!due_by.empty()) period["end"] = due_by;
    b["restriction"] = json::object{{"period", std::move(period)}};
    if (due_date.ok()) r.date = Instant(std::chrono::days(due_date->days_since_epoch()));
  }

  const FhirKnowledge& k_;
  const Rulebook& rulebook_;
  const store::Stream& stream_;
  std::vector<std::pair<const store::StoredEntry*, json::object>> parsed_;
  std::map<std::string, int64_t> corrected_, cancelled_, dispensed_;
  std::vector<Resource> out_;
};

// ---- Inbound helpers.

class Element {
 public:
  Element(const json::object& o, std::string path) : o_(o), path_(std::move(path)) {}
  const std::string& path() const { return path_; }
  std::string At(std::string_view key) const { return path_ + "." + std::string(key); }

  Result<std::string> RequiredString(std::string_view key) const {
    const json::value* v = o_.if_contains(key);
    if (v == nullptr || v->is_null()) return Error::BadInput("required", At(key));
    if (!v->is_string() || v->get_string().empty()) {
      return Error::BadInput("must be a non-empty string", At(key));
    }
    return std::string(v->get_string());
  }
  Result<const json::object*> RequiredObject(std::string_view key) const {
    const json::value* v = o_.if_contains(key);
    if (v == nullptr || v->is_null()) return Error::BadInput("required", At(key));
    if (!v->is_object()) return Error::BadInput("must be an object", At(key));
    return &v->get_object();
  }
  const json::object& object() const { return o_; }

 private:
  const json::object& o_;
  std::string path_;
};

// The codings of a CodeableConcept: (system, code) pairs.
std::vector<std::pair<std::string, std::string>> Codings(const json::object& concept_object) {
  std::vector<std::pair<std::string, std::string>> out;
  const json::value* codings = concept_object.if_contains("coding");
  if (codings == nullptr || !codings->is_array()) return out;
  for (const json::value& c : codings->get_array()) {
    if (c.is_object()) out.emplace_back(Str(c.get_object(), "system"), Str(c.get_object(), "code"));
  }
  return out;
}

Result<std::string> EffectiveTime(const Element& e, std::string_view key) {
  auto text = e.RequiredString(key);
  if (!text.ok()) return text.error();
  if (!ParseOffsetTime(*text).ok() && !ParseDate(*text).ok()) {
    return Error::BadInput("must be a date or a time with an offset", e.At(key));
  }
  return *text;
}

Result<json::object> ObservationEvent(const FhirKnowledge& k, const Element& e) {
  auto status = e.RequiredString("status");
  if (!status.ok()) return status.error();
  if (*status != "final" && *status != "amended" && *status != "corrected") {
    return Error::BadInput("must be final, amended or corrected (a result, not a plan)",
                           e.At("status"));
  }
  auto code = e.RequiredObject("code");
  if (!code.ok()) return code.error();
  std::string loinc;
  for (const auto& [system, c] : Codings(**code)) {
    if (system == k.systems.loinc) loinc = c;
  }
  const std::string coding_path = e.At("code.coding");
  if (loinc.empty())
    return Error::BadInput("needs a LOINC coding (" + k.systems.loinc + ")", coding_path);
  auto at = EffectiveTime(e, "effectiveDateTime");
  if (!at.ok()) return at.error();
  const json::object& o = e.object();

  auto quantity = [&](std::string_view key) -> Result<std::pair<double, std::string>> {
    auto q = e.RequiredObject(key);
    if (!q.ok()) return q.error();
    auto value = Num(**q, "value");
    if (!value) return Error::BadInput("required (a number)", e.At(std::string(key) + ".value"));
    std::string system = Str(**q, "system");
    std::string unit = Str(**q, "code");
    if (system != k.systems.ucum || unit.empty()) {
      return Error::BadInput("must be a UCUM unit (system " + k.systems.ucum + ")",
                             e.At(std::string(key) + ".system"));
    }
    return std::make_pair(*value, unit);
  };

  const PregnancyTestCodes& p = k.pregnancy_test;
  if (loinc == p.urine_loinc || loinc == p.serum_loinc) {
    json::object ev{{"type", "pregnancy_test"},
                    {"collected_at", *at},
                    {"specimen", loinc == p.serum_loinc ? "serum" : "urine"}};
    if (const json::value* value = o.if_contains("valueCodeableConcept")) {
      if (!value->is_object())
        return Error::BadInput("must be an object", e.At("valueCodeableConcept"));
      std::string result;
      for (const auto& [system, c] : Codings(value->get_object())) {
        if (system == k.systems.snomed && c == p.negative_snomed) result = "negative";
        if (system == k.systems.snomed && c == p.positive_snomed) result = "positive";
      }
      if (result.empty()) {
        return Error::BadInput("must be SNOMED CT " + p.negative_snomed + " (negative) or " +
                                   p.positive_snomed + " (positive)",
                               e.At("valueCodeableConcept.coding"));
      }
      ev["result"] = result;
    } else if (const json::value* absent = o.if_contains("dataAbsentReason")) {
      bool error_reason = false;
      if (absent->is_object()) {
        for (const auto& [system, c] : Codings(absent->get_object())) {
          error_reason = error_reason || (system == k.systems.data_absent_reason &&
                                          c == p.invalid_data_absent_reason);
        }
      }
      if (!error_reason) {
        return Error::BadInput(
            "only '" + p.invalid_data_absent_reason + "' (an invalid test) is taken",
            e.At("dataAbsentReason.coding"));
      }
      ev["result"] = "invalid";
    } else {
      return Error::BadInput("required (or dataAbsentReason for an invalid test)",
                             e.At("valueCodeableConcept"));
    }
    std::string setting;
    if (const json::value* ext = o.if_contains("extension"); ext != nullptr && ext->is_array()) {
      for (const json::value& x : ext->get_array()) {
        if (x.is_object() && Str(x.get_object(), "url") == k.systems.test_setting_extension) {
          setting = Str(x.get_object(), "valueCode");
        }
      }
    }
    if (setting.empty()) {
      return Error::BadInput(
          "required: the extension " + k.systems.test_setting_extension + " (lab, office, home)",
          e.At("extension"));
    }
    ev["setting"] = setting;
    return ev;
  }

  if (loinc == k.phq9.panel_loinc) {
    const json::value* components = o.if_contains("component");
    if (components == nullptr || !components->is_array()) {
      return Error::BadInput("required: the nine PHQ-9 items", e.At("component"));
    }
    std::array<std::optional<int64_t>, 9> items;
    size_t i = 0;
    for (const json::value& c : components->get_array()) {
      const std::string path = e.At("component[" + std::to_string(i++) + "]");
      if (!c.is_object()) return Error::BadInput("must be an object", path);
      const json::value* cc = c.get_object().if_contains("code");
      if (cc == nullptr || !cc->is_object()) return Error::BadInput("required", path + ".code");
      std::string item_code;
      for (const auto& [system, code_value] : Codings(cc->get_object())) {
        if (system == k.systems.loinc) item_code = code_value;
      }
      if (item_code == k.phq9.total_loinc) continue;  // computed from the items
      size_t slot = 9;
      for (size_t j = 0; j < 9; ++j) {
        if (k.phq9.item_loinc[j] == item_code) slot = j;
      }
      if (slot == 9) {
        return Error::BadInput("unknown PHQ-9 item code '" + item_code + "'",
                               path + ".code.coding");
      }
      const json::value* v = c.get_object().if_contains("valueInteger");
      if (v == nullptr || !v->is_int64())
        return Error::BadInput("required (0 to 3)", path + ".valueInteger");
      items[slot] = v->get_int64();
    }
    json::array values;
    for (size_t j = 0; j < 9; ++j) {
      if (!items[j]) {
        return Error::BadInput(
            "item " + std::to_string(j + 1) + " (" + k.phq9.item_loinc[j] + ") is missing",
            e.At("component"));
      }
      values.push_back(*items[j]);
    }
    return json::object{{"type", "phq9"}, {"at", *at}, {"items", std::move(values)}};
  }

  const ObservationCode* obs = k.FindObservationByLoinc(loinc);
  if (obs == nullptr) {
    return Error::BadInput(
        "unknown code '" + loinc + "': isoguard takes body weight, ALT, AST, lipids, hCG and PHQ-9",
        coding_path);
  }
  auto q = quantity("valueQuantity");
  if (!q.ok()) return q.error();
  std::string unit;
  for (const auto& [record_unit, ucum] : obs->units) {
    if (ucum == q->second) unit = record_unit;
  }
  if (unit.empty()) {
    std::string allowed;
    for (const auto& [record_unit, ucum] : obs->units)
      allowed += (allowed.empty() ? "" : ", ") + ucum;
    return Error::BadInput(
        "unit '" + q->second + "' is not taken for " + obs->name + " (" + allowed + ")",
        e.At("valueQuantity.code"));
  }
  if (obs->name == "weight") return json::object{{"type", "weight"}, {"at", *at}, {"kg", q->first}};
  json::object ev{
      {"type", "lab"}, {"at", *at}, {"test", obs->name}, {"value", q->first}, {"unit", unit}};
  if (const json::value* range = o.if_contains("referenceRange")) {
    if (range->is_array() && !range->get_array().empty() && range->get_array()[0].is_object()) {
      const json::value* high = range->get_array()[0].get_object().if_contains("high");
      if (high != nullptr && high->is_object()) {
        if (auto uln = Num(high->get_object(), "value")) ev["uln"] = *uln;
      }
    }
  }
  return ev;
}

Result<json::object> MedicationStatementEvent(const FhirKnowledge& k, const Element& e,
                                              Instant now) {
  auto status = e.RequiredString("status");
  if (!status.ok()) return status.error();
  std::string action;
  if (*status == "active" || *status == "intended") action = "start";
  if (*status == "stopped" || *status == "completed") action = "stop";
  if (action.empty()) {
    return Error::BadInput("must be active, intended, completed or stopped", e.At("status"));
  }
  auto medication = e.RequiredObject("medicationCodeableConcept");
  if (!medication.ok()) return medication.error();
  std::string atc;
  std::string name = Str(**medication, "text");
  const json::value* codings = (*medication)->if_contains("coding");
  if (codings != nullptr && codings->is_array()) {
    for (const json::value& c : codings->get_array()) {
      if (!c.is_object()) continue;
      if (Str(c.get_object(), "system") == k.systems.atc) atc = Str(c.get_object(), "code");
      if (name.empty()) name = Str(c.get_object(), "display");
    }
  }
  if (name.empty()) {
    return Error::BadInput("needs a text or a coding with a display (the medication's name)",
                           e.At("medicationCodeableConcept.text"));
  }
  std::string at;
  if (Has(e.object(), "effectiveDateTime")) {
    auto t = EffectiveTime(e, "effectiveDateTime");
    if (!t.ok()) return t.error();
    at = *t;
  } else if (Has(e.object(), "dateAsserted")) {
    auto t = EffectiveTime(e, "dateAsserted");
    if (!t.ok()) return t.error();
    at = *t;
  } else {
    at = FormatUtc(now);
  }
  json::object ev{{"type", "medication"}, {"at", at}, {"name", name}, {"action", action}};
  if (!atc.empty()) ev["atc"] = atc;
  return ev;
}

}  // namespace

bool IsReadType(std::string_view type) {
  for (std::string_view t : kReadTypes) {
    if (t == type) return true;
  }
  return false;
}
bool IsCreateType(std::string_view type) {
  for (std::string_view t : kCreateTypes) {
    if (t == type) return true;
  }
  return false;
}

bool IsFhirId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') return false;
  }
  return true;
}

std::string_view PatientOfResourceId(std::string_view id) { return id.substr(0, id.find('.')); }

std::vector<Resource> ResourcesOfStream(const FhirKnowledge& k, const Rulebook& rulebook,
                                        const store::Stream& stream,
                                        const boost::json::object* evaluation, Instant now) {
  return StreamMapper(k, rulebook, stream).Map(evaluation, now);
}

std::string AtcOfInteractionClass(const Rulebook& rulebook, std::string_view class_code) {
  for (const InteractionClass& c : rulebook.knowledge.interactions) {
    if (c.code == class_code && !c.atc_prefixes.empty()) return c.atc_prefixes.front();
  }
  return {};
}

Result<std::string> SubjectPatient(const json::object& resource, std::string_view where) {
  const std::string key = Str(resource, "resourceType") == "Consent" ? "patient" : "subject";
  Element e(resource, std::string(where));
  auto subject = e.RequiredObject(key);
  if (!subject.ok()) return subject.error();
  const std::string reference = Str(**subject, "reference");
  if (!reference.starts_with("Patient/") || reference.size() == 8) {
    return Error::BadInput("must be a reference 'Patient/<id>'", e.At(key + ".reference"));
  }
  return reference.substr(8);
}

bool IsIsotretinoin(const FhirKnowledge& k, const json::value* concept_value) {
  if (concept_value == nullptr || !concept_value->is_object()) return false;
  for (const auto& [system, code] : Codings(concept_value->get_object())) {
    if (system == k.systems.rxnorm && code == k.isotretinoin.rxnorm) return true;
    if (system == k.systems.atc && code == k.isotretinoin.atc) return true;
  }
  return false;
}

Result<json::object> PrescriptionFromMedicationRequest(const FhirKnowledge& k,
                                                       const json::object& resource,
                                                       std::string_view where, std::string id,
                                                       Instant now) {
  Element e(resource, std::string(where));
  auto medication = e.RequiredObject("medicationCodeableConcept");
  if (!medication.ok()) return medication.error();
  if (!IsIsotretinoin(k, resource.if_contains("medicationCodeableConcept"))) {
    return Error::BadInput("must code isotretinoin (RxNorm " + k.isotretinoin.rxnorm + " or ATC " +
                               k.isotretinoin.atc + ")",
                           e.At("medicationCodeableConcept.coding"));
  }
  std::string product = "generic";
  for (const auto& [system, code] : Codings(**medication)) {
    if (system != k.systems.isoguard_product) continue;
    if (!ParseProduct(code)) {
      return Error::BadInput("unknown product '" + code + "'",
                             e.At("medicationCodeableConcept.coding"));
    }
    product = code;
  }
  const json::value* dosage = resource.if_contains("dosageInstruction");
  if (dosage == nullptr || !dosage->is_array() || dosage->get_array().empty()) {
    return Error::BadInput("required: one entry per daily dose", e.At("dosageInstruction"));
  }
  json::array doses;
  size_t i = 0;
  for (const json::value& d : dosage->get_array()) {
    const std::string path = e.At("dosageInstruction[" + std::to_string(i++) + "]");
    if (!d.is_object()) return Error::BadInput("must be an object", path);
    const json::value* rate = d.get_object().if_contains("doseAndRate");
    const json::value* q = nullptr;
    if (rate != nullptr && rate->is_array() && !rate->get_array().empty() &&
        rate->get_array()[0].is_object()) {
      q = rate->get_array()[0].get_object().if_contains("doseQuantity");
    }
    if (q == nullptr || !q->is_object()) {
      return Error::BadInput("required", path + ".doseAndRate[0].doseQuantity");
    }
    auto value = Num(q->get_object(), "value");
    if (!value)
      return Error::BadInput("required (mg)", path + ".doseAndRate[0].doseQuantity.value");
    if (Str(q->get_object(), "code") != k.isotretinoin.dose_unit_ucum) {
      return Error::BadInput("must be in " + k.isotretinoin.dose_unit_ucum + " (UCUM)",
                             path + ".doseAndRate[0].doseQuantity.code");
    }
    int64_t frequency = 1;
    const json::value* timing = d.get_object().if_contains("timing");
    if (timing != nullptr && timing->is_object()) {
      const json::value* repeat = timing->get_object().if_contains("repeat");
      if (repeat != nullptr && repeat->is_object()) {
        const json::object& r = repeat->get_object();
        auto f = Num(r, "frequency").value_or(1);
        auto period = Num(r, "period").value_or(1);
        const std::string unit = Str(r, "periodUnit");
        if ((!unit.empty() && unit != "d") || period != 1 || f < 1 || f > 4 || f != std::floor(f)) {
          return Error::BadInput("only daily doses are taken (frequency 1 to 4 per 1 d)",
                                 path + ".timing.repeat");
        }
        frequency = static_cast<int64_t>(f);
      }
    }
    for (int64_t n = 0; n < frequency; ++n) {
      // Whole milligrams stay integers in the record ([40, 30], not [40.0, 30.0]).
      if (*value == std::floor(*value) && std::abs(*value) < 1e9) {
        doses.push_back(static_cast<int64_t>(*value));
      } else {
        doses.push_back(*value);
      }
    }
  }
  const json::value* dispense = resource.if_contains("dispenseRequest");
  if (dispense == nullptr || !dispense->is_object()) {
    return Error::BadInput("required (expectedSupplyDuration)", e.At("dispenseRequest"));
  }
  const json::value* supply = dispense->get_object().if_contains("expectedSupplyDuration");
  std::optional<double> days;
  if (supply != nullptr && supply->is_object()) {
    days = Num(supply->get_object(), "value");
    if (Str(supply->get_object(), "code") != k.isotretinoin.supply_unit_ucum) days.reset();
  }
  if (!days || *days != std::floor(*days)) {
    return Error::BadInput("required: whole days (UCUM " + k.isotretinoin.supply_unit_ucum + ")",
                           e.At("dispenseRequest.expectedSupplyDuration"));
  }
  int64_t refills = 0;
  if (const json::value* r = dispense->get_object().if_contains("numberOfRepeatsAllowed")) {
    if (!r->is_int64()) {
      return Error::BadInput("must be an integer", e.At("dispenseRequest.numberOfRepeatsAllowed"));
    }
    refills = r->get_int64();
  }
  std::string at;
  if (Has(resource, "authoredOn")) {
    auto t = EffectiveTime(e, "authoredOn");
    if (!t.ok()) return t.error();
    at = *t;
  } else {
    at = FormatUtc(now);
  }
  return json::object{{"type", "prescription"},
                      {"at", at},
                      {"id", std::move(id)},
                      {"product", product},
                      {"doses_mg", std::move(doses)},
                      {"days_supply", static_cast<int64_t>(*days)},
                      {"refills", refills}};
}

Result<json::object> EventFromResource(const FhirKnowledge& k, const json::object& resource,
                                       std::string_view where, Instant now) {
  const std::string type = Str(resource, "resourceType");
  Element e(resource, std::string(where));
  if (type == "Observation") return ObservationEvent(k, e);
  if (type == "MedicationStatement") return MedicationStatementEvent(k, e, now);
  if (type == "MedicationRequest") {
    auto status = e.RequiredString("status");
    if (!status.ok()) return status.error();
    if (*status != "active")
      return Error::BadInput("must be active (a signed order)", e.At("status"));
    auto intent = e.RequiredString("intent");
    if (!intent.ok()) return intent.error();
    if (*intent != "order") return Error::BadInput("must be order", e.At("intent"));
    return PrescriptionFromMedicationRequest(k, resource, where, "", now);
  }
  return Error::BadInput("cannot create a " + type +
                             " (this server creates Observation, "
                             "MedicationRequest and MedicationStatement)",
                         std::string(where) + ".resourceType");
}

json::object OperationOutcome(std::string_view severity, std::string_view code,
                              std::string diagnostics, std::string_view expression) {
  json::object issue{
      {"severity", severity}, {"code", code}, {"diagnostics", std::move(diagnostics)}};
  if (!expression.empty()) issue["expression"] = json::array{json::string(expression)};
  return json::object{{"resourceType", "OperationOutcome"},
                      {"issue", json::array{std::move(issue)}}};
}

std::string_view IssueTypeFor(const Error& error) {
  switch (error.kind) {
    case ErrorKind::kBadInput:
      return error.message.starts_with("required") ? "required" : "invalid";
    case ErrorKind::kNotFound:
      return "not-found";
    case ErrorKind::kConflict:
    case ErrorKind::kPreconditionFailed:
      return "conflict";
    case ErrorKind::kUnauthenticated:
      return "login";
    case ErrorKind::kForbidden:
      return "forbidden";
    case ErrorKind::kUnavailable:
      return "transient";
    case ErrorKind::kRateLimited:
      return "throttled";
    default:
      return "exception";
  }
}

}  // namespace isoguard::fhir
