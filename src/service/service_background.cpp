// What the service does without being asked: the projector that keeps the read models and
// reacts to safety events, the sweeper that reverses expired authorizations and reminds, and
// the views that evaluate many patients (worklists) or render a calendar.
#include <sodium.h>

#include <algorithm>
#include <boost/json.hpp>
#include <map>
#include <memory>
#include <optional>

#include "core/text.h"
#include "domain/record_parser.h"
#include "service/service.h"
#include "service/service_internal.h"

namespace isoguard::service {

namespace json = boost::json;
using detail::ParseObject;
using detail::Str;

namespace {

constexpr std::string_view kProjectorCursor = "service";
constexpr std::chrono::hours kAuthorizationReminderLead{24};

// A record and its evaluation: the evaluation points into the record.
struct Evaluated {
  Record record;
  Evaluation evaluation;
};

Result<std::unique_ptr<Evaluated>> EvaluateState(const Rulebook& rulebook,
                                                 const store::PatientState& state,
                                                 const ParseOptions& parse, Instant at) {
  auto out = std::make_unique<Evaluated>();
  auto record = ParseRecord(state.record_json, parse);
  if (!record.ok()) {
    return Error::Internal("the stored record of " + state.patient_id +
                           " does not parse: " + record.error().ToString());
  }
  out->record = std::move(*record);
  EvaluateOptions eo;
  eo.at = at;
  auto evaluation = Evaluate(rulebook, out->record, eo);
  if (!evaluation.ok()) return evaluation.error();
  out->evaluation = std::move(*evaluation);
  return out;
}

Instant EndOfDayUtc(LocalDate day) {
  return Instant(std::chrono::milliseconds(int64_t{day.days_since_epoch() + 1} * 86'400'000 - 1));
}

int SeverityRank(Severity s) {
  switch (s) {
    case Severity::kCritical:
      return 3;
    case Severity::kWarning:
      return 2;
    case Severity::kInfo:
      return 1;
  }
  return 0;
}

// What a due code asks of whom, for calendars and reminders.
std::string DueSummary(std::string_view code) {
  if (code == "SCREENING_TEST") return "Screening pregnancy test";
  if (code == "CONFIRMATION_TEST") return "Confirmation pregnancy test";
  if (code == "PREGNANCY_TEST") return "Monthly pregnancy test";
  if (code == "COMPREHENSION") return "Monthly comprehension questions";
  if (code == "COUNSELING_VISIT") return "Monthly visit and counselling";
  if (code == "LABS_BASELINE") return "Baseline blood tests (lipids and liver)";
  if (code == "LABS_FOLLOW_UP") return "Follow-up blood tests (lipids and liver)";
  if (code == "PHQ9") return "Mood questionnaire (PHQ-9)";
  if (code == "END_OF_TREATMENT_TEST") return "End-of-treatment pregnancy test";
  if (code == "POST_TREATMENT_TEST") return "Pregnancy test one month after the last dose";
  if (code == "CONTRACEPTION_UNTIL") return "Keep using contraception until today";
  if (code == "NO_BLOOD_DONATION_UNTIL") return "Do not donate blood until today";
  if (code == "RISK_ACKNOWLEDGEMENT") return "Sign the acknowledgement-of-risk form";
  return std::string(code);
}

// RFC 5545 text: backslash, semicolon and comma escaped; lines folded at 75 octets.
std::string IcsText(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == ';' || c == ',') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '\r') continue;  // a line ends only where the calendar ends it
    out.push_back(c);
  }
  return out;
}

void IcsLine(std::string& out, std::string line) {
  size_t width = 75;
  while (line.size() > width) {
    // Never split a UTF-8 sequence: back off to a character boundary.
    size_t cut = width;
    while (cut > 1 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
    out.append(line, 0, cut);
    out += "\r\n ";
    line.erase(0, cut);
    width = 74;  // the leading space of a continuation line counts
  }
  out += line;
  out += "\r\n";
}

std::string IcsDate(LocalDate d) {
  std::string s = d.ToString();  // YYYY-MM-DD
  s.erase(std::remove(s.begin(), s.end(), '-'), s.end());
  return s;
}

std::string IcsStamp(Instant t) {
  std::string s = FormatUtc(t);  // YYYY-MM-DDTHH:MM:SS(.mmm)Z
  std::string out;
  for (char c : s) {
    if (c == '.') break;
    if (c != '-' && c != ':') out.push_back(c);
  }
  if (out.empty() || out.back() != 'Z') out.push_back('Z');
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Notifications

Status Service::Notify(const std::string& recipient, const std::string& patient_id,
                       std::string kind, std::string severity, std::string message,
                       std::string dedupe_key) {
  Notification n;
  n.recipient_id = recipient;
  n.patient_id = patient_id;
  n.kind = std::move(kind);
  n.severity = std::move(severity);
  n.message = std::move(message);
  n.dedupe_key = std::move(dedupe_key);
  n.created_at = Now();
  auto inserted = store_.InsertNotification(n);
  if (!inserted.ok()) return inserted.error();
  return {};
}

Status Service::NotifyCareTeam(const std::string& patient_id, std::string kind,
                               std::string severity, std::string message,
                               const std::string& dedupe_key) {
  auto care = store_.GetCareLink(patient_id);
  if (!care.ok()) return care.error();
  if (!care->has_value()) return {};  // no clinic: no one to tell (imported, never linked)
  std::vector<std::string> recipients;
  if (!(*care)->prescriber_id.empty()) recipients.push_back((*care)->prescriber_id);
  // Every prescriber of the clinic is told too: the enrolling one may be away.
  auto accounts = store_.ListAccounts((*care)->clinic_id);
  if (!accounts.ok()) return accounts.error();
  for (const Account& a : *accounts) {
    if (a.role == Role::kPrescriber && !a.disabled &&
        std::find(recipients.begin(), recipients.end(), a.id) == recipients.end()) {
      recipients.push_back(a.id);
    }
  }
  for (const std::string& r : recipients) {
    if (auto st = Notify(r, patient_id, kind, severity, message, dedupe_key + ":" + r); !st.ok()) {
      return st;
    }
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// The projector

// The authorizations a projection pass has changed, written with its cursor in one
// transaction at the end of each page.
struct Service::ProjectionBatch {
  std::map<std::string, AuthorizationRecord> changed;

  void Put(AuthorizationRecord r) {
    std::string id = r.id;
    changed[id] = std::move(r);
  }
  std::vector<AuthorizationRecord> Records() const {
    std::vector<AuthorizationRecord> out;
    out.reserve(changed.size());
    for (const auto& [id, r] : changed) out.push_back(r);
    return out;
  }
};

Result<std::optional<AuthorizationRecord>> Service::ProjectedAuthorization(
    const std::string& id, const ProjectionBatch& batch) {
  if (auto it = batch.changed.find(id); it != batch.changed.end()) {
    return std::optional<AuthorizationRecord>(it->second);
  }
  return store_.GetAuthorization(id);
}

Result<std::vector<AuthorizationRecord>> Service::ProjectedOpenAuthorizations(
    const std::string& patient, const ProjectionBatch& batch) {
  auto stored = store_.ListPatientAuthorizations(patient);
  if (!stored.ok()) return stored.error();
  std::map<std::string, AuthorizationRecord> all;
  for (AuthorizationRecord& r : *stored) {
    std::string id = r.id;
    all[id] = std::move(r);
  }
  for (const auto& [id, r] : batch.changed) {
    if (r.patient_id == patient) all[id] = r;
  }
  std::vector<AuthorizationRecord> open;
  for (auto& [id, r] : all) {
    if (r.status == AuthorizationStatus::kOpen) open.push_back(std::move(r));
  }
  return open;
}

Status Service::ReactToEntry(const store::StoredEntry& entry, ProjectionBatch& batch) {
  if (entry.erased || entry.json.empty()) return {};
  const std::string& type = entry.type;
  if (type != "authorization" && type != "authorization_reversal" && type != "dispense" &&
      type != "pregnancy_test" && type != "phq9" && type != "adverse_event" &&
      type != "prescription_cancel" && type != "entered_in_error") {
    return {};
  }
  auto parsed = ParseObject(entry.json, "entry");
  if (!parsed.ok()) return {};  // the store validated it; nothing here to react to
  const json::object& o = *parsed;
  const std::string& patient = entry.patient_id;

  if (type == "authorization") {
    AuthorizationRecord r;
    r.id = Str(o, "authorization");
    r.patient_id = patient;
    r.prescription_id = Str(o, "prescription");
    r.pharmacy_id = Str(o, "pharmacy");
    r.pharmacist_id = Str(o, "pharmacist");
    r.created_at = entry.recorded_at;
    if (auto t = ParseOffsetTime(Str(o, "dispense_by")); t.ok()) r.dispense_by = t->instant;
    if (r.id.empty()) return {};
    auto existing = ProjectedAuthorization(r.id, batch);
    if (!existing.ok()) return existing.error();
    if (!existing->has_value()) batch.Put(std::move(r));  // a closed one is never reopened
    return {};
  }
  if (type == "dispense" && Str(o, "authorization").empty()) {
    // A dispense recorded without its authorization (an imported history) uses the open one of
    // its prescription.
    auto open = ProjectedOpenAuthorizations(patient, batch);
    if (!open.ok()) return open.error();
    for (AuthorizationRecord& r : *open) {
      if (r.prescription_id != Str(o, "prescription")) continue;
      r.status = AuthorizationStatus::kDispensed;
      r.closed_at = entry.recorded_at;
      r.closed_by = entry.actor.id;
      batch.Put(std::move(r));
    }
    return {};
  }
  if (type == "authorization_reversal" || type == "dispense") {
    const std::string id = Str(o, "authorization");
    if (id.empty()) return {};
    auto existing = ProjectedAuthorization(id, batch);
    if (!existing.ok()) return existing.error();
    if (!existing->has_value() || (*existing)->status != AuthorizationStatus::kOpen) return {};
    AuthorizationRecord r = std::move(**existing);
    r.status =
        type == "dispense" ? AuthorizationStatus::kDispensed : AuthorizationStatus::kReversed;
    r.closed_at = entry.recorded_at;
    r.closed_by = entry.actor.id;
    if (type == "dispense") r.lot_id = Str(o, "lot");
    batch.Put(std::move(r));
    return {};
  }
  if (type == "prescription_cancel" || type == "entered_in_error") {
    // A cancelled prescription, or one entered in error, is never dispensed: its open
    // authorization is reversed. (A correction naming anything else names no prescription of
    // an open authorization, and does nothing here.)
    const bool cancel = type == "prescription_cancel";
    const std::string prescription = Str(o, cancel ? "prescription" : "target");
    auto open = ProjectedOpenAuthorizations(patient, batch);
    if (!open.ok()) return open.error();
    for (const AuthorizationRecord& a : *open) {
      if (a.prescription_id != prescription) continue;
      auto st = ReverseInStream(
          patient, a.id,
          cancel ? "the prescription was cancelled" : "the prescription was entered in error",
          nullptr);
      if (!st.ok() && st.error().kind != ErrorKind::kConflict) return st;
    }
    return {};
  }
  if (type == "pregnancy_test") {
    if (Str(o, "result") != "positive") return {};
    // Halt: every open authorization of the patient is reversed.
    auto open = ProjectedOpenAuthorizations(patient, batch);
    if (!open.ok()) return open.error();
    for (const AuthorizationRecord& a : *open) {
      auto st = ReverseInStream(patient, a.id, "halted: a positive pregnancy test", nullptr);
      if (!st.ok() && st.error().kind != ErrorKind::kConflict) return st;
    }
    if (auto st = NotifyCareTeam(patient, "pregnancy", "critical",
                                 "A positive pregnancy test was recorded for patient " + patient +
                                     ". Every authorization is halted. Stop isotretinoin and "
                                     "refer the patient to a physician experienced in "
                                     "reproductive toxicity.",
                                 "pregnancy:" + entry.event_id);
        !st.ok()) {
      return st;
    }
    PregnancyReport report;
    report.patient_id = patient;
    report.event_id = entry.event_id;
    report.reported_at = Now();
    auto care = store_.GetCareLink(patient);
    if (care.ok() && care->has_value()) report.clinic_id = (*care)->clinic_id;
    auto state = events_.ReadState(patient);
    if (state.ok() && state->version > 0 && !state->erased) {
      auto evaluated = EvaluateState(rulebook_, *state, options_.parse, entry.recorded_at);
      if (evaluated.ok() && (*evaluated)->evaluation.program != nullptr) {
        report.program_id = (*evaluated)->evaluation.program->id;
      }
    }
    auto filed = store_.FilePregnancyReport(report);
    if (!filed.ok()) return filed.error();
    return {};
  }
  if (type == "phq9") {
    const json::value* items = o.if_contains("items");
    const size_t item = static_cast<size_t>(rulebook_.knowledge.mood.self_harm_item);
    if (items == nullptr || !items->is_array() || items->get_array().size() < item) return {};
    const json::value& v = items->get_array()[item - 1];
    const bool self_harm = v.is_int64() ? v.get_int64() > 0 : v.is_uint64() && v.get_uint64() > 0;
    if (!self_harm) return {};
    return NotifyCareTeam(patient, "suicidal_ideation", "critical",
                          "Patient " + patient +
                              " answered PHQ-9 item 9 (thoughts of self-harm) above 0. Follow "
                              "up today; the patient was shown crisis resources.",
                          "phq9:" + entry.event_id);
  }
  // adverse_event
  const std::string term = Str(o, "term");
  const json::value* serious = o.if_contains("serious");
  const SeriousEffect* effect = rulebook_.knowledge.safety.MatchSeriousEffect(term);
  const bool reported_serious = serious != nullptr && serious->is_bool() && serious->get_bool();
  if (effect == nullptr && !reported_serious) return {};
  return NotifyCareTeam(
      patient, "serious_adverse_event", effect != nullptr ? "critical" : "warning",
      "Patient " + patient + " reported '" + term + "'" +
          (effect != nullptr ? " (" + effect->title + ")" : "") + ": contact the patient now.",
      "adverse_event:" + entry.event_id);
}

Result<int64_t> Service::Project(size_t max_entries) {
  std::lock_guard lock(project_mu_);
  const std::string cursor_name(kProjectorCursor);
  auto cursor = store_.GetCursor(cursor_name);
  if (!cursor.ok()) return cursor.error();
  int64_t position = *cursor;
  int64_t applied = 0;
  while (static_cast<size_t>(applied) < max_entries) {
    const size_t want = std::min<size_t>(max_entries - static_cast<size_t>(applied), 1000);
    auto entries = events_.ReadAll(position, want);
    if (!entries.ok()) return entries.error();
    if (entries->empty()) break;
    ProjectionBatch batch;
    std::optional<Error> failed;
    for (const store::StoredEntry& e : *entries) {
      if (auto st = ReactToEntry(e, batch); !st.ok()) {
        failed = st.error();  // the cursor stays before the entry: the next pass tries again
        break;
      }
      position = e.position;
      ++applied;
    }
    if (auto st = store_.ApplyAuthorizations(batch.Records(), cursor_name, position); !st.ok()) {
      return st.error();
    }
    if (failed) return *failed;
    if (entries->size() < want) break;
  }
  return applied;
}

Result<int64_t> Service::Sweep() {
  const Instant now = Now();
  int64_t reversed = 0;
  auto expired = store_.ListExpiredAuthorizations(now, kMaxListLimit);
  if (!expired.ok()) return expired.error();
  for (const AuthorizationRecord& a : *expired) {
    auto st = ReverseInStream(a.patient_id, a.id, "expired: not dispensed by its dispense_by time",
                              nullptr);
    if (st.ok()) {
      ++reversed;
    } else if (st.error().kind != ErrorKind::kConflict) {
      return st.error();
    }
  }
  // A reminder to the pharmacist whose authorization is about to lapse.
  auto soon = store_.ListExpiredAuthorizations(now + kAuthorizationReminderLead, kMaxListLimit);
  if (!soon.ok()) return soon.error();
  for (const AuthorizationRecord& a : *soon) {
    if (a.dispense_by <= now || a.pharmacist_id.empty()) continue;
    (void)Notify(a.pharmacist_id, a.patient_id, "reminder", "info",
                 "Authorization " + a.id + " for prescription " + a.prescription_id +
                     " lapses at " + FormatUtc(a.dispense_by) + " unless dispensed.",
                 "reminder:authorization:" + a.id);
  }
  if (auto projected = Project(); !projected.ok()) return projected.error();
  return reversed;
}

Result<int64_t> Service::Remind(size_t max_patients) {
  std::lock_guard lock(remind_mu_);
  auto orgs = store_.ListOrganisations();
  if (!orgs.ok()) return orgs.error();
  std::vector<Organisation> clinics;
  for (Organisation& o : *orgs) {
    if (o.kind == OrgKind::kClinic) clinics.push_back(std::move(o));
  }
  if (clinics.empty()) return int64_t{0};
  const Instant now = Now();
  const LocalDate today(
      static_cast<int32_t>(std::chrono::floor<std::chrono::days>(now).time_since_epoch().count()));
  int64_t made = 0;
  size_t walked = 0;
  size_t clinics_seen = 0;
  while (walked < max_patients && clinics_seen <= clinics.size()) {
    if (remind_org_ >= clinics.size()) remind_org_ = 0;
    const Organisation& clinic = clinics[remind_org_];
    auto page = store_.ListClinicPatients(clinic.id, remind_after_,
                                          std::min(max_patients - walked, kMaxListLimit));
    if (!page.ok()) return page.error();
    if (page->empty()) {  // this clinic is done: the next one
      ++remind_org_;
      remind_after_.clear();
      ++clinics_seen;
      continue;
    }
    auto accounts = store_.ListAccounts(clinic.id);
    if (!accounts.ok()) return accounts.error();
    for (const CareLink& link : *page) {
      ++walked;
      remind_after_ = link.patient_id;
      auto state = events_.ReadState(link.patient_id);
      if (!state.ok()) return state.error();
      if (state->version == 0 || state->erased) continue;
      auto evaluated = EvaluateState(rulebook_, *state, options_.parse, now);
      if (!evaluated.ok()) continue;  // an unparsable record is reported by the worklist
      std::vector<std::string> recipients;
      if (!link.prescriber_id.empty()) recipients.push_back(link.prescriber_id);
      for (const Account& a : *accounts) {
        if (a.role == Role::kPatient && a.patient_id == link.patient_id && !a.disabled) {
          recipients.push_back(a.id);
        }
      }
      for (const DueItem& d : (*evaluated)->evaluation.due) {
        const int32_t days_left = d.due_by - today;
        if (days_left < 0 || days_left > kReminderLeadDays) continue;
        if (d.code.ends_with("_UNTIL")) continue;  // advice with an end date, not a task
        const std::string message =
            DueSummary(d.code) + " for patient " + link.patient_id + " is due by " +
            d.due_by.ToString() +
            (d.not_before ? " (not before " + d.not_before->ToString() + ")" : std::string()) + ".";
        for (const std::string& r : recipients) {
          auto st = Notify(r, link.patient_id, "reminder", "info", message,
                           "reminder:" + link.patient_id + ":" + std::string(d.code) + ":" +
                               d.due_by.ToString() + ":" + r);
          if (!st.ok()) return st.error();
          ++made;
        }
      }
    }
  }
  return made;
}

// ---------------------------------------------------------------------------------------------
// Webhooks

Result<Webhook> Service::AddWebhook(const Principal& who, const std::string& url,
                                    std::string secret) {
  if (auto st = Require(who, Capability::kWebhooks); !st.ok()) return st.error();
  if (url.size() > 2048) return Error::BadInput("must be at most 2,048 bytes", "url");
  if (secret.empty()) {
    unsigned char bytes[32];
    randombytes_buf(bytes, sizeof bytes);
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, bytes, sizeof bytes);
    secret = hex;
  }
  if (secret.size() < 16 || secret.size() > 256) {
    return Error::BadInput("must be 16 to 256 characters", "secret");
  }
  auto existing = store_.ListWebhooks(who.account.org_id);
  if (!existing.ok()) return existing.error();
  if (existing->size() >= kMaxWebhooksPerOrg) {
    return Error::Conflict(
        "an organisation subscribes at most " + std::to_string(kMaxWebhooksPerOrg) + " webhooks",
        "url");
  }
  Webhook w;
  w.org_id = who.account.org_id;
  w.url = url;
  w.secret = std::move(secret);
  w.created_at = Now();
  auto id = store_.AddWebhook(w);
  if (!id.ok()) return id.error();
  w.id = *id;
  return w;
}

Result<std::vector<Webhook>> Service::ListWebhooks(const Principal& who) {
  if (auto st = Require(who, Capability::kWebhooks); !st.ok()) return st.error();
  return store_.ListWebhooks(who.account.org_id);
}

Result<int64_t> Service::DeliverWebhooks(size_t max_deliveries) {
  if (!poster_) return int64_t{0};
  const Instant now = Now();
  auto due = store_.DueDeliveries(now, max_deliveries);
  if (!due.ok()) return due.error();
  int64_t delivered = 0;
  for (const Delivery& d : *due) {
    auto n = store_.GetNotification(d.notification_id);
    if (!n.ok()) return n.error();
    auto hook = store_.GetWebhook(d.webhook_id);
    if (!hook.ok()) return hook.error();
    json::object body{{"delivery_id", d.id},
                      {"notification_id", n->id},
                      {"recipient_id", n->recipient_id},
                      {"kind", n->kind},
                      {"severity", n->severity},
                      {"message", n->message},
                      {"created_at", FormatUtc(n->created_at)}};
    if (!n->patient_id.empty()) body["patient_id"] = n->patient_id;
    const std::string text = json::serialize(body);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state state;
    crypto_auth_hmacsha256_init(&state, reinterpret_cast<const unsigned char*>(hook->secret.data()),
                                hook->secret.size());
    crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(text.data()),
                                  text.size());
    crypto_auth_hmacsha256_final(&state, mac);
    char hex[2 * sizeof mac + 1];
    sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
    const Status sent = poster_(hook->url, text,
                                {{"X-Isoguard-Delivery", std::to_string(d.id)},
                                 {"X-Isoguard-Signature", std::string("sha256=") + hex}});
    if (sent.ok()) {
      if (auto st = store_.MarkDelivered(d.id, Now()); !st.ok()) return st.error();
      ++delivered;
      continue;
    }
    const int shift = std::min(d.attempts, 9);  // 10 s, 20 s, ... about an hour at most
    const auto wait = std::min<std::chrono::milliseconds>(
        std::chrono::milliseconds(int64_t{10000} << shift), std::chrono::hours(1));
    if (auto st = store_.MarkAttemptFailed(d.id, sent.error().message, Now() + wait); !st.ok()) {
      return st.error();
    }
  }
  return delivered;
}

// ---------------------------------------------------------------------------------------------
// Views over many patients

namespace {

Status CheckWorklistFilter(const WorklistFilter& f) {
  if (!f.severity.empty() && f.severity != "critical" && f.severity != "warning" &&
      f.severity != "none") {
    return Error::BadInput("must be critical, warning or none", "severity");
  }
  if (!f.status.empty() && f.status != "overdue" && f.status != "due" && f.status != "alerting") {
    return Error::BadInput("must be overdue, due or alerting", "status");
  }
  if (f.text.size() > kMaxWorklistFilterText) {
    return Error::BadInput("must be at most " + std::to_string(kMaxWorklistFilterText) + " bytes",
                           "q");
  }
  return {};
}

bool Matches(const WorklistItem& item, const WorklistFilter& f, std::string_view lowered_text) {
  if (f.severity == "none" ? !item.worst_severity.empty()
                           : !f.severity.empty() && item.worst_severity != f.severity) {
    return false;
  }
  if ((f.status == "overdue" && item.overdue.empty()) || (f.status == "due" && item.due.empty()) ||
      (f.status == "alerting" && item.alerts.empty())) {
    return false;
  }
  if (lowered_text.empty() || ContainsIgnoringCase(item.patient_id, lowered_text)) return true;
  for (const auto* codes : {&item.alerts, &item.overdue, &item.due}) {
    for (const std::string& code : *codes) {
      if (ContainsIgnoringCase(code, lowered_text)) return true;
    }
  }
  return false;
}

}  // namespace

Result<Worklist> Service::PrescriberWorklist(const Principal& who, LocalDate as_of, size_t limit,
                                             size_t offset, const WorklistFilter& filter) {
  if (auto st = Require(who, Capability::kPrescriberWorklist); !st.ok()) return st.error();
  if (auto st = CheckWorklistFilter(filter); !st.ok()) return st.error();
  const std::string lowered_text = AsciiLower(filter.text);
  constexpr int32_t kDueHorizonDays = 7;
  static_assert(kMaxListLimit <= store::kMaxVersionsPerRead);
  const Instant at = EndOfDayUtc(as_of);
  std::vector<WorklistItem> items;
  auto keep = [&](const WorklistItem& item) {
    if (Matches(item, filter, lowered_text)) items.push_back(item);
  };
  std::string after;
  std::vector<std::string> ids;
  for (;;) {
    auto page = store_.ListClinicPatients(who.account.org_id, after, kMaxListLimit);
    if (!page.ok()) return page.error();
    // The page's versions in one read: a line computed for a version and a day is reused, so
    // only the patients whose records changed since are read and evaluated again.
    ids.clear();
    for (const CareLink& link : *page) ids.push_back(link.patient_id);
    auto versions = events_.ReadVersions(ids);
    if (!versions.ok()) return versions.error();
    for (size_t n = 0; n < page->size(); ++n) {
      const CareLink& link = (*page)[n];
      const store::StreamVersion& head = (*versions)[n];
      if (head.version == 0 || head.erased) continue;
      {
        std::lock_guard lock(worklist_mu_);
        auto it = worklist_cache_.find(link.patient_id);
        if (it != worklist_cache_.end() && it->second.version == head.version &&
            it->second.as_of == as_of) {
          if (it->second.item) keep(*it->second.item);
          continue;
        }
      }
      auto state = events_.ReadState(link.patient_id);
      if (!state.ok()) return state.error();
      if (state->version == 0 || state->erased) continue;
      auto remember = [&](std::optional<WorklistItem> line) {
        std::lock_guard lock(worklist_mu_);
        if (worklist_cache_.size() >= kMaxCachedWorklistLines) worklist_cache_.clear();
        worklist_cache_[link.patient_id] =
            CachedWorklistLine{state->version, as_of, std::move(line)};
      };
      auto evaluated = EvaluateState(rulebook_, *state, options_.parse, at);
      if (!evaluated.ok()) return evaluated.error();
      const Evaluation& ev = (*evaluated)->evaluation;
      WorklistItem item;
      item.patient_id = link.patient_id;
      int worst = 0;
      for (const Alert& a : ev.alerts) {
        if (a.severity == Severity::kInfo) continue;
        item.alerts.emplace_back(a.code);
        if (SeverityRank(a.severity) > worst) {
          worst = SeverityRank(a.severity);
          item.worst_severity = std::string(ToString(a.severity));
        }
      }
      for (const DueItem& d : ev.due) {
        // "Until" dates (contraception, no blood donation) are advice with an end, not tasks
        // that fall due.
        if (d.code.ends_with("_UNTIL")) continue;
        if (d.due_by < as_of) {
          item.overdue.emplace_back(d.code);
        } else if (d.due_by - as_of <= kDueHorizonDays) {
          item.due.emplace_back(d.code);
        }
        if (d.due_by >= as_of && (!item.next_due_by || d.due_by < *item.next_due_by)) {
          item.next_due_by = d.due_by;
        }
      }
      if (item.alerts.empty() && item.overdue.empty() && item.due.empty()) {
        remember(std::nullopt);
        continue;
      }
      remember(item);
      keep(item);
    }
    if (page->size() < kMaxListLimit) break;
    after = page->back().patient_id;
  }
  // Critical alerts first, then the most overdue, then the soonest due.
  auto rank = [](const WorklistItem& i) {
    return i.worst_severity == "critical" ? 2 : i.worst_severity == "warning" ? 1 : 0;
  };
  std::sort(items.begin(), items.end(), [&](const WorklistItem& a, const WorklistItem& b) {
    if (rank(a) != rank(b)) return rank(a) > rank(b);
    if (a.overdue.size() != b.overdue.size()) return a.overdue.size() > b.overdue.size();
    if (a.next_due_by != b.next_due_by) {
      if (!a.next_due_by) return false;
      if (!b.next_due_by) return true;
      return *a.next_due_by < *b.next_due_by;
    }
    return a.patient_id < b.patient_id;
  });
  Worklist out;
  out.total = items.size();
  const size_t begin = std::min(offset, items.size());
  const size_t end = std::min(items.size(), begin + std::min(limit, kMaxListLimit));
  out.items.assign(std::make_move_iterator(items.begin() + static_cast<ptrdiff_t>(begin)),
                   std::make_move_iterator(items.begin() + static_cast<ptrdiff_t>(end)));
  return out;
}

Result<std::string> Service::Calendar(const Principal& who, const std::string& patient_id) {
  if (auto st = RequireAccess(who, Capability::kReadRecord, patient_id); !st.ok()) {
    return st.error();
  }
  auto state = events_.ReadState(patient_id);
  if (!state.ok()) return state.error();
  if (state->version == 0) return Error::NotFound("no such patient", "patient_id");
  if (state->erased) return Error::BadInput("the patient's record was erased", "patient_id");
  const Instant now = Now();
  auto evaluated = EvaluateState(rulebook_, *state, options_.parse, now);
  if (!evaluated.ok()) return evaluated.error();
  std::string out;
  IcsLine(out, "BEGIN:VCALENDAR");
  IcsLine(out, "VERSION:2.0");
  IcsLine(out, "PRODID:-//isoguard//due list//EN");
  IcsLine(out, "CALSCALE:GREGORIAN");
  IcsLine(out, "X-WR-CALNAME:" + IcsText("isoguard: what is due for " + patient_id));
  for (const DueItem& d : (*evaluated)->evaluation.due) {
    IcsLine(out, "BEGIN:VEVENT");
    IcsLine(out, "UID:" + IcsText(patient_id + "-" + std::string(d.code) + "-" +
                                  d.due_by.ToString() + "@isoguard"));
    IcsLine(out, "DTSTAMP:" + IcsStamp(now));
    const LocalDate start = d.not_before.value_or(d.due_by);
    IcsLine(out, "DTSTART;VALUE=DATE:" + IcsDate(std::min(start, d.due_by)));
    IcsLine(out, "DTEND;VALUE=DATE:" + IcsDate(d.due_by + 1));
    IcsLine(out, "SUMMARY:" + IcsText(DueSummary(d.code)));
    IcsLine(out, "DESCRIPTION:" + IcsText(std::string(d.code) + ": due by " + d.due_by.ToString() +
                                          (d.not_before ? ", not before " + d.not_before->ToString()
                                                        : std::string())));
    IcsLine(out, "END:VEVENT");
  }
  IcsLine(out, "END:VCALENDAR");
  return out;
}

}  // namespace isoguard::service
