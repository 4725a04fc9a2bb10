#include "service/service.h"

#include <sodium.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <mutex>

#include "domain/record_parser.h"
#include "service/credentials.h"
#include "service/service_internal.h"
#include "store/entry_codec.h"

namespace isoguard::service {

namespace json = boost::json;

Clock SystemClock() {
  return [] {
    return std::chrono::time_point_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now());
  };
}

namespace detail {

std::string RandomId(std::string_view prefix, size_t chars) {
  // Crockford's base32 without the look-alikes: ids are read over the phone.
  static constexpr char kAlphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  std::string id(prefix);
  for (size_t i = 0; i < chars; ++i) id.push_back(kAlphabet[randombytes_uniform(32)]);
  return id;
}

std::string Str(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) return {};
  return std::string(v->get_string());
}

Result<json::object> ParseObject(std::string_view text, std::string_view what) {
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec || !v.is_object()) return Error::BadInput("must be a JSON object", std::string(what));
  return std::move(v.get_object());
}

AuthorizationScan ScanAuthorizations(std::string_view record_json) {
  AuthorizationScan scan;
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(record_json.data(), record_json.size()), ec);
  if (ec || !v.is_object()) return scan;
  const json::value* events = v.get_object().if_contains("events");
  if (events == nullptr || !events->is_array()) return scan;
  for (const json::value& e : events->get_array()) {
    if (!e.is_object()) continue;
    const json::object& o = e.get_object();
    const std::string type = Str(o, "type");
    if (type == "authorization") {
      StreamAuthorization a;
      a.id = Str(o, "authorization");
      a.prescription_id = Str(o, "prescription");
      a.pharmacy_id = Str(o, "pharmacy");
      a.pharmacist_id = Str(o, "pharmacist");
      a.event_id = Str(o, "id");
      if (auto t = ParseOffsetTime(Str(o, "dispense_by")); t.ok()) a.dispense_by = t->instant;
      if (auto t = ParseOffsetTime(Str(o, "at")); t.ok()) a.at = t->instant;
      scan.authorizations.push_back(std::move(a));
    } else if (type == "authorization_reversal") {
      scan.reversed.insert(Str(o, "authorization"));
    } else if (type == "dispense") {
      const std::string auth = Str(o, "authorization");
      if (!auth.empty()) scan.dispensed.insert(auth);
      scan.dispensed_prescriptions.insert(Str(o, "prescription"));
    } else if (type == "entered_in_error") {
      scan.withdrawn.insert(Str(o, "target"));
    } else if (type == "prescription_cancel") {
      scan.cancels.emplace_back(Str(o, "id"), Str(o, "prescription"));
    }
  }
  return scan;
}

AuthorizationScan ScanAuthorizations(const Record& record) {
  AuthorizationScan scan;
  for (const Event& e : record.events) {
    switch (e.type) {
      case EventType::kAuthorization: {
        StreamAuthorization a;
        a.id = e.ref2;
        a.prescription_id = e.ref;
        a.event_id = e.id;
        a.dispense_by = e.dispense_by;
        a.at = e.at;
        scan.authorizations.push_back(std::move(a));
        break;
      }
      case EventType::kAuthorizationReversal:
        scan.reversed.insert(e.ref2);
        break;
      case EventType::kDispense:
        scan.dispensed_prescriptions.insert(e.ref);
        break;
      case EventType::kEnteredInError:
        scan.withdrawn.insert(e.ref);
        break;
      case EventType::kPrescriptionCancel:
        scan.cancels.emplace_back(e.id, e.ref);
        break;
      default:
        break;
    }
  }
  return scan;
}

bool AuthorizationScan::IsClosed(const StreamAuthorization& a) const {
  // A dispense names its authorization; one recorded without (an imported history) closes the
  // authorization of its prescription all the same.
  return reversed.contains(a.id) || dispensed.contains(a.id) || withdrawn.contains(a.event_id) ||
         dispensed_prescriptions.contains(a.prescription_id);
}

const StreamAuthorization* AuthorizationScan::Find(std::string_view id) const {
  for (const StreamAuthorization& a : authorizations) {
    if (a.id == id) return &a;
  }
  return nullptr;
}

const StreamAuthorization* AuthorizationScan::OpenFor(std::string_view prescription) const {
  for (const StreamAuthorization& a : authorizations) {
    if (a.prescription_id == prescription && !IsClosed(a)) return &a;
  }
  return nullptr;
}

int AuthorizationScan::ReversalsFor(std::string_view prescription) const {
  int n = 0;
  for (const StreamAuthorization& a : authorizations) {
    if (a.prescription_id == prescription &&
        (reversed.contains(a.id) || withdrawn.contains(a.event_id))) {
      ++n;
    }
  }
  return n;
}

bool AuthorizationScan::PrescriptionVoid(std::string_view prescription) const {
  if (withdrawn.contains(prescription)) return true;
  for (const auto& [event_id, named] : cancels) {
    if (named == prescription && (event_id.empty() || !withdrawn.contains(event_id))) return true;
  }
  return false;
}

bool PregnancyHalt(const Record& record, Instant now) {
  std::vector<std::string_view> withdrawn;
  for (const Event& e : record.events) {
    if (e.type == EventType::kEnteredInError && e.at <= now) withdrawn.push_back(e.ref);
  }
  const Event* latest = nullptr;
  for (const Event& e : record.events) {
    if (e.type != EventType::kPregnancyTest || e.result == TestResult::kInvalid) continue;
    if (!e.id.empty() && std::find(withdrawn.begin(), withdrawn.end(), e.id) != withdrawn.end()) {
      continue;
    }
    if (e.at > now) {
      if (e.result == TestResult::kPositive) return true;
      continue;
    }
    if (latest == nullptr || e.at >= latest->at) latest = &e;
  }
  return latest != nullptr && latest->result == TestResult::kPositive;
}

// "entries[0].birth_date" -> "birth_date" (index 0 maps to `first`), "entries[3].kg" ->
// "events[3].kg": errors name the caller's fields, not the store's.
Error RenameEntryField(Error e, std::string_view prefix, size_t offset) {
  constexpr std::string_view kEntries = "entries[";
  if (!e.field.starts_with(kEntries)) return e;
  const size_t close = e.field.find(']');
  if (close == std::string::npos) return e;
  size_t index = 0;
  for (size_t i = kEntries.size(); i < close; ++i) {
    if (e.field[i] < '0' || e.field[i] > '9') return e;
    index = index * 10 + static_cast<size_t>(e.field[i] - '0');
  }
  std::string rest = e.field.substr(close + 1);
  if (prefix.empty()) {
    if (!rest.empty() && rest.front() == '.') rest.erase(0, 1);
    e.field = rest;
  } else if (index >= offset) {
    e.field = std::string(prefix) + "[" + std::to_string(index - offset) + "]" + rest;
  }
  return e;
}

}  // namespace detail

std::string NewRandomId(std::string_view prefix, size_t chars) {
  return detail::RandomId(prefix, chars);
}

using detail::ParseObject;
using detail::RandomId;
using detail::Str;

namespace {

// The type of the event `id` in a record's JSON, or "" when the record has none.
std::string EventTypeIn(const json::object& record, std::string_view id) {
  const json::value* events = record.if_contains("events");
  if (events == nullptr || !events->is_array()) return {};
  for (const json::value& e : events->get_array()) {
    if (e.is_object() && Str(e.get_object(), "id") == id) return Str(e.get_object(), "type");
  }
  return {};
}

// What an entered_in_error may withdraw: not the pharmacy's records (an authorization is
// reversed, never withdrawn) nor another correction. A prescription is withdrawn only by
// whoever may cancel it.
Status CheckCorrectionTarget(const Principal& who, std::string_view target_type,
                             const std::string& field) {
  if (target_type == "authorization" || target_type == "authorization_reversal" ||
      target_type == "dispense" || target_type == "entered_in_error") {
    return Error::BadInput("a " + std::string(target_type) +
                               " event is not corrected this way (reverse an authorization "
                               "instead)",
                           field);
  }
  if (target_type == "prescription") {
    if (auto st = Require(who, Capability::kPrescribe); !st.ok()) {
      Error e = st.error();
      e.message = "a prescription is withdrawn only by whoever may cancel it: " + e.message;
      e.field = field;
      return e;
    }
  }
  return {};
}

}  // namespace

Service::Service(store::EventStore& events, ServiceStore& store, const Rulebook& rulebook,
                 ServiceOptions options, Clock clock)
    : events_(events),
      store_(store),
      rulebook_(rulebook),
      options_(std::move(options)),
      clock_(std::move(clock)),
      authenticator_(store),
      sign_in_limiter_(options_.sign_in) {}

// ---------------------------------------------------------------------------------------------
// Accounts

Status Service::CreateOrganisation(const Principal* who, const Organisation& org) {
  if (who != nullptr) {
    if (auto st = Require(*who, Capability::kManageAccounts); !st.ok()) return st;
  }
  if (org.id.empty()) return Error::BadInput("required", "id");
  Organisation o = org;
  o.created_at = Now();
  return store_.CreateOrganisation(o);
}

Result<IssuedToken> Service::CreateAccount(const Principal* who, Account account,
                                           const std::string& password,
                                           std::chrono::hours token_ttl) {
  if (who != nullptr) {
    if (auto st = Require(*who, Capability::kManageAccounts); !st.ok()) return st.error();
  }
  if (account.id.empty()) return Error::BadInput("required", "id");
  if (account.role == Role::kPatient && account.patient_id.empty()) {
    return Error::BadInput("a patient account names the patient whose record it is", "patient_id");
  }
  if (account.role != Role::kPatient && !account.patient_id.empty()) {
    return Error::BadInput("only a patient account names a patient", "patient_id");
  }
  auto org = store_.GetOrganisation(account.org_id);
  if (!org.ok()) return org.error();
  const bool clinic_role = account.role == Role::kPrescriber ||
                           account.role == Role::kClinicStaff || account.role == Role::kPatient;
  if (clinic_role && org->kind != OrgKind::kClinic) {
    return Error::BadInput(
        "a " + std::string(ToString(account.role)) + " account belongs to a clinic", "org_id");
  }
  if (account.role == Role::kPharmacist && org->kind != OrgKind::kPharmacy) {
    return Error::BadInput("a pharmacist account belongs to a pharmacy", "org_id");
  }
  if (account.role == Role::kAdmin && org->kind != OrgKind::kProgram) {
    return Error::BadInput("an admin account belongs to the program", "org_id");
  }
  if (!password.empty()) {
    auto hash = HashPassword(password);
    if (!hash.ok()) return hash.error();
    account.password_hash = std::move(*hash);
  }
  account.created_at = Now();
  account.disabled = false;
  if (auto st = store_.CreateAccount(account); !st.ok()) return st.error();
  return IssueToken(nullptr, account.id, "api", "created with the account", token_ttl);
}

Result<IssuedToken> Service::IssueToken(const Principal* who, const std::string& account_id,
                                        std::string kind, std::string label,
                                        std::chrono::hours ttl) {
  if (who != nullptr) {
    if (auto st = Require(*who, Capability::kManageAccounts); !st.ok()) return st.error();
  }
  auto account = store_.GetAccount(account_id);
  if (!account.ok()) return account.error();
  IssuedToken issued;
  issued.token = NewToken();
  Token& t = issued.record;
  t.hash = HashToken(issued.token);
  t.account_id = account_id;
  t.kind = std::move(kind);
  t.label = std::move(label);
  t.created_at = Now();
  t.expires_at = t.created_at + std::chrono::duration_cast<std::chrono::milliseconds>(ttl);
  auto id = store_.InsertToken(t);
  if (!id.ok()) return id.error();
  t.id = *id;
  return issued;
}

Status Service::SetAccountDisabled(const Principal* who, const std::string& account_id,
                                   bool disabled) {
  if (who != nullptr) {
    if (auto st = Require(*who, Capability::kManageAccounts); !st.ok()) return st;
  }
  Status st = store_.SetAccountDisabled(account_id, disabled);
  authenticator_.ForgetAccount(account_id);
  return st;
}

Result<IssuedToken> Service::SignIn(const std::string& account_id, const std::string& password,
                                    const std::string& source) {
  const Instant now = Now();
  if (auto st = sign_in_limiter_.Begin(account_id, source, now); !st.ok()) return st.error();
  // An unknown account costs the same Argon2id verification as a wrong password, so that
  // timing does not tell which account ids exist.
  static const std::string dummy = [] {
    auto h = HashPassword("not-a-password-of-anyone");
    return h.ok() ? *h : std::string();
  }();
  auto account = store_.GetAccount(account_id);
  const bool known = account.ok() && !account->password_hash.empty();
  const bool match = VerifyPassword(known ? account->password_hash : dummy, password);
  sign_in_limiter_.Finish(account_id, source, known && match, now);
  if (!known || !match || account->disabled) {
    return Error::Unauthenticated(
        "the account id or the password is wrong, or the account is "
        "disabled");
  }
  return IssueToken(nullptr, account_id, "session", "web sign-in", options_.session_ttl);
}

Status Service::SignOut(const Principal& who) {
  if (who.token_id == 0) return {};
  Status st = store_.RevokeToken(who.token_id, Now());
  authenticator_.ForgetToken(who.token_id);
  return st;
}

// ---------------------------------------------------------------------------------------------
// Access

Result<std::optional<CareLink>> Service::CareOf(const std::string& patient_id) {
  if (patient_id.empty() || patient_id.size() > store::kMaxPatientIdBytes) {
    return Error::BadInput("must be 1 to " + std::to_string(store::kMaxPatientIdBytes) + " bytes",
                           "patient_id");
  }
  {
    std::lock_guard lock(cache_mu_);
    if (auto it = care_cache_.find(patient_id); it != care_cache_.end()) {
      return std::optional<CareLink>(it->second);
    }
  }
  auto link = store_.GetCareLink(patient_id);
  if (!link.ok() || !link->has_value()) return link;
  std::lock_guard lock(cache_mu_);
  if (care_cache_.size() >= kMaxCachedLinks) care_cache_.clear();
  care_cache_.emplace(patient_id, **link);
  return link;
}

Status Service::RequireAccess(const Principal& who, Capability c, const std::string& patient_id) {
  if (auto st = Require(who, c); !st.ok()) return st;  // before any lookup
  auto care = CareOf(patient_id);
  if (!care.ok()) return care.error();
  return RequirePatient(who, c, patient_id, *care);
}

Result<Organisation> Service::PharmacyOf(const Principal& who) {
  std::optional<Organisation> org;
  {
    std::lock_guard lock(cache_mu_);
    if (auto it = org_cache_.find(who.account.org_id); it != org_cache_.end()) org = it->second;
  }
  if (!org) {
    auto read = store_.GetOrganisation(who.account.org_id);
    if (!read.ok()) return read.error();
    org = std::move(*read);
    std::lock_guard lock(cache_mu_);
    if (org_cache_.size() >= kMaxCachedLinks) org_cache_.clear();
    org_cache_.emplace(org->id, *org);
  }
  if (org->kind != OrgKind::kPharmacy) {
    return Error::Forbidden("the account does not belong to a pharmacy");
  }
  return *org;
}

// ---------------------------------------------------------------------------------------------
// Patients

Result<store::AppendResult> Service::Enroll(const Principal& who, EnrollRequest request,
                                            std::string* patient_id_out) {
  if (auto st = Require(who, Capability::kEnrollPatient); !st.ok()) return st.error();
  if (request.patient_id.empty()) request.patient_id = RandomId("p-", 16);
  for (unsigned char ch : request.patient_id) {
    if (ch < 0x20 || ch == 0x7F) {
      return Error::BadInput("must not contain control characters", "patient_id");
    }
  }
  const Instant now = Now();
  json::object patient;
  patient["type"] = "patient";
  patient["id"] = request.patient_id;
  patient["birth_date"] = request.birth_date;
  patient["jurisdiction"] = request.jurisdiction;
  patient["category"] = request.category;
  if (!request.time_zone.empty()) patient["time_zone"] = request.time_zone;
  json::object enrollment;
  enrollment["type"] = "enrollment";
  enrollment["at"] = FormatUtc(now);
  if (!request.program.empty()) enrollment["program"] = request.program;

  store::AppendRequest append;
  append.patient_id = request.patient_id;
  append.expected_version = 0;
  append.actor = who.actor();
  append.entries = {json::serialize(patient), json::serialize(enrollment)};
  if (!request.idempotency_key.empty()) {
    append.idempotency_key = who.account.id + ":" + request.idempotency_key;
  }
  // Checked before the care link is made, so that bad input leaves nothing behind, and before
  // the id is looked up, so that a bad request says nothing of whether the id is taken.
  if (auto checked = store::CheckAppend(append, options_.parse); !checked.ok()) {
    return detail::RenameEntryField(checked.error(), "", 0);
  }
  auto care = CareOf(request.patient_id);
  if (!care.ok()) return care.error();
  if (care->has_value() && (*care)->clinic_id != who.account.org_id) {
    return Error::Conflict("the patient id is taken", "patient_id");
  }
  if (!care->has_value()) {
    // A stream with no clinic (imported, not linked yet) is not taken over by enrolling its id:
    // the link below would give its record to whoever asked.
    auto versions = events_.ReadVersions({request.patient_id});
    if (!versions.ok()) return versions.error();
    if (!versions->empty() && versions->front().version > 0) {
      return Error::Conflict("the patient id is taken", "patient_id");
    }
  }
  // The link first: a crash after it leaves a link to no stream (ignored everywhere, and
  // completed by a retry), never a stream no one may see.
  CareLink link;
  link.patient_id = request.patient_id;
  link.clinic_id = who.account.org_id;
  link.prescriber_id = who.account.id;
  link.since = now;
  if (auto st = store_.LinkPatient(link); !st.ok()) return st.error();
  auto result = events_.Append(append);
  if (!result.ok()) {
    if (result.error().kind == ErrorKind::kConflict) {
      return Error::Conflict("the patient is already enrolled", "patient_id");
    }
    return detail::RenameEntryField(result.error(), "", 0);
  }
  if (patient_id_out != nullptr) *patient_id_out = request.patient_id;
  Appended();
  return result;
}

Result<PatientView> Service::ReadPatient(const Principal& who, const std::string& patient_id,
                                         std::optional<Instant> at,
                                         std::optional<std::string> prescription) {
  if (auto st = RequireAccess(who, Capability::kReadRecord, patient_id); !st.ok()) {
    return st.error();
  }
  auto state = events_.ReadState(patient_id);
  if (!state.ok()) return state.error();
  if (state->version == 0) return Error::NotFound("no such patient", "patient_id");
  PatientView view;
  view.patient_id = patient_id;
  view.version = state->version;
  view.erased = state->erased;
  if (state->erased) return view;
  view.record_json = std::move(state->record_json);
  auto record = ParseRecord(view.record_json, options_.parse);
  if (!record.ok())
    return Error::Internal("the stored record does not parse: " + record.error().ToString());
  EvaluateOptions eo;
  eo.at = at.value_or(Now());
  eo.prescription = std::move(prescription);
  auto evaluation = Evaluate(rulebook_, *record, eo);
  if (!evaluation.ok()) {
    Error e = evaluation.error();
    if (e.kind == ErrorKind::kNotFound && eo.prescription.has_value()) e.field = "prescription";
    return e;
  }
  view.evaluation_json = EvaluationToJson(*evaluation, *record, false);
  return view;
}

Result<store::Stream> Service::ReadTimeline(const Principal& who, const std::string& patient_id) {
  if (auto st = RequireAccess(who, Capability::kReadRecord, patient_id); !st.ok()) {
    return st.error();
  }
  auto stream = events_.ReadStream(patient_id);
  if (!stream.ok()) return stream.error();
  if (stream->version == 0) return Error::NotFound("no such patient", "patient_id");
  return stream;
}

Result<AppendOutcome> Service::AppendEvents(const Principal& who,
                                            const AppendEventsRequest& request) {
  if (request.events.empty()) return Error::BadInput("at least one event is needed", "events");
  if (request.events.size() > store::kMaxEntriesPerAppend - 1) {
    return Error::BadInput(
        "at most " + std::to_string(store::kMaxEntriesPerAppend - 1) + " events at once", "events");
  }
  // The capability each event needs, from its type, before anything is read.
  std::vector<Capability> needed;
  std::vector<std::pair<size_t, std::string>> corrections;  // event index, target id
  bool self_harm = false;
  std::vector<std::string> urgent;
  for (size_t i = 0; i < request.events.size(); ++i) {
    const std::string field = "events[" + std::to_string(i) + "]";
    auto object = ParseObject(request.events[i], field);
    if (!object.ok()) return object.error();
    const std::string type = Str(*object, "type");
    auto capability = CapabilityForEvent(type);
    if (!capability.ok()) {
      Error e = capability.error();
      e.field = field + "." + e.field;
      return e;
    }
    needed.push_back(*capability);
    if (type == "entered_in_error") corrections.emplace_back(i, Str(*object, "target"));
    if (type == "phq9") {
      const json::value* items = object->if_contains("items");
      const size_t item = static_cast<size_t>(rulebook_.knowledge.mood.self_harm_item);
      if (items != nullptr && items->is_array() && items->get_array().size() >= item) {
        const json::value& v = items->get_array()[item - 1];
        if (v.is_int64() ? v.get_int64() > 0 : (v.is_uint64() && v.get_uint64() > 0)) {
          self_harm = true;
        }
      }
    } else if (type == "adverse_event") {
      const std::string term = Str(*object, "term");
      const json::value* serious = object->if_contains("serious");
      const SeriousEffect* effect = rulebook_.knowledge.safety.MatchSeriousEffect(term);
      if (effect != nullptr) {
        urgent.push_back(effect->title);
      } else if (serious != nullptr && serious->is_bool() && serious->get_bool()) {
        urgent.push_back(term);
      }
    }
  }
  for (Capability c : needed) {
    if (auto st = RequireAccess(who, c, request.patient_id); !st.ok()) return st.error();
  }
  if (!corrections.empty()) {
    // What each correction withdraws, from the stored record (a target not in it, or made in
    // this same append, withdraws nothing the policy guards).
    auto state = events_.ReadState(request.patient_id);
    if (!state.ok()) return state.error();
    if (state->version > 0 && !state->erased) {
      auto record = ParseObject(state->record_json, "record");
      if (!record.ok()) return Error::Internal("the stored record does not parse");
      for (const auto& [index, target] : corrections) {
        const std::string field = "events[" + std::to_string(index) + "].target";
        if (auto st = CheckCorrectionTarget(who, EventTypeIn(*record, target), field); !st.ok()) {
          return st.error();
        }
      }
    }
  }
  store::AppendRequest append;
  append.patient_id = request.patient_id;
  append.expected_version = request.if_match_version;
  append.actor = who.actor();
  append.entries = request.events;
  if (!request.idempotency_key.empty()) {
    append.idempotency_key = who.account.id + ":" + request.idempotency_key;
  }
  if (!request.if_match_version.has_value()) {
    // A stream must exist: events are never the first entry (enrollment makes the patient).
    auto state = events_.ReadState(request.patient_id);
    if (!state.ok()) return state.error();
    if (state->version == 0) return Error::NotFound("no such patient", "patient_id");
  } else if (*request.if_match_version == 0) {
    return Error::PreconditionFailed("the patient's stream exists at a version above 0",
                                     "If-Match");
  }
  auto result = events_.Append(append);
  if (!result.ok()) {
    Error e = result.error();
    if (e.kind == ErrorKind::kConflict && request.if_match_version.has_value()) {
      e.kind = ErrorKind::kPreconditionFailed;
      e.field = "If-Match";
    }
    return detail::RenameEntryField(std::move(e), "events", 0);
  }
  Appended();
  AppendOutcome outcome;
  outcome.result = std::move(*result);
  outcome.contact_prescriber_now = std::move(urgent);
  if (self_harm) {
    auto state = events_.ReadState(request.patient_id);
    if (state.ok() && !state->record_json.empty()) {
      auto record = ParseRecord(state->record_json, options_.parse);
      if (record.ok()) {
        outcome.crisis = rulebook_.knowledge.safety.FindCrisis(record->patient.jurisdiction);
      }
    }
    if (outcome.crisis == nullptr && !rulebook_.knowledge.safety.crisis.empty()) {
      outcome.crisis = &rulebook_.knowledge.safety.crisis.front();
    }
  }
  return outcome;
}

Result<AppendOutcome> Service::Correct(const Principal& who, const std::string& patient_id,
                                       const std::string& target_event_id,
                                       std::string idempotency_key) {
  if (auto st = RequireAccess(who, Capability::kCorrect, patient_id); !st.ok()) return st.error();
  auto state = events_.ReadState(patient_id);
  if (!state.ok()) return state.error();
  if (state->version == 0) return Error::NotFound("no such patient", "patient_id");
  if (state->erased) return Error::BadInput("the patient's record was erased", "patient_id");
  auto record = ParseObject(state->record_json, "record");
  if (!record.ok()) return Error::Internal("the stored record does not parse");
  const std::string target_type = EventTypeIn(*record, target_event_id);
  if (target_type.empty()) {
    return Error::NotFound("the patient has no event with this id", "event_id");
  }
  if (auto st = CheckCorrectionTarget(who, target_type, "event_id"); !st.ok()) return st.error();
  json::object correction;
  correction["type"] = "entered_in_error";
  correction["at"] = FormatUtc(Now());
  correction["target"] = target_event_id;
  AppendEventsRequest request;
  request.patient_id = patient_id;
  request.events = {json::serialize(correction)};
  request.idempotency_key = std::move(idempotency_key);
  return AppendEvents(who, request);
}

// ---------------------------------------------------------------------------------------------
// Pharmacy

Result<AuthorizationAnswer> Service::Authorize(const Principal& who,
                                               const AuthorizationRequest& request) {
  if (auto st = RequireAccess(who, Capability::kAuthorize, request.patient_id); !st.ok()) {
    return st.error();
  }
  if (request.prescription_id.empty()) return Error::BadInput("required", "prescription_id");
  auto pharmacy = PharmacyOf(who);
  if (!pharmacy.ok()) return pharmacy.error();

  for (int attempt = 0; attempt < options_.max_authorization_attempts; ++attempt) {
    const Instant now = Now();
    auto state = events_.ReadState(request.patient_id);
    if (!state.ok()) return state.error();
    if (state->version == 0) return Error::NotFound("no such patient", "patient_id");
    if (state->erased) return Error::BadInput("the patient's record was erased", "patient_id");
    auto record = ParseRecord(state->record_json, options_.parse);
    if (!record.ok()) {
      return Error::Internal("the stored record does not parse: " + record.error().ToString());
    }
    detail::AuthorizationScan scan = detail::ScanAuthorizations(*record);
    if (scan.OpenFor(request.prescription_id) != nullptr) {
      // Which pharmacy holds it is in the event's JSON only (rare: a repeated request).
      scan = detail::ScanAuthorizations(state->record_json);
    }
    AuthorizationAnswer answer;
    answer.patient_id = request.patient_id;
    answer.prescription_id = request.prescription_id;
    answer.decided_at = now;

    if (const detail::StreamAuthorization* open = scan.OpenFor(request.prescription_id)) {
      if (open->dispense_by <= now) {
        // Expired but not swept yet: reverse it first, then decide afresh.
        if (auto st = ReverseInStream(request.patient_id, open->id, "expired", nullptr);
            !st.ok() && st.error().kind != ErrorKind::kConflict) {
          return st.error();
        }
        continue;
      }
      if (scan.PrescriptionVoid(request.prescription_id) || detail::PregnancyHalt(*record, now)) {
        // Cancelled, or halted, and the background reversal has not come yet: it comes now,
        // and the decision is made afresh (a denial).
        const char* why = scan.PrescriptionVoid(request.prescription_id)
                              ? "the prescription was cancelled"
                              : "halted: a positive pregnancy test";
        if (auto st = ReverseInStream(request.patient_id, open->id, why, nullptr);
            !st.ok() && st.error().kind != ErrorKind::kConflict) {
          return st.error();
        }
        continue;
      }
      if (open->pharmacy_id != pharmacy->id) {
        // An authorization recorded without a pharmacy (an imported history) is still another
        // pharmacy's: it holds the prescription until it is reversed or ends.
        const std::string holder = open->pharmacy_id.empty()
                                       ? "another pharmacy (not named in the record)"
                                       : "another pharmacy (" + open->pharmacy_id + ")";
        return Error::Conflict("the prescription is already authorized for " + holder + " until " +
                                   FormatUtc(open->dispense_by),
                               "prescription_id");
      }
      answer.authorized = true;
      answer.existing = true;
      answer.authorization_id = open->id;
      answer.dispense_by = open->dispense_by;
      return answer;
    }

    EvaluateOptions eo;
    eo.at = now;
    eo.prescription = request.prescription_id;
    auto evaluation = Evaluate(rulebook_, *record, eo);
    if (!evaluation.ok()) {
      Error e = evaluation.error();
      if (e.kind == ErrorKind::kNotFound) e.field = "prescription_id";
      return e;
    }
    if (evaluation->program != nullptr) answer.program_id = evaluation->program->id;
    const Authorization& decision = evaluation->authorization;
    if (decision.authorized && detail::PregnancyHalt(*record, now)) {
      // The service's halt: whatever the category says, no authorization while the latest
      // pregnancy test is positive (a positive test in a patient recorded as unable to get
      // pregnant means the category is wrong, not that the test does not matter).
      answer.authorized = false;
      answer.reasons.push_back(
          Reason{"PREGNANCY_TEST_POSITIVE",
                 "The latest pregnancy test is positive: every authorization for the patient is "
                 "halted until the prescriber records otherwise."});
      return answer;
    }
    if (!decision.authorized || !decision.dispense_by.has_value()) {
      answer.authorized = false;
      answer.reasons = decision.reasons;
      return answer;
    }
    const std::string id = RandomId("A-", 12);
    json::object entry;
    entry["type"] = "authorization";
    entry["at"] = FormatUtc(now);
    entry["prescription"] = request.prescription_id;
    entry["authorization"] = id;
    entry["dispense_by"] = FormatUtc(*decision.dispense_by);
    entry["pharmacy"] = pharmacy->id;
    entry["pharmacist"] = who.account.id;
    store::AppendRequest append;
    append.patient_id = request.patient_id;
    append.expected_version = state->version;
    append.actor = who.actor();
    append.entries = {json::serialize(entry)};
    append.idempotency_key = "authorization:" + request.prescription_id + ":" +
                             std::to_string(scan.ReversalsFor(request.prescription_id));
    auto result = events_.Append(append);
    if (!result.ok()) {
      if (result.error().kind == ErrorKind::kConflict) continue;  // the stream moved: again
      return result.error();
    }
    if (result->replayed) continue;  // another request won: answer with its authorization
    Appended();
    answer.authorized = true;
    answer.authorization_id = id;
    answer.dispense_by = decision.dispense_by;
    return answer;
  }
  return Error::Unavailable(
      "the patient's record kept changing while the authorization was decided; ask again");
}

}  // namespace isoguard::service
