// The service's own records, beside the event store in the same database: organisations,
// accounts and their credentials, which clinic cares for which patient, the access audit log,
// notifications and webhooks, the pregnancy registry, pharmacy stock and storage, and the
// read models the service keeps of the patient streams (open authorizations, and the cursor
// of the projector that maintains them).
//
// What is a fact about a patient (a test, a prescription, an authorization) lives in the
// patient's stream in the EventStore, never here; what is here is either not about one patient
// (accounts, stock) or a projection of the streams that can be rebuilt from them
// (authorizations), or the audit of access.
//
// Two implementations with the same behaviour: SQLite (tables named svc_* in the event
// store's database file, their own schema version in svc_schema) and PostgreSQL (schema
// isoguard_service). Migrations run on open and refuse a newer schema; the SQLite one refuses
// a file that is not an isoguard event store.
//
// Durability: every write is committed before its call returns. Most are synced too (they
// survive a power loss once acknowledged); those that the service can recompute or repeat are
// committed without waiting for the disk (SQLite synchronous=NORMAL for that transaction,
// PostgreSQL synchronous_commit=off): the projector's read models and cursor (rebuilt from
// the log), notifications and their deliveries (made again by the projector, whose cursor is
// then behind them too: a crash loses a suffix of the log's commits, in order), and the audit
// batches of AppendAuditRelaxed. The next synced commit makes them durable with it. This keeps
// the disk's flushes for what must be durable before an answer.
//
// Append-only tables: the access audit, temperature readings, quarantine events and the
// pregnancy registry are never updated or deleted (triggers refuse it, as for the entries).
//
// Thread safety: every method may be called from many threads at once.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "core/time.h"

namespace isoguard::service {

// Limits on what callers may store (every text field is at most kMaxTextBytes unless said).
inline constexpr size_t kMaxIdBytes = 128;
inline constexpr size_t kMaxTextBytes = 4096;
inline constexpr size_t kMaxListLimit = 1000;  // rows per List* call

enum class Role : uint8_t { kPrescriber, kClinicStaff, kPharmacist, kPatient, kAdmin };
std::string_view ToString(
    Role role);  // "prescriber", "clinic_staff", "pharmacist", "patient", "admin"
std::optional<Role> ParseRole(std::string_view text);

enum class OrgKind : uint8_t { kClinic, kPharmacy, kProgram };
std::string_view ToString(OrgKind kind);  // "clinic", "pharmacy", "program"
std::optional<OrgKind> ParseOrgKind(std::string_view text);

struct Organisation {
  std::string id;  // "clinic-1"
  OrgKind kind = OrgKind::kClinic;
  std::string name;
  std::string jurisdiction;  // "US", "EU", "UK" (a pharmacy's or clinic's country)
  Instant created_at{};
};

struct Account {
  std::string id;  // "dr-smith"
  std::string org_id;
  Role role = Role::kPrescriber;
  std::string name;
  std::string patient_id;     // role kPatient: the patient whose record this is; else empty
  std::string password_hash;  // crypto_pwhash_str (Argon2id); empty: no password sign-in
  bool disabled = false;
  Instant created_at{};
};

using TokenHash = std::array<uint8_t, 32>;

// A credential: the token itself is shown once and never stored; its hash is.
struct Token {
  int64_t id = 0;  // assigned by InsertToken
  TokenHash hash{};
  std::string account_id;
  std::string kind;   // "api" (made by an admin) or "session" (a web sign-in)
  std::string label;  // what it is for, shown in listings
  Instant created_at{};
  Instant expires_at{};
  std::optional<Instant> revoked_at;
};

// Which clinic cares for a patient (set at enrollment): a prescriber or clinic staff member
// sees the patients of their own clinic.
struct CareLink {
  std::string patient_id;
  std::string clinic_id;
  std::string prescriber_id;  // the account that enrolled the patient
  Instant since{};
};

// One access to patient data or to the service, granted or refused.
struct AuditRecord {
  int64_t id = 0;  // assigned on append, increasing
  Instant at{};
  std::string request_id;
  std::string actor_id;  // empty when the caller could not be authenticated
  std::string actor_role;
  std::string org_id;
  std::string source;  // "203.0.113.7:51234"
  std::string action;  // "GET /v1/patients/{patient_id}"
  std::string patient_id;
  std::string outcome;  // "ok", "refused", "error"
  int status = 0;       // the HTTP status answered
  std::string detail;
};

// Makes a record of something a client sent storable whatever it sent: every id within
// kMaxIdBytes and every text within kMaxTextBytes (cut on a character boundary, with "..."), NUL
// and bytes that are not UTF-8 written as \xNN, and, when the patient id had to be changed,
// the detail saying how long it was. A request naming an id no patient can have is audited as
// well as any other; a record the store would refuse would stop the audit writer instead.
void FitAuditRecord(AuditRecord& record);

struct AuditFilter {
  std::string patient_id;  // empty: any
  std::string actor_id;    // empty: any
  int64_t after_id = 0;
  size_t limit = 100;
};

// The read model of one authorization (its truth is the `authorization` event of the
// patient's stream and the `dispense` / `authorization_reversal` events that close it).
enum class AuthorizationStatus : uint8_t { kOpen, kDispensed, kReversed };
std::string_view ToString(AuthorizationStatus status);  // "open", "dispensed", "reversed"

struct AuthorizationRecord {
  std::string id;  // the authorization id ("A-..."), unique
  std::string patient_id;
  std::string prescription_id;
  std::string pharmacy_id;    // the organisation that asked
  std::string pharmacist_id;  // the account that asked
  Instant created_at{};
  Instant dispense_by{};
  AuthorizationStatus status = AuthorizationStatus::kOpen;
  std::optional<Instant> closed_at;
  std::string closed_by;  // account id, or "system" for an automatic reversal
  std::string lot_id;     // dispensed: the lot
};

struct Notification {
  int64_t id = 0;            // assigned on insert
  std::string recipient_id;  // an account
  std::string patient_id;    // may be empty
  std::string kind;  // "pregnancy", "suicidal_ideation", "serious_adverse_event", "reminder", ...
  std::string severity;  // "info", "warning", "critical"
  std::string message;
  // A notification with a key already used is not inserted again (InsertNotification returns
  // the first one): reactions to events and reminders are then exactly-once.
  std::string dedupe_key;
  Instant created_at{};
  std::optional<Instant> read_at;
};

struct Webhook {
  int64_t id = 0;
  std::string org_id;  // notifications for accounts of this organisation are posted here
  std::string url;
  std::string secret;  // HMAC key for the signature header
  Instant created_at{};
};

// A notification waiting to be posted to a webhook.
struct Delivery {
  int64_t id = 0;
  int64_t webhook_id = 0;
  int64_t notification_id = 0;
  int attempts = 0;
  Instant next_attempt_at{};
  std::optional<Instant> delivered_at;
  std::string last_error;
};

// A pregnancy filed with the program's registry (one per positive test event).
struct PregnancyReport {
  int64_t id = 0;
  std::string patient_id;
  std::string event_id;  // the positive pregnancy_test
  std::string program_id;
  std::string clinic_id;
  Instant reported_at{};
};

// Pharmacy stock: a lot of one product and strength, stored at a place in the pharmacy.
struct Lot {
  std::string id;  // unique
  std::string pharmacy_id;
  std::string product;  // "generic", "absorica", "absorica_ld"
  double strength_mg = 0;
  std::string lot_number;  // the manufacturer's
  LocalDate expiry;
  std::string location;  // "fridge-free shelf A": temperature readings name it
  int64_t quantity_capsules = 0;
  Instant received_at{};
  bool quarantined = false;
  std::string quarantine_reason;
};

struct TemperatureReading {
  int64_t id = 0;
  std::string pharmacy_id;
  std::string location;
  Instant at{};
  double celsius = 0;
  std::string recorded_by;
};

struct QuarantineEvent {
  int64_t id = 0;
  std::string lot_id;
  std::string action;  // "quarantine" or "release"
  std::string reason;
  Instant at{};
  std::string by;  // account id, or "system"
};

// The storage range a reading is checked against (knowledge/storage.toml: 15-30 °C).
struct StorageRange {
  double min_celsius = 0;
  double max_celsius = 0;
};

struct TemperatureResult {
  TemperatureReading reading;
  bool excursion = false;
  std::vector<std::string> quarantined_lot_ids;  // lots put in quarantine by this reading
};

class ServiceStore {
 public:
  virtual ~ServiceStore() = default;

  // Organisations. kConflict when the id exists; kNotFound when unknown.
  virtual Status CreateOrganisation(const Organisation& org) = 0;
  virtual Result<Organisation> GetOrganisation(const std::string& id) = 0;
  virtual Result<std::vector<Organisation>> ListOrganisations() = 0;

  // Accounts. kConflict when the id exists; kNotFound for an unknown organisation or account.
  virtual Status CreateAccount(const Account& account) = 0;
  virtual Result<Account> GetAccount(const std::string& id) = 0;
  virtual Result<std::vector<Account>> ListAccounts(const std::string& org_id) = 0;
  virtual Status SetAccountDisabled(const std::string& id, bool disabled) = 0;
  virtual Status SetPasswordHash(const std::string& id, const std::string& password_hash) = 0;

  // Tokens. InsertToken returns the id; FindToken gives the token and its account (kNotFound
  // for an unknown hash; expiry and revocation are the caller's to judge, from the record).
  virtual Result<int64_t> InsertToken(const Token& token) = 0;
  struct TokenAndAccount {
    Token token;
    Account account;
  };
  virtual Result<TokenAndAccount> FindToken(const TokenHash& hash) = 0;
  // Revoking a revoked token keeps the first revocation time. kNotFound when unknown.
  virtual Status RevokeToken(int64_t token_id, Instant at) = 0;
  virtual Result<std::vector<Token>> ListTokens(const std::string& account_id) = 0;

  // Care. LinkPatient is idempotent for the same clinic; kConflict when the patient is linked
  // to another clinic. ListClinicPatients pages by patient id (those > after), sorted.
  virtual Status LinkPatient(const CareLink& link) = 0;
  // Links, in one transaction, every patient of `links` not linked to any clinic yet (a
  // cohort joining a clinic); returns how many were linked.
  virtual Result<int64_t> LinkNewPatients(const std::vector<CareLink>& links) = 0;
  virtual Result<std::optional<CareLink>> GetCareLink(const std::string& patient_id) = 0;
  virtual Result<std::vector<CareLink>> ListClinicPatients(const std::string& clinic_id,
                                                           const std::string& after_patient_id,
                                                           size_t limit) = 0;

  // The access audit: appended in batches (one transaction), ids assigned in order.
  // AppendAudit is synced; AppendAuditRelaxed is not (see Durability above).
  virtual Status AppendAudit(const std::vector<AuditRecord>& records) = 0;
  virtual Status AppendAuditRelaxed(const std::vector<AuditRecord>& records) = 0;
  virtual Result<std::vector<AuditRecord>> ListAudit(const AuditFilter& filter) = 0;

  // Authorizations (a read model, written by the projector). Upsert inserts, or updates the
  // status/closed fields of an existing id; a closed authorization is never reopened (an
  // upsert of kOpen over a closed one changes nothing).
  virtual Status UpsertAuthorization(const AuthorizationRecord& record) = 0;
  // Upserts (as UpsertAuthorization, in order) and the cursor's new position, in one
  // transaction: the projector's pass, which must not cost a commit per entry.
  virtual Status ApplyAuthorizations(const std::vector<AuthorizationRecord>& upserts,
                                     const std::string& cursor, int64_t position) = 0;
  virtual Result<std::optional<AuthorizationRecord>> GetAuthorization(const std::string& id) = 0;
  // Open ones of a pharmacy, by dispense_by then id, `limit` of them from `offset`.
  virtual Result<std::vector<AuthorizationRecord>> ListOpenAuthorizations(
      const std::string& pharmacy_id, size_t limit, size_t offset) = 0;
  // Open ones with dispense_by <= t (for the sweeper), oldest first.
  virtual Result<std::vector<AuthorizationRecord>> ListExpiredAuthorizations(Instant t,
                                                                             size_t limit) = 0;
  // Open ones of a patient (a positive pregnancy test halts them all).
  virtual Result<std::vector<AuthorizationRecord>> ListPatientAuthorizations(
      const std::string& patient_id) = 0;

  // A projector's position in the event store's log (0 when never set).
  virtual Result<int64_t> GetCursor(const std::string& name) = 0;
  virtual Status SetCursor(const std::string& name, int64_t position) = 0;

  // Notifications. Insert returns the stored one (the first, when the dedupe key was used).
  virtual Result<Notification> InsertNotification(const Notification& n) = 0;
  virtual Result<std::vector<Notification>> ListNotifications(const std::string& recipient_id,
                                                              bool unread_only, int64_t after_id,
                                                              size_t limit) = 0;
  // kNotFound unless the notification exists and is the recipient's.
  virtual Status MarkNotificationRead(int64_t id, const std::string& recipient_id, Instant at) = 0;

  // Webhooks and their deliveries (an outbox: a delivery is queued in the same transaction as
  // its notification's insert when the recipient's organisation has webhooks).
  virtual Result<int64_t> AddWebhook(const Webhook& webhook) = 0;
  virtual Result<std::vector<Webhook>> ListWebhooks(const std::string& org_id) = 0;
  virtual Result<std::vector<Delivery>> DueDeliveries(Instant now, size_t limit) = 0;
  virtual Status MarkDelivered(int64_t delivery_id, Instant at) = 0;
  virtual Status MarkAttemptFailed(int64_t delivery_id, const std::string& error,
                                   Instant next_attempt_at) = 0;
  virtual Result<Notification> GetNotification(int64_t id) = 0;
  virtual Result<Webhook> GetWebhook(int64_t id) = 0;

  // The pregnancy registry: one report per event id (a second insert returns the first).
  virtual Result<PregnancyReport> FilePregnancyReport(const PregnancyReport& report) = 0;
  virtual Result<std::vector<PregnancyReport>> ListPregnancyReports(int64_t after_id,
                                                                    size_t limit) = 0;

  // Stock. AddLot: kConflict when the id exists, kNotFound for an unknown pharmacy.
  virtual Status AddLot(const Lot& lot) = 0;
  virtual Result<Lot> GetLot(const std::string& id) = 0;
  virtual Result<std::vector<Lot>> ListLots(const std::string& pharmacy_id) = 0;
  // Takes capsules out of a lot for a dispense (kBadInput when fewer are left).
  virtual Status TakeFromLot(const std::string& lot_id, int64_t capsules) = 0;
  // Records a reading; outside `range`, every lot of the pharmacy at that location that is
  // not in quarantine yet is quarantined (a QuarantineEvent each), in the same transaction.
  virtual Result<TemperatureResult> RecordTemperature(const TemperatureReading& reading,
                                                      const StorageRange& range) = 0;
  virtual Result<std::vector<TemperatureReading>> ListTemperatures(const std::string& pharmacy_id,
                                                                   int64_t after_id,
                                                                   size_t limit) = 0;
  // A pharmacist releases a quarantined lot (kConflict when it is not in quarantine).
  virtual Status ReleaseLot(const std::string& lot_id, const std::string& by,
                            const std::string& reason, Instant at) = 0;
  virtual Result<std::vector<QuarantineEvent>> ListQuarantineEvents(const std::string& lot_id) = 0;

  // True when the database answers (for /readyz).
  virtual Status Ping() = 0;
};

// Opens the service store in the database the event store URL names ("sqlite:PATH", a plain
// path, "postgresql://..."), creating or migrating its tables. The SQLite file must already
// hold an isoguard event store (open the EventStore first).
Result<std::unique_ptr<ServiceStore>> OpenServiceStore(const std::string& url);

}  // namespace isoguard::service
