#include "service/access.h"

#include <sodium.h>

#include <array>
#include <optional>

#include "service/credentials.h"

namespace isoguard::service {
namespace {

// clang-format off
//                                   presc  staff  pharm  patient admin
constexpr std::array<PolicyRow, kCapabilityCount> kPolicy{{
    {Capability::kEnrollPatient,       true,  true,  false, false, false},
    {Capability::kReadRecord,          true,  true,  false, true,  false},
    {Capability::kRecordClinical,      true,  true,  false, false, false},
    {Capability::kRecordPatientReport, true,  true,  false, true,  false},
    {Capability::kPrescribe,           true,  false, false, false, false},
    {Capability::kCorrect,             true,  true,  false, false, false},
    {Capability::kAuthorize,           false, false, true,  false, false},
    {Capability::kDispense,            false, false, true,  false, false},
    {Capability::kPharmacyView,        false, false, true,  false, false},
    {Capability::kStock,               false, false, true,  false, false},
    {Capability::kPrescriberWorklist,  true,  true,  false, false, false},
    {Capability::kPharmacyWorklist,    false, false, true,  false, false},
    {Capability::kAuditLog,            false, false, false, false, true},
    {Capability::kReports,             false, false, false, false, true},
    {Capability::kManageAccounts,      false, false, false, false, true},
    {Capability::kWebhooks,            true,  true,  true,  false, true},
}};
// clang-format on

constexpr std::string_view kCapabilityNames[kCapabilityCount] = {
    "enroll_patient", "read_record", "record_clinical",     "record_patient_report",
    "prescribe",      "correct",     "authorize",           "dispense",
    "pharmacy_view",  "stock",       "prescriber_worklist", "pharmacy_worklist",
    "audit_log",      "reports",     "manage_accounts",     "webhooks"};

bool IsPharmacyCapability(Capability c) {
  return c == Capability::kAuthorize || c == Capability::kDispense ||
         c == Capability::kPharmacyView;
}

}  // namespace

std::string_view ToString(Capability c) { return kCapabilityNames[static_cast<size_t>(c)]; }

std::span<const PolicyRow> PolicyTable() { return kPolicy; }

store::Actor Principal::actor() const {
  store::Actor a;
  a.id = account.id;
  a.role = std::string(ToString(account.role));
  a.source = "api " + account.org_id + (source.empty() ? "" : " " + source) +
             (request_id.empty() ? "" : " " + request_id);
  return a;
}

bool RoleMay(Role role, Capability capability) {
  const PolicyRow& row = kPolicy[static_cast<size_t>(capability)];
  switch (role) {
    case Role::kPrescriber:
      return row.prescriber;
    case Role::kClinicStaff:
      return row.clinic_staff;
    case Role::kPharmacist:
      return row.pharmacist;
    case Role::kPatient:
      return row.patient;
    case Role::kAdmin:
      return row.admin;
  }
  return false;
}

Status Require(const Principal& who, Capability capability) {
  if (RoleMay(who.account.role, capability)) return {};
  return Error::Forbidden("the role " + std::string(ToString(who.account.role)) + " may not " +
                          std::string(ToString(capability)));
}

Status RequirePatient(const Principal& who, Capability capability, std::string_view patient_id,
                      const std::optional<CareLink>& care) {
  if (auto st = Require(who, capability); !st.ok()) return st;
  const Account& a = who.account;
  switch (a.role) {
    case Role::kPrescriber:
    case Role::kClinicStaff:
      if (care.has_value() && care->clinic_id == a.org_id) return {};
      return Error::Forbidden("the patient is not in the care of your clinic", "patient_id");
    case Role::kPatient:
      if (!a.patient_id.empty() && a.patient_id == patient_id) return {};
      return Error::Forbidden("a patient may see only their own record", "patient_id");
    case Role::kPharmacist:
      if (IsPharmacyCapability(capability) && care.has_value()) return {};
      return Error::Forbidden("the patient is not enrolled with any clinic", "patient_id");
    case Role::kAdmin:
      break;
  }
  return Error::Forbidden("a program admin sees reports, not patient records", "patient_id");
}

Result<Capability> CapabilityForEvent(std::string_view type) {
  if (type == "contraception" || type == "comprehension" || type == "phq9" ||
      type == "adverse_event" || type == "missed_dose") {
    return Capability::kRecordPatientReport;
  }
  if (type == "prescription" || type == "prescription_cancel") return Capability::kPrescribe;
  if (type == "entered_in_error") return Capability::kCorrect;
  if (type == "enrollment" || type == "category_change" || type == "weight" || type == "visit" ||
      type == "pregnancy_test" || type == "risk_acknowledgement" || type == "assessment" ||
      type == "second_prescriber" || type == "lab" || type == "medication" ||
      type == "treatment_end") {
    return Capability::kRecordClinical;
  }
  if (type == "authorization" || type == "authorization_reversal" || type == "dispense") {
    return Error::BadInput("'" + std::string(type) +
                               "' events are recorded by the pharmacy routes "
                               "(/v1/authorizations, /v1/dispenses), not here",
                           "type");
  }
  if (type == "patient") {
    return Error::BadInput("the patient entry is made at enrollment", "type");
  }
  return Error::BadInput("unknown event type '" + std::string(type) + "'", "type");
}

Result<Principal> Authenticator::Authenticate(std::string_view header, Instant now) const {
  constexpr std::string_view kBearer = "Bearer ";
  if (header.empty()) {
    return Error::Unauthenticated("sign in: send 'Authorization: Bearer <token>'", "Authorization");
  }
  if (header.size() <= kBearer.size() || !header.substr(0, kBearer.size()).starts_with("Bearer") ||
      header[kBearer.size() - 1] != ' ') {
    return Error::Unauthenticated("the Authorization header must be 'Bearer <token>'",
                                  "Authorization");
  }
  const std::string_view token = header.substr(kBearer.size());
  if (!LooksLikeToken(token)) {
    return Error::Unauthenticated("the token is not an isoguard token", "Authorization");
  }
  const TokenHash hash = HashToken(token);
  const std::string key(reinterpret_cast<const char*>(hash.data()), hash.size());
  std::optional<ServiceStore::TokenAndAccount> found;
  {
    std::lock_guard lock(mu_);
    if (auto it = cache_.find(key); it != cache_.end() && it->second.until > now) {
      found = it->second.found;
    }
  }
  if (!found) {
    auto read = store_.FindToken(hash);
    if (!read.ok()) {
      if (read.error().kind == ErrorKind::kNotFound) {
        return Error::Unauthenticated("unknown token", "Authorization");
      }
      return read.error();
    }
    found = std::move(*read);
    std::lock_guard lock(mu_);
    if (cache_.size() >= kMaxCachedTokens) cache_.clear();
    cache_[key] = Cached{*found, now + std::chrono::milliseconds(kTokenCacheMs)};
  }
  const Token& t = found->token;
  // The lookup was by the hash; the stored hash is compared again in constant time, so that
  // no comparison of secret-derived bytes depends on where they first differ.
  if (sodium_memcmp(t.hash.data(), hash.data(), hash.size()) != 0) {
    return Error::Unauthenticated("unknown token", "Authorization");
  }
  if (t.revoked_at.has_value()) {
    return Error::Unauthenticated("the token was revoked", "Authorization");
  }
  if (t.expires_at <= now) return Error::Unauthenticated("the token has expired", "Authorization");
  if (found->account.disabled) {
    return Error::Unauthenticated("the account is disabled", "Authorization");
  }
  Principal p;
  p.account = found->account;
  p.token_id = t.id;
  return p;
}

void Authenticator::ForgetAccount(const std::string& account_id) {
  std::lock_guard lock(mu_);
  std::erase_if(cache_,
                [&](const auto& entry) { return entry.second.found.account.id == account_id; });
}

void Authenticator::ForgetToken(int64_t token_id) {
  std::lock_guard lock(mu_);
  std::erase_if(cache_, [&](const auto& entry) { return entry.second.found.token.id == token_id; });
}

}  // namespace isoguard::service
