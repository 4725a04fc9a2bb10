// Who may do what: the principal behind a request, and the access policy.
//
// Roles act within their organisation, and access to a patient follows care:
// - a prescriber, and clinic staff acting for the prescribers of their clinic (every act
//   recorded as the staff member's own), see and record for the patients of their clinic;
//   only a prescriber writes or cancels a prescription;
// - a pharmacist sees only what an authorization needs (the patient's identity, the
//   authorization's status and reasons), never labs or PHQ-9 answers, and asks for
//   authorizations and records dispenses for their own pharmacy;
// - a patient sees their own record and records their own attestations, PHQ-9s, side effects
//   and missed doses;
// - a program admin sees aggregate reports, the pregnancy registry and the audit log, and no
//   patient's record.
// The table of capabilities by role is PolicyTable() (access.cpp); a test walks every cell of
// it through the HTTP API.
//
// Thread-safe: the functions are pure; Authenticator only reads the store.
#pragma once

#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/result.h"
#include "core/time.h"
#include "domain/codes.h"
#include "service/service_store.h"
#include "store/event_store.h"

namespace isoguard::service {

// Who is asking: an authenticated account, from where.
struct Principal {
  Account account;
  int64_t token_id = 0;
  std::string source;      // the peer address, "203.0.113.7:51234"
  std::string request_id;  // ties the audit record, the log line and the stored event

  // The actor stored with every event this principal records.
  store::Actor actor() const;
};

enum class Capability : uint8_t {
  kEnrollPatient,
  kReadRecord,           // the whole record and its evaluation
  kRecordClinical,       // weights, visits, tests, labs, medications, assessments, ...
  kRecordPatientReport,  // contraception, comprehension, PHQ-9, side effects, missed doses
  kPrescribe,            // write or cancel a prescription
  kCorrect,              // entered_in_error
  kAuthorize,            // ask for, and reverse, an authorization
  kDispense,
  kPharmacyView,  // a patient's identity and authorization status, for a pharmacy
  kStock,         // lots, temperatures, quarantine
  kPrescriberWorklist,
  kPharmacyWorklist,
  kAuditLog,
  kReports,  // aggregate reports and the pregnancy registry
  kManageAccounts,
  kWebhooks,  // subscribe the caller's organisation to its notifications
};
inline constexpr size_t kCapabilityCount = 16;
std::string_view ToString(Capability c);

struct PolicyRow {
  Capability capability;
  bool prescriber, clinic_staff, pharmacist, patient, admin;
};
std::span<const PolicyRow> PolicyTable();

bool RoleMay(Role role, Capability capability);

// kForbidden naming the capability when the role may not.
Status Require(const Principal& who, Capability capability);

// Whether `who` may act on `patient_id` with `capability`: the role must have it, and
//   prescriber / clinic staff: the patient is linked to their clinic (`care`);
//   patient: it is their own record;
//   pharmacist: pharmacy capabilities reach any enrolled patient (a prescription may be
//     filled anywhere), nothing else;
//   admin: never a patient's record.
// kForbidden otherwise, saying why; kNotFound is never returned here (an unknown patient is
// indistinguishable from another clinic's: both are forbidden, so ids cannot be probed).
Status RequirePatient(const Principal& who, Capability capability, std::string_view patient_id,
                      const std::optional<CareLink>& care);

// The capability needed to record an event of `type` ("weight", "phq9", ...), or kBadInput
// for types no one records through the API (authorization, authorization_reversal and
// dispense have routes of their own; the patient entry is made at enrollment).
Result<Capability> CapabilityForEvent(std::string_view type);

// Resolves "Bearer <token>" to a principal: kUnauthenticated when the header is missing or
// malformed, the token unknown, expired or revoked, or its account disabled.
//
// What the store says of a token is kept for kTokenCacheMs, so that a busy pharmacy's
// requests do not each read it: a revocation or a disabled account made through this process
// (Forget*) takes effect at once, one made by another process (the `isoguard admin` command)
// within that time. Expiry is checked at every request. Thread-safe.
class Authenticator {
 public:
  static constexpr int64_t kTokenCacheMs = 2000;
  static constexpr size_t kMaxCachedTokens = 100000;

  explicit Authenticator(ServiceStore& store) : store_(store) {}
  Result<Principal> Authenticate(std::string_view authorization_header, Instant now) const;
  void ForgetAccount(const std::string& account_id);
  void ForgetToken(int64_t token_id);

 private:
  struct Cached {
    ServiceStore::TokenAndAccount found;
    Instant until{};
  };
  ServiceStore& store_;
  mutable std::mutex mu_;
  mutable std::unordered_map<std::string, Cached> cache_;  // key: the token hash's bytes
};

}  // namespace isoguard::service
