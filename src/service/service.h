// The isoguard service: what clinics, pharmacies and patients do, as plain domain operations
// over the event store (the patient streams), the service store (accounts, stock, read
// models) and the rules engine. Knows nothing of HTTP: src/server decodes requests into these
// calls and encodes their results.
//
// Every operation takes the Principal asking, checks access (access.h) before touching any
// data, and records events with the principal as actor. Times come from the injected clock.
//
// Authorizations (the RMA equivalent): a pharmacist asks for one for a prescription; the
// patient's state is read from the projection and evaluated now; when the engine authorizes,
// an `authorization` event is appended with the version the evaluation saw as the expected
// version (so nothing recorded meanwhile, such as a positive pregnancy test, can slip past
// the decision: a moved stream is read and evaluated again) and with the idempotency key
// "authorization:<prescription>:<reversals so far>", so that of any number of concurrent
// requests for one prescription exactly one authorization is written. The others are answered
// with it (same pharmacy) or a conflict (another pharmacy). A denial writes nothing to the
// stream; it is answered with every reason and written to the access audit.
//
// Thread safety: every method may be called from many threads at once.
#pragma once

#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/result.h"
#include "core/time.h"
#include "rules/evaluate.h"
#include "rules/rulebook.h"
#include "service/access.h"
#include "service/service_store.h"
#include "service/sign_in_limiter.h"
#include "store/event_store.h"

namespace isoguard::service {

using Clock = std::function<Instant()>;
Clock SystemClock();

// A random id: `prefix` then `chars` characters of Crockford's base32 ("rx-7K2M9Q4T1B").
std::string NewRandomId(std::string_view prefix, size_t chars = 10);

struct ServiceOptions {
  // How long a session (web sign-in) token lives.
  std::chrono::hours session_ttl{12};
  // How many times an authorization is evaluated again when the stream moved under it.
  int max_authorization_attempts = 8;
  ParseOptions parse;
  // Password sign-in: failures allowed per account and per address, verifications at once.
  SignInLimits sign_in;
};

// ---- Requests and answers.

struct EnrollRequest {
  std::string patient_id;  // empty: one is generated ("p-" + 16 random base32 characters)
  std::string birth_date;  // YYYY-MM-DD
  std::string jurisdiction;
  std::string category;
  std::string time_zone;  // optional
  std::string program;    // optional program id for the enrollment event
  std::string idempotency_key;
};

struct AppendEventsRequest {
  std::string patient_id;
  std::vector<std::string> events;  // JSON objects of the record format
  std::optional<int64_t> if_match_version;
  std::string idempotency_key;
};

// What recording some events did, with what the patient must see at once.
struct AppendOutcome {
  store::AppendResult result;
  // PHQ-9 item 9 above 0: the crisis resources of the patient's jurisdiction.
  const CrisisResource* crisis = nullptr;
  // Side effects that need the prescriber now (reported serious, or naming a serious effect).
  std::vector<std::string> contact_prescriber_now;  // the effects' titles (or the terms)
};

struct PatientView {
  std::string patient_id;
  int64_t version = 0;
  std::string record_json;      // the contract record
  std::string evaluation_json;  // EvaluationToJson at `at`
  bool erased = false;
};

struct AuthorizationRequest {
  std::string patient_id;
  std::string prescription_id;
  std::string idempotency_key;  // optional, from the client
};

struct AuthorizationAnswer {
  bool authorized = false;
  bool existing = false;  // an authorization issued before (to this pharmacy) was returned
  std::string authorization_id;
  std::string prescription_id;
  std::string patient_id;
  std::optional<Instant> dispense_by;
  std::vector<Reason> reasons;  // when denied
  std::string program_id;
  Instant decided_at{};
};

struct DispenseRequest {
  std::string authorization_id;
  std::string lot_id;
  bool medication_guide_given = false;
  std::string idempotency_key;
};

struct DispenseAnswer {
  std::string patient_id;
  std::string authorization_id;
  std::string prescription_id;
  std::string lot_id;
  std::string event_id;
  int64_t capsules = 0;
  Instant dispensed_at{};
};

struct WorklistItem {
  std::string patient_id;
  std::string worst_severity;  // "critical", "warning", "info", "" (no alert)
  std::vector<std::string> alerts;
  std::vector<std::string> overdue;  // due codes with due_by before the day
  std::vector<std::string> due;      // due codes due within the horizon
  std::optional<LocalDate> next_due_by;
};

// Which lines of the worklist to list (all of them when every field is empty), applied before
// paging so that a filter reaches every page of a clinic of thousands.
struct WorklistFilter {
  std::string severity;  // "critical", "warning", "none" (no alert), "" (any)
  std::string status;    // "overdue", "due", "alerting", "" (any)
  std::string text;      // a case-insensitive part of the patient id or of a code, "" (any)
};

inline constexpr size_t kMaxWorklistFilterText = 128;  // bytes
// Webhooks one organisation may subscribe (each is a delivery per notification).
inline constexpr size_t kMaxWebhooksPerOrg = 16;

struct Worklist {
  std::vector<WorklistItem> items;
  size_t total = 0;  // items in the whole (filtered) list, before paging
};

struct IssuedToken {
  std::string token;  // shown once
  Token record;
};

class Service {
 public:
  Service(store::EventStore& events, ServiceStore& store, const Rulebook& rulebook,
          ServiceOptions options = {}, Clock clock = SystemClock());

  Instant Now() const { return clock_(); }
  const Rulebook& rulebook() const { return rulebook_; }
  ServiceStore& store() { return store_; }
  store::EventStore& events() { return events_; }
  Authenticator& authenticator() { return authenticator_; }

  // ---- Accounts (bootstrap from the CLI: `who` is nullptr there).
  Status CreateOrganisation(const Principal* who, const Organisation& org);
  // Makes the account and an API token for it (shown once). `password` may be empty.
  Result<IssuedToken> CreateAccount(const Principal* who, Account account,
                                    const std::string& password, std::chrono::hours token_ttl);
  Result<IssuedToken> IssueToken(const Principal* who, const std::string& account_id,
                                 std::string kind, std::string label, std::chrono::hours ttl);
  Status SetAccountDisabled(const Principal* who, const std::string& account_id, bool disabled);
  // Web sign-in: a session token when the password matches an enabled account.
  // `source`: the client's address (rate limits, sign_in_limiter.h).
  Result<IssuedToken> SignIn(const std::string& account_id, const std::string& password,
                             const std::string& source = {});
  Status SignOut(const Principal& who);

  // ---- Patients.
  Result<store::AppendResult> Enroll(const Principal& who, EnrollRequest request,
                                     std::string* patient_id_out);
  Result<PatientView> ReadPatient(const Principal& who, const std::string& patient_id,
                                  std::optional<Instant> at,
                                  std::optional<std::string> prescription = std::nullopt);
  Result<store::Stream> ReadTimeline(const Principal& who, const std::string& patient_id);
  Result<AppendOutcome> AppendEvents(const Principal& who, const AppendEventsRequest& request);
  Result<AppendOutcome> Correct(const Principal& who, const std::string& patient_id,
                                const std::string& target_event_id, std::string idempotency_key);
  // The patient's due list as an iCalendar file (RFC 5545).
  Result<std::string> Calendar(const Principal& who, const std::string& patient_id);

  // ---- Pharmacy.
  Result<AuthorizationAnswer> Authorize(const Principal& who, const AuthorizationRequest& request);
  Result<AuthorizationRecord> Reverse(const Principal& who, const std::string& authorization_id,
                                      std::string reason);
  Result<DispenseAnswer> Dispense(const Principal& who, const DispenseRequest& request);
  // A patient as a pharmacy may see them: identity and the authorization status of the
  // current prescription, never labs or PHQ-9.
  Result<std::string> PharmacyView(const Principal& who, const std::string& patient_id);
  Result<std::vector<AuthorizationRecord>> OpenAuthorizations(const Principal& who, size_t limit,
                                                              size_t offset);

  // ---- Worklists.
  // kBadInput naming the filter's field when it is not one of the values above.
  Result<Worklist> PrescriberWorklist(const Principal& who, LocalDate as_of, size_t limit,
                                      size_t offset, const WorklistFilter& filter = {});

  // ---- Stock and storage (the pharmacist's own pharmacy).
  Status AddLot(const Principal& who, Lot lot);
  Result<std::vector<Lot>> ListLots(const Principal& who);
  Result<TemperatureResult> RecordTemperature(const Principal& who, TemperatureReading reading);
  Result<std::vector<TemperatureReading>> ListTemperatures(const Principal& who, int64_t after_id,
                                                           size_t limit);
  Status ReleaseLot(const Principal& who, const std::string& lot_id, const std::string& reason);

  // ---- Webhooks: the caller's organisation subscribes to its accounts' notifications. The
  // secret (HMAC-SHA256 key of the signature header) is generated when not given and shown
  // in the answer; `url` is checked by the caller (http(s), a host).
  Result<Webhook> AddWebhook(const Principal& who, const std::string& url, std::string secret);
  Result<std::vector<Webhook>> ListWebhooks(const Principal& who);
  // Posts the deliveries that are due; returns how many succeeded. A failed one is tried again
  // later (after 10 s, doubling up to an hour).
  using WebhookPoster =
      std::function<Status(const std::string& url, const std::string& body,
                           const std::vector<std::pair<std::string, std::string>>& headers)>;
  void SetWebhookPoster(WebhookPoster poster) { poster_ = std::move(poster); }
  Result<int64_t> DeliverWebhooks(size_t max_deliveries = 100);

  // Called after every append the service makes (the background worker projects then).
  void SetAppendListener(std::function<void()> listener) { listener_ = std::move(listener); }

  // ---- Background work (Worker in worker.h calls these; tests call them directly).
  // Applies the log after the projector's cursor to the read models and reacts to safety
  // events (positive pregnancy tests, PHQ-9 item 9, serious side effects). Returns how many
  // entries were applied.
  Result<int64_t> Project(size_t max_entries = 10000);
  // Reverses the open authorizations whose dispense_by has passed; reminders of windows
  // about to close. Returns how many authorizations were reversed.
  Result<int64_t> Sweep();
  // Reminders before a window closes (a pregnancy test, a visit, a questionnaire due within
  // kReminderLeadDays): to the patient's own accounts and the prescriber, once per item.
  // Walks at most `max_patients` patients per call, resuming where the last call stopped, so
  // that a large cohort is covered over several sweeps without a long pause. Returns how many
  // reminders were due (each is stored once, however many walks see it).
  Result<int64_t> Remind(size_t max_patients = 1000);
  static constexpr int32_t kReminderLeadDays = 3;

 private:
  Result<std::optional<CareLink>> CareOf(const std::string& patient_id);
  Status RequireAccess(const Principal& who, Capability c, const std::string& patient_id);
  Result<Organisation> PharmacyOf(const Principal& who);
  // The read model of an authorization; when it is not there yet, the projector catches up
  // first (the authorization may be milliseconds old).
  Result<AuthorizationRecord> FindAuthorization(const std::string& id);
  // Appends the reversal of an open authorization (idempotent: "reversal:<id>"); `who` null
  // for the system (expiry, a positive pregnancy test).
  Status ReverseInStream(const std::string& patient_id, const std::string& authorization_id,
                         const std::string& reason, const Principal* who);
  void Appended() {
    if (listener_) listener_();
  }
  struct ProjectionBatch;
  Status ReactToEntry(const store::StoredEntry& entry, ProjectionBatch& batch);
  Result<std::optional<AuthorizationRecord>> ProjectedAuthorization(const std::string& id,
                                                                    const ProjectionBatch& batch);
  Result<std::vector<AuthorizationRecord>> ProjectedOpenAuthorizations(
      const std::string& patient, const ProjectionBatch& batch);
  Status Notify(const std::string& recipient, const std::string& patient_id, std::string kind,
                std::string severity, std::string message, std::string dedupe_key);
  Status NotifyCareTeam(const std::string& patient_id, std::string kind, std::string severity,
                        std::string message, const std::string& dedupe_key);

  store::EventStore& events_;
  ServiceStore& store_;
  const Rulebook& rulebook_;
  ServiceOptions options_;
  Clock clock_;
  Authenticator authenticator_;
  SignInLimiter sign_in_limiter_;
  std::function<void()> listener_;
  WebhookPoster poster_;
  // Care links and organisations never change once made (LinkPatient refuses another clinic;
  // organisations have no update): found ones are kept, bounded. Thread-safe under cache_mu_.
  static constexpr size_t kMaxCachedLinks = 200000;
  std::mutex cache_mu_;
  std::unordered_map<std::string, CareLink> care_cache_;
  std::unordered_map<std::string, Organisation> org_cache_;
  // A patient's worklist line as of a day is a function of the stream's version and the day:
  // kept per patient (the last one computed), so that a worklist read again re-evaluates only
  // the patients whose records changed. Bounded; thread-safe under worklist_mu_.
  struct CachedWorklistLine {
    int64_t version = 0;
    LocalDate as_of;
    std::optional<WorklistItem> item;  // nullopt: nothing due, overdue or alerting
  };
  static constexpr size_t kMaxCachedWorklistLines = 200000;
  std::mutex worklist_mu_;
  std::unordered_map<std::string, CachedWorklistLine> worklist_cache_;
  std::mutex project_mu_;  // one projection pass at a time
  std::mutex remind_mu_;   // one reminder walk at a time; guards its position
  size_t remind_org_ = 0;
  std::string remind_after_;
};

}  // namespace isoguard::service
