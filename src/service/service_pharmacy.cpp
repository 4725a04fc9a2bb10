// The pharmacy's side of the service: reversals, dispenses, what a pharmacy may see of a
// patient, its open authorizations, and its stock and storage.
#include <algorithm>
#include <boost/json.hpp>
#include <cmath>

#include "domain/record_parser.h"
#include "service/service.h"
#include "service/service_internal.h"

namespace isoguard::service {

namespace json = boost::json;
using detail::Str;

namespace {

// The lot strength must make every dose of the prescription with whole capsules.
Result<int64_t> CapsulesFor(const Event& prescription, double strength_mg, int32_t days) {
  if (strength_mg <= 0) return Error::BadInput("the lot has no strength", "lot_id");
  double per_day = 0;
  for (uint8_t i = 0; i < prescription.dose_count; ++i) {
    const double capsules = prescription.doses_mg[i] / strength_mg;
    if (std::fabs(capsules - std::round(capsules)) > 1e-9 || capsules < 1 - 1e-9) {
      return Error::BadInput("a " + std::to_string(static_cast<int>(strength_mg)) +
                                 " mg lot cannot make the prescribed dose of " +
                                 std::to_string(prescription.doses_mg[i]) +
                                 " mg with whole capsules; dispense from a lot of another strength",
                             "lot_id");
    }
    per_day += std::round(capsules);
  }
  return static_cast<int64_t>(per_day) * days;
}

const Event* FindPrescription(const Record& record, std::string_view id) {
  for (const Event& e : record.events) {
    if (e.type == EventType::kPrescription && e.id == id) return &e;
  }
  return nullptr;
}

}  // namespace

Result<AuthorizationRecord> Service::FindAuthorization(const std::string& id) {
  if (id.empty() || id.size() > kMaxIdBytes) return Error::BadInput("required", "authorization_id");
  // Not in the read model yet: project until it is or the projection has caught up with the
  // store (an authorization granted a moment ago must be found however far behind the
  // background projection is).
  // A pass of the background worker may apply it between the lookup and this thread's pass
  // (which then finds nothing new): so the lookup comes once more after a pass that was empty.
  for (bool caught_up = false;;) {
    auto found = store_.GetAuthorization(id);
    if (!found.ok()) return found.error();
    if (found->has_value()) return std::move(**found);
    if (caught_up) break;
    auto projected = Project();
    if (!projected.ok()) return projected.error();
    caught_up = *projected == 0;
  }
  return Error::NotFound("no such authorization", "authorization_id");
}

Status Service::ReverseInStream(const std::string& patient_id, const std::string& authorization_id,
                                const std::string& reason, const Principal* who) {
  for (int attempt = 0; attempt < options_.max_authorization_attempts; ++attempt) {
    auto state = events_.ReadState(patient_id);
    if (!state.ok()) return state.error();
    if (state->version == 0 || state->erased) {
      return Error::NotFound("no such patient", "patient_id");
    }
    const detail::AuthorizationScan scan = detail::ScanAuthorizations(state->record_json);
    const detail::StreamAuthorization* a = scan.Find(authorization_id);
    if (a == nullptr) return Error::NotFound("no such authorization", "authorization_id");
    if (scan.reversed.contains(authorization_id)) return {};  // reversed before: done
    if (scan.dispensed.contains(authorization_id)) {
      return Error::Conflict("the authorization was used: the prescription was dispensed",
                             "authorization_id");
    }
    json::object entry;
    entry["type"] = "authorization_reversal";
    entry["at"] = FormatUtc(Now());
    entry["authorization"] = authorization_id;
    entry["reason"] = reason;
    store::AppendRequest append;
    append.patient_id = patient_id;
    append.expected_version = state->version;
    if (who != nullptr) {
      append.actor = who->actor();
    } else {
      append.actor = store::Actor{"system", "system", "service"};
    }
    append.entries = {json::serialize(entry)};
    append.idempotency_key = "reversal:" + authorization_id;
    auto result = events_.Append(append);
    if (result.ok()) {
      Appended();
      return {};
    }
    if (result.error().kind != ErrorKind::kConflict) return result.error();
  }
  return Error::Unavailable("the patient's record kept changing; try again");
}

Result<AuthorizationRecord> Service::Reverse(const Principal& who,
                                             const std::string& authorization_id,
                                             std::string reason) {
  if (auto st = Require(who, Capability::kAuthorize); !st.ok()) return st.error();
  auto pharmacy = PharmacyOf(who);
  if (!pharmacy.ok()) return pharmacy.error();
  auto record = FindAuthorization(authorization_id);
  if (!record.ok()) return record.error();
  if (record->pharmacy_id != pharmacy->id) {
    return Error::Forbidden("the authorization belongs to another pharmacy", "authorization_id");
  }
  if (reason.size() > kMaxTextBytes) return Error::BadInput("too long", "reason");
  if (reason.empty()) reason = "reversed by the pharmacy";
  if (auto st = ReverseInStream(record->patient_id, authorization_id, reason, &who); !st.ok()) {
    return st.error();
  }
  if (auto projected = Project(); !projected.ok()) return projected.error();
  auto updated = store_.GetAuthorization(authorization_id);
  if (!updated.ok()) return updated.error();
  if (!updated->has_value()) return Error::Internal("the reversed authorization vanished");
  return std::move(**updated);
}

Result<DispenseAnswer> Service::Dispense(const Principal& who, const DispenseRequest& request) {
  if (auto st = Require(who, Capability::kDispense); !st.ok()) return st.error();
  auto pharmacy = PharmacyOf(who);
  if (!pharmacy.ok()) return pharmacy.error();
  if (!request.medication_guide_given) {
    return Error::BadInput("the Medication Guide must be handed to the patient with every dispense",
                           "medication_guide_given");
  }
  auto authorization = FindAuthorization(request.authorization_id);
  if (!authorization.ok()) return authorization.error();
  if (authorization->pharmacy_id != pharmacy->id) {
    return Error::Forbidden("the authorization belongs to another pharmacy", "authorization_id");
  }
  if (request.lot_id.empty()) return Error::BadInput("required", "lot_id");
  auto lot = store_.GetLot(request.lot_id);
  if (!lot.ok()) {
    Error e = lot.error();
    e.field = "lot_id";
    return e;
  }
  if (lot->pharmacy_id != pharmacy->id) {
    return Error::Forbidden("the lot belongs to another pharmacy", "lot_id");
  }
  if (lot->quarantined) {
    return Error::Conflict("the lot is in quarantine (" + lot->quarantine_reason +
                               "); a pharmacist must release it before it is dispensed",
                           "lot_id");
  }
  const Instant now = Now();
  const LocalDate today(
      static_cast<int32_t>(std::chrono::floor<std::chrono::days>(now).time_since_epoch().count()));
  if (lot->expiry < today) {
    return Error::Conflict("the lot expired on " + lot->expiry.ToString(), "lot_id");
  }
  const std::string& patient_id = authorization->patient_id;
  for (int attempt = 0; attempt < options_.max_authorization_attempts; ++attempt) {
    auto state = events_.ReadState(patient_id);
    if (!state.ok()) return state.error();
    if (state->version == 0 || state->erased) {
      return Error::NotFound("no such patient", "authorization_id");
    }
    const detail::AuthorizationScan scan = detail::ScanAuthorizations(state->record_json);
    const detail::StreamAuthorization* a = scan.Find(request.authorization_id);
    if (a == nullptr) return Error::NotFound("no such authorization", "authorization_id");
    if (scan.reversed.contains(a->id)) {
      return Error::Conflict("the authorization was reversed; ask for a new one",
                             "authorization_id");
    }
    if (scan.dispensed.contains(a->id)) {
      return Error::Conflict("the authorization was used already", "authorization_id");
    }
    if (a->dispense_by <= now) {
      return Error::Conflict(
          "the authorization expired at " + FormatUtc(a->dispense_by) + "; ask for a new one",
          "authorization_id");
    }
    if (scan.withdrawn.contains(a->event_id)) {
      return Error::Conflict("the authorization was entered in error; ask for a new one",
                             "authorization_id");
    }
    if (scan.PrescriptionVoid(a->prescription_id)) {
      return Error::Conflict("the prescription " + a->prescription_id +
                                 " was cancelled or entered in error: it is not to be dispensed",
                             "authorization_id");
    }
    auto record = ParseRecord(state->record_json, options_.parse);
    if (!record.ok()) return Error::Internal("the stored record does not parse");
    // Checked here, not left to the background reversal, which may not have run yet.
    if (detail::PregnancyHalt(*record, now)) {
      return Error::Conflict(
          "the latest pregnancy test is positive: every authorization for the patient is halted",
          "authorization_id");
    }
    const Event* rx = FindPrescription(*record, a->prescription_id);
    if (rx == nullptr) return Error::Internal("the authorized prescription is not in the record");
    if (lot->product != ToString(rx->product)) {
      return Error::BadInput("the lot is " + lot->product + " but the prescription is for " +
                                 std::string(ToString(rx->product)),
                             "lot_id");
    }
    auto capsules = CapsulesFor(*rx, lot->strength_mg, rx->days_supply);
    if (!capsules.ok()) return capsules.error();
    if (*capsules > lot->quantity_capsules) {
      return Error::Conflict("the lot holds " + std::to_string(lot->quantity_capsules) +
                                 " capsules; the dispense needs " + std::to_string(*capsules),
                             "lot_id");
    }
    json::object entry;
    entry["type"] = "dispense";
    entry["at"] = FormatUtc(now);
    entry["prescription"] = a->prescription_id;
    entry["authorization"] = a->id;
    entry["lot"] = lot->id;
    entry["capsules"] = *capsules;
    entry["medication_guide"] = true;
    entry["pharmacy"] = pharmacy->id;
    store::AppendRequest append;
    append.patient_id = patient_id;
    append.expected_version = state->version;
    append.actor = who.actor();
    append.entries = {json::serialize(entry)};
    append.idempotency_key = "dispense:" + a->id;
    auto result = events_.Append(append);
    if (!result.ok()) {
      if (result.error().kind == ErrorKind::kConflict) continue;
      return result.error();
    }
    if (!result->replayed) {
      // The stock count follows the recorded fact; a count that cannot be taken (another
      // dispense took the capsules meanwhile) is reported, the dispense stands.
      if (auto st = store_.TakeFromLot(lot->id, *capsules); !st.ok()) {
        (void)Notify(who.account.id, patient_id, "stock", "warning",
                     "The stock count of lot " + lot->id + " could not be lowered by " +
                         std::to_string(*capsules) + " capsules: " + st.error().message,
                     "stock:" + a->id);
      }
    }
    Appended();
    DispenseAnswer answer;
    answer.patient_id = patient_id;
    answer.authorization_id = a->id;
    answer.prescription_id = a->prescription_id;
    answer.lot_id = lot->id;
    answer.event_id = result->event_ids.empty() ? std::string() : result->event_ids.front();
    answer.capsules = *capsules;
    answer.dispensed_at = now;
    return answer;
  }
  return Error::Unavailable("the patient's record kept changing; try again");
}

Result<std::string> Service::PharmacyView(const Principal& who, const std::string& patient_id) {
  if (auto st = RequireAccess(who, Capability::kPharmacyView, patient_id); !st.ok()) {
    return st.error();
  }
  auto state = events_.ReadState(patient_id);
  if (!state.ok()) return state.error();
  if (state->version == 0) return Error::NotFound("no such patient", "patient_id");
  if (state->erased) return Error::BadInput("the patient's record was erased", "patient_id");
  auto record = ParseRecord(state->record_json, options_.parse);
  if (!record.ok()) return Error::Internal("the stored record does not parse");
  EvaluateOptions eo;
  eo.at = Now();
  auto evaluation = Evaluate(rulebook_, *record, eo);
  if (!evaluation.ok()) return evaluation.error();
  // Only what an authorization needs: who the patient is, and whether and why not.
  json::object out;
  json::object patient;
  patient["id"] = record->patient.id;
  patient["birth_date"] = record->patient.birth_date.ToString();
  patient["jurisdiction"] = ToString(record->patient.jurisdiction);
  patient["category"] = ToString(record->patient.category);
  out["patient"] = std::move(patient);
  if (evaluation->program != nullptr) out["program"] = evaluation->program->id;
  const Authorization& a = evaluation->authorization;
  json::object decision;
  if (a.prescription.has_value()) {
    decision["prescription"] = *a.prescription;
  } else {
    decision["prescription"] = nullptr;
  }
  decision["authorized"] = a.authorized;
  if (a.dispense_by.has_value()) decision["dispense_by"] = FormatUtc(*a.dispense_by);
  json::array reasons;
  for (const Reason& r : a.reasons) {
    reasons.push_back(json::object{{"code", r.code}, {"message", r.message}});
  }
  decision["reasons"] = std::move(reasons);
  out["authorization"] = std::move(decision);
  // What is to be handed out: the prescription's product, doses and supply (the lot chosen
  // must make each dose with whole capsules).
  if (a.prescription.has_value()) {
    if (const Event* rx = FindPrescription(*record, *a.prescription)) {
      json::array doses;
      for (uint8_t i = 0; i < rx->dose_count; ++i) doses.push_back(rx->doses_mg[i]);
      out["prescription"] = json::object{{"id", rx->id},
                                         {"product", ToString(rx->product)},
                                         {"doses_mg", std::move(doses)},
                                         {"days_supply", rx->days_supply}};
    }
  }
  // The parsed record says whether any authorization is open; only then is the record's JSON
  // read again for the pharmacy holding it (a field the record format does not keep).
  detail::AuthorizationScan scan = detail::ScanAuthorizations(*record);
  const bool any_open =
      std::any_of(scan.authorizations.begin(), scan.authorizations.end(),
                  [&scan](const detail::StreamAuthorization& s) { return !scan.IsClosed(s); });
  if (any_open) scan = detail::ScanAuthorizations(state->record_json);
  json::array open;
  for (const detail::StreamAuthorization& s : scan.authorizations) {
    if (scan.IsClosed(s)) continue;
    open.push_back(json::object{{"authorization_id", s.id},
                                {"prescription_id", s.prescription_id},
                                {"pharmacy_id", s.pharmacy_id},
                                {"dispense_by", FormatUtc(s.dispense_by)}});
  }
  out["open_authorizations"] = std::move(open);
  return json::serialize(out);
}

Result<std::vector<AuthorizationRecord>> Service::OpenAuthorizations(const Principal& who,
                                                                     size_t limit, size_t offset) {
  if (auto st = Require(who, Capability::kPharmacyWorklist); !st.ok()) return st.error();
  auto pharmacy = PharmacyOf(who);
  if (!pharmacy.ok()) return pharmacy.error();
  if (auto projected = Project(); !projected.ok()) return projected.error();
  return store_.ListOpenAuthorizations(pharmacy->id, std::min(limit, kMaxListLimit), offset);
}

// ---------------------------------------------------------------------------------------------
// Stock and storage

Status Service::AddLot(const Principal& who, Lot lot) {
  if (auto st = Require(who, Capability::kStock); !st.ok()) return st;
  auto pharmacy = PharmacyOf(who);
  if (!pharmacy.ok()) return pharmacy.error();
  if (lot.id.empty()) lot.id = detail::RandomId("L-", 10);
  if (!ParseProduct(lot.product).has_value()) {
    return Error::BadInput("must be generic, absorica or absorica_ld", "product");
  }
  if (!(lot.strength_mg > 0) || lot.strength_mg > 100) {
    return Error::BadInput("must be in (0, 100] mg", "strength_mg");
  }
  if (lot.quantity_capsules < 0 || lot.quantity_capsules > 1000000) {
    return Error::BadInput("must be 0 to 1,000,000", "quantity_capsules");
  }
  if (lot.lot_number.empty()) return Error::BadInput("required", "lot_number");
  if (lot.location.empty()) return Error::BadInput("required", "location");
  lot.pharmacy_id = pharmacy->id;
  lot.received_at = Now();
  lot.quarantined = false;
  lot.quarantine_reason.clear();
  return store_.AddLot(lot);
}

Result<std::vector<Lot>> Service::ListLots(const Principal& who) {
  if (auto st = Require(who, Capability::kStock); !st.ok()) return st.error();
  auto pharmacy = PharmacyOf(who);
  if (!pharmacy.ok()) return pharmacy.error();
  return store_.ListLots(pharmacy->id);
}

Result<TemperatureResult> Service::RecordTemperature(const Principal& who,
                                                     TemperatureReading reading) {
  if (auto st = Require(who, Capability::kStock); !st.ok()) return st.error();
  auto pharmacy = PharmacyOf(who);
  if (!pharmacy.ok()) return pharmacy.error();
  if (!std::isfinite(reading.celsius) || reading.celsius < -50 || reading.celsius > 100) {
    return Error::BadInput("must be a temperature in °C between -50 and 100", "celsius");
  }
  if (reading.location.empty()) return Error::BadInput("required", "location");
  reading.pharmacy_id = pharmacy->id;
  reading.recorded_by = who.account.id;
  if (reading.at == Instant{}) reading.at = Now();
  const SafetyKnowledge& safety = rulebook_.knowledge.safety;
  auto result = store_.RecordTemperature(
      reading, StorageRange{safety.storage_min_celsius, safety.storage_max_celsius});
  if (!result.ok()) return result.error();
  if (result->excursion && !result->quarantined_lot_ids.empty()) {
    std::string lots;
    for (const std::string& id : result->quarantined_lot_ids)
      lots += (lots.empty() ? "" : ", ") + id;
    (void)Notify(who.account.id, "", "temperature_excursion", "warning",
                 "A reading of " + std::to_string(reading.celsius) + " °C at " + reading.location +
                     " is outside the storage range; lots quarantined: " + lots,
                 "excursion:" + std::to_string(result->reading.id));
  }
  return result;
}

Result<std::vector<TemperatureReading>> Service::ListTemperatures(const Principal& who,
                                                                  int64_t after_id, size_t limit) {
  if (auto st = Require(who, Capability::kStock); !st.ok()) return st.error();
  auto pharmacy = PharmacyOf(who);
  if (!pharmacy.ok()) return pharmacy.error();
  return store_.ListTemperatures(pharmacy->id, after_id, std::min(limit, kMaxListLimit));
}

Status Service::ReleaseLot(const Principal& who, const std::string& lot_id,
                           const std::string& reason) {
  if (auto st = Require(who, Capability::kStock); !st.ok()) return st;
  auto pharmacy = PharmacyOf(who);
  if (!pharmacy.ok()) return pharmacy.error();
  auto lot = store_.GetLot(lot_id);
  if (!lot.ok()) return lot.error();
  if (lot->pharmacy_id != pharmacy->id) {
    return Error::Forbidden("the lot belongs to another pharmacy", "lot_id");
  }
  if (reason.empty()) {
    return Error::BadInput("say why the lot is fit to dispense (the review's finding)", "reason");
  }
  return store_.ReleaseLot(lot_id, who.account.id, reason, Now());
}

}  // namespace isoguard::service
