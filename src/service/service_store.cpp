// The names of the service's enums, the checks every backend makes before it writes, and
// OpenServiceStore: the one place that maps a store URL to a service store backend.
#include "service/service_store.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>

#include "service/postgres_service_store.h"
#include "service/sqlite_service_store.h"
#include "store/entry_codec.h"

namespace isoguard::service {

std::string_view ToString(Role role) {
  switch (role) {
    case Role::kPrescriber:
      return "prescriber";
    case Role::kClinicStaff:
      return "clinic_staff";
    case Role::kPharmacist:
      return "pharmacist";
    case Role::kPatient:
      return "patient";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

std::optional<Role> ParseRole(std::string_view text) {
  for (Role r :
       {Role::kPrescriber, Role::kClinicStaff, Role::kPharmacist, Role::kPatient, Role::kAdmin}) {
    if (ToString(r) == text) return r;
  }
  return std::nullopt;
}

std::string_view ToString(OrgKind kind) {
  switch (kind) {
    case OrgKind::kClinic:
      return "clinic";
    case OrgKind::kPharmacy:
      return "pharmacy";
    case OrgKind::kProgram:
      return "program";
  }
  return "unknown";
}

std::optional<OrgKind> ParseOrgKind(std::string_view text) {
  for (OrgKind k : {OrgKind::kClinic, OrgKind::kPharmacy, OrgKind::kProgram}) {
    if (ToString(k) == text) return k;
  }
  return std::nullopt;
}

std::string_view ToString(AuthorizationStatus status) {
  switch (status) {
    case AuthorizationStatus::kOpen:
      return "open";
    case AuthorizationStatus::kDispensed:
      return "dispensed";
    case AuthorizationStatus::kReversed:
      return "reversed";
  }
  return "unknown";
}

std::optional<AuthorizationStatus> ParseAuthorizationStatus(std::string_view text) {
  for (AuthorizationStatus s : {AuthorizationStatus::kOpen, AuthorizationStatus::kDispensed,
                                AuthorizationStatus::kReversed}) {
    if (ToString(s) == text) return s;
  }
  return std::nullopt;
}

// ---- The checks shared by the backends

namespace detail {
namespace {

// A check list: the first failure wins.
class Checks {
 public:
  explicit Checks(std::string prefix = {}) : prefix_(std::move(prefix)) {}
  Checks& Id(std::string_view field, const std::string& value, bool required = true) {
    if (failure_) return *this;
    if (required && value.empty()) {
      failure_ = Error::BadInput("must not be empty", prefix_ + std::string(field));
    } else if (value.size() > kMaxIdBytes) {
      failure_ = Error::BadInput("is " + std::to_string(value.size()) + " bytes, more than the " +
                                     std::to_string(kMaxIdBytes) + " an id may have",
                                 prefix_ + std::string(field));
    }
    return *this;
  }
  Checks& Text(std::string_view field, const std::string& value, bool required = false) {
    if (failure_) return *this;
    if (required && value.empty()) {
      failure_ = Error::BadInput("must not be empty", prefix_ + std::string(field));
    } else if (value.size() > kMaxTextBytes) {
      failure_ = Error::BadInput("is " + std::to_string(value.size()) + " bytes, more than the " +
                                     std::to_string(kMaxTextBytes) + " a text may have",
                                 prefix_ + std::string(field));
    }
    return *this;
  }
  Checks& Finite(std::string_view field, double value) {
    if (!failure_ && !std::isfinite(value)) {
      failure_ = Error::BadInput("must be a finite number", prefix_ + std::string(field));
    }
    return *this;
  }
  Checks& That(bool ok, std::string_view field, std::string message) {
    if (!failure_ && !ok)
      failure_ = Error::BadInput(std::move(message), prefix_ + std::string(field));
    return *this;
  }
  Status Done() {
    if (failure_) return *failure_;
    return {};
  }

 private:
  std::string prefix_;
  std::optional<Error> failure_;
};

}  // namespace

size_t ClampLimit(size_t limit) { return std::min(limit, kMaxListLimit); }

Status CheckId(std::string_view field, const std::string& value) {
  return Checks().Id(field, value).Done();
}

Status CheckText(std::string_view field, const std::string& value) {
  return Checks().Text(field, value).Done();
}

Status CheckOrganisation(const Organisation& o) {
  return Checks()
      .Id("id", o.id)
      .Text("name", o.name)
      .Id("jurisdiction", o.jurisdiction, false)
      .Done();
}

Status CheckAccount(const Account& a) {
  return Checks()
      .Id("id", a.id)
      .Id("org_id", a.org_id)
      .Text("name", a.name)
      .Id("patient_id", a.patient_id, false)
      .Text("password_hash", a.password_hash)
      .Done();
}

Status CheckToken(const Token& t) {
  return Checks().Id("account_id", t.account_id).Id("kind", t.kind).Text("label", t.label).Done();
}

Status CheckCareLink(const CareLink& l) {
  return Checks()
      .Id("patient_id", l.patient_id)
      .Id("clinic_id", l.clinic_id)
      .Id("prescriber_id", l.prescriber_id, false)
      .Done();
}

}  // namespace detail

namespace {

// `text` with NUL and every byte that does not start or continue a well-formed UTF-8
// character as \xNN, cut to at most `max` bytes on a character boundary (ending in "...").
std::string Storable(std::string_view text, size_t max) {
  std::string out;
  out.reserve(std::min(text.size(), max));
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<uint8_t>(text[i]);
    size_t n = c < 0x80             ? 1
               : (c & 0xE0) == 0xC0 ? 2
               : (c & 0xF0) == 0xE0 ? 3
               : (c & 0xF8) == 0xF0 ? 4
                                    : 0;
    if (c == 0 || n == 0 || i + n > text.size() || !store::IsStorableText(text.substr(i, n))) {
      char escaped[5];
      std::snprintf(escaped, sizeof escaped, "\\x%02X", c);
      out += escaped;
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  if (out.size() <= max) return out;
  constexpr std::string_view kCut = "...";
  size_t end = max - kCut.size();
  while (end > 0 && (static_cast<uint8_t>(out[end]) & 0xC0) == 0x80) --end;  // a continuation
  out.resize(end);
  out += kCut;
  return out;
}

bool Fits(const std::string& value, size_t max) {
  return value.size() <= max && store::IsStorableText(value);
}

}  // namespace

void FitAuditRecord(AuditRecord& r) {
  if (!Fits(r.patient_id, kMaxIdBytes)) {
    const std::string note = "the patient id named was " + std::to_string(r.patient_id.size()) +
                             " bytes, not storable as is; recorded as escaped and cut";
    r.patient_id = Storable(r.patient_id, kMaxIdBytes);
    r.detail = r.detail.empty() ? note : note + "; " + r.detail;
  }
  for (std::string* id : {&r.actor_id, &r.actor_role, &r.org_id, &r.outcome}) {
    if (!Fits(*id, kMaxIdBytes)) *id = Storable(*id, kMaxIdBytes);
  }
  for (std::string* text : {&r.request_id, &r.source, &r.action, &r.detail}) {
    if (!Fits(*text, kMaxTextBytes)) *text = Storable(*text, kMaxTextBytes);
  }
}

namespace detail {

Status CheckAudit(const std::vector<AuditRecord>& records) {
  for (size_t i = 0; i < records.size(); ++i) {
    const AuditRecord& r = records[i];
    auto st = Checks("records[" + std::to_string(i) + "].")
                  .Text("request_id", r.request_id)
                  .Id("actor_id", r.actor_id, false)
                  .Id("actor_role", r.actor_role, false)
                  .Id("org_id", r.org_id, false)
                  .Text("source", r.source)
                  .Text("action", r.action)
                  .Id("patient_id", r.patient_id, false)
                  .Id("outcome", r.outcome, false)
                  .Text("detail", r.detail)
                  .Done();
    if (!st.ok()) return st;
  }
  return {};
}

Status CheckAuthorization(const AuthorizationRecord& a) {
  return Checks()
      .Id("id", a.id)
      .Id("patient_id", a.patient_id)
      .Id("prescription_id", a.prescription_id, false)
      .Id("pharmacy_id", a.pharmacy_id, false)
      .Id("pharmacist_id", a.pharmacist_id, false)
      .Id("closed_by", a.closed_by, false)
      .Id("lot_id", a.lot_id, false)
      .Done();
}

Status CheckNotification(const Notification& n) {
  return Checks()
      .Id("recipient_id", n.recipient_id)
      .Id("patient_id", n.patient_id, false)
      .Id("kind", n.kind)
      .Id("severity", n.severity, false)
      .Text("message", n.message)
      .Text("dedupe_key", n.dedupe_key)
      .Done();
}

Status CheckWebhook(const Webhook& w) {
  return Checks().Id("org_id", w.org_id).Text("url", w.url, true).Text("secret", w.secret).Done();
}

Status CheckPregnancyReport(const PregnancyReport& r) {
  return Checks()
      .Id("patient_id", r.patient_id)
      .Id("event_id", r.event_id)
      .Id("program_id", r.program_id, false)
      .Id("clinic_id", r.clinic_id, false)
      .Done();
}

Status CheckLot(const Lot& l) {
  return Checks()
      .Id("id", l.id)
      .Id("pharmacy_id", l.pharmacy_id)
      .Id("product", l.product)
      .Finite("strength_mg", l.strength_mg)
      .That(l.strength_mg >= 0, "strength_mg", "must not be negative")
      .Text("lot_number", l.lot_number)
      .Text("location", l.location)
      .That(l.quantity_capsules >= 0, "quantity_capsules", "must not be negative")
      .Text("quarantine_reason", l.quarantine_reason)
      .Done();
}

Status CheckReading(const TemperatureReading& r, const StorageRange& range) {
  return Checks()
      .Id("pharmacy_id", r.pharmacy_id)
      .Text("location", r.location)
      .Finite("celsius", r.celsius)
      .Id("recorded_by", r.recorded_by, false)
      .Finite("range.min_celsius", range.min_celsius)
      .Finite("range.max_celsius", range.max_celsius)
      .That(range.min_celsius <= range.max_celsius, "range",
            "the minimum must not be above the maximum")
      .Done();
}

}  // namespace detail

// ---- The store, written once over detail::SqlDatabase

namespace detail {
namespace {

int64_t Ms(Instant t) { return t.time_since_epoch().count(); }
Instant FromMs(int64_t ms) { return Instant(std::chrono::milliseconds(ms)); }

// Parameters, in order.
class P {
 public:
  P& I(int64_t v) {
    Cell& c = v_.emplace_back();
    c.type = Cell::Type::kInt;
    c.i = v;
    return *this;
  }
  P& D(double v) {
    Cell& c = v_.emplace_back();
    c.type = Cell::Type::kDouble;
    c.d = v;
    return *this;
  }
  P& T(std::string_view v) {
    Cell& c = v_.emplace_back();
    c.type = Cell::Type::kText;
    c.s = v;
    return *this;
  }
  P& B(std::string_view v) {
    T(v);
    v_.back().blob = true;
    return *this;
  }
  P& Null() {
    v_.emplace_back();
    return *this;
  }
  P& OptText(const std::string& v) { return v.empty() ? Null() : T(v); }
  P& OptMs(const std::optional<Instant>& t) { return t ? I(Ms(*t)) : Null(); }
  const std::vector<Cell>& get() const { return v_; }

 private:
  std::vector<Cell> v_;
};

// Reads the columns of one row in order.
class R {
 public:
  R(const Rows& rows, size_t row) : row_(rows.rows[row]) {}
  int64_t I() {
    const Cell& c = Next();
    if (c.type == Cell::Type::kDouble) return static_cast<int64_t>(c.d);
    if (c.type == Cell::Type::kText) return std::strtoll(c.s.c_str(), nullptr, 10);
    return c.i;
  }
  double D() {
    const Cell& c = Next();
    if (c.type == Cell::Type::kInt) return static_cast<double>(c.i);
    if (c.type == Cell::Type::kText) return std::strtod(c.s.c_str(), nullptr);
    return c.d;
  }
  std::string T() {
    const Cell& c = Next();
    if (c.type == Cell::Type::kInt) return std::to_string(c.i);
    return c.s;
  }
  Instant Ms() { return FromMs(I()); }
  std::optional<Instant> OptMs() {
    if (row_.at(at_).type == Cell::Type::kNull) {
      ++at_;
      return std::nullopt;
    }
    return Ms();
  }
  bool B() { return I() != 0; }

 private:
  const Cell& Next() { return row_.at(at_++); }
  const std::vector<Cell>& row_;
  size_t at_ = 0;
};

// The columns of each table, in the order the readers below take them.
constexpr const char* kOrgCols = "id, kind, name, jurisdiction, created_at_ms";
constexpr const char* kAccountCols =
    "id, org_id, role, name, patient_id, password_hash, disabled, created_at_ms";
constexpr const char* kTokenCols =
    "id, hash, account_id, kind, label, created_at_ms, expires_at_ms, revoked_at_ms";
constexpr const char* kLinkCols = "patient_id, clinic_id, prescriber_id, since_ms";
constexpr const char* kAuditCols =
    "id, at_ms, request_id, actor_id, actor_role, org_id, source, action, patient_id, outcome, "
    "status, detail";
constexpr const char* kAuthCols =
    "id, patient_id, prescription_id, pharmacy_id, pharmacist_id, created_at_ms, dispense_by_ms, "
    "status, closed_at_ms, closed_by, lot_id";
constexpr const char* kNoteCols =
    "id, recipient_id, patient_id, kind, severity, message, dedupe_key, created_at_ms, read_at_ms";
constexpr const char* kHookCols = "id, org_id, url, secret, created_at_ms";
constexpr const char* kDeliveryCols =
    "id, webhook_id, notification_id, attempts, next_attempt_at_ms, delivered_at_ms, last_error";
constexpr const char* kReportCols =
    "id, patient_id, event_id, program_id, clinic_id, reported_at_ms";
constexpr const char* kLotCols =
    "id, pharmacy_id, product, strength_mg, lot_number, expiry_days, location, "
    "quantity_capsules, received_at_ms, quarantined, quarantine_reason";
constexpr const char* kReadingCols = "id, pharmacy_id, location, at_ms, celsius, recorded_by";
constexpr const char* kQuarantineCols = "id, lot_id, action, reason, at_ms, by_id";

std::string Select(const char* cols, std::string_view rest) {
  return std::string("SELECT ") + cols + " " + std::string(rest);
}

Result<Organisation> ReadOrg(R r) {
  Organisation o;
  o.id = r.T();
  const std::string kind = r.T();
  auto parsed = ParseOrgKind(kind);
  if (!parsed) return Error::Internal("a stored organisation has the unknown kind " + kind);
  o.kind = *parsed;
  o.name = r.T();
  o.jurisdiction = r.T();
  o.created_at = r.Ms();
  return o;
}

Result<Account> ReadAccount(R r) {
  Account a;
  a.id = r.T();
  a.org_id = r.T();
  const std::string role = r.T();
  auto parsed = ParseRole(role);
  if (!parsed) return Error::Internal("a stored account has the unknown role " + role);
  a.role = *parsed;
  a.name = r.T();
  a.patient_id = r.T();
  a.password_hash = r.T();
  a.disabled = r.B();
  a.created_at = r.Ms();
  return a;
}

Result<Token> ReadToken(R& r) {
  Token t;
  t.id = r.I();
  const std::string hash = r.T();
  if (hash.size() != t.hash.size()) {
    return Error::Internal("a stored token hash is " + std::to_string(hash.size()) + " bytes");
  }
  std::memcpy(t.hash.data(), hash.data(), hash.size());
  t.account_id = r.T();
  t.kind = r.T();
  t.label = r.T();
  t.created_at = r.Ms();
  t.expires_at = r.Ms();
  t.revoked_at = r.OptMs();
  return t;
}

CareLink ReadLink(R r) {
  CareLink l;
  l.patient_id = r.T();
  l.clinic_id = r.T();
  l.prescriber_id = r.T();
  l.since = r.Ms();
  return l;
}

AuditRecord ReadAudit(R r) {
  AuditRecord a;
  a.id = r.I();
  a.at = r.Ms();
  a.request_id = r.T();
  a.actor_id = r.T();
  a.actor_role = r.T();
  a.org_id = r.T();
  a.source = r.T();
  a.action = r.T();
  a.patient_id = r.T();
  a.outcome = r.T();
  a.status = static_cast<int>(r.I());
  a.detail = r.T();
  return a;
}

Result<AuthorizationRecord> ReadAuth(R r) {
  AuthorizationRecord a;
  a.id = r.T();
  a.patient_id = r.T();
  a.prescription_id = r.T();
  a.pharmacy_id = r.T();
  a.pharmacist_id = r.T();
  a.created_at = r.Ms();
  a.dispense_by = r.Ms();
  const std::string status = r.T();
  auto parsed = ParseAuthorizationStatus(status);
  if (!parsed) return Error::Internal("a stored authorization has the unknown status " + status);
  a.status = *parsed;
  a.closed_at = r.OptMs();
  a.closed_by = r.T();
  a.lot_id = r.T();
  return a;
}

Notification ReadNote(R r) {
  Notification n;
  n.id = r.I();
  n.recipient_id = r.T();
  n.patient_id = r.T();
  n.kind = r.T();
  n.severity = r.T();
  n.message = r.T();
  n.dedupe_key = r.T();
  n.created_at = r.Ms();
  n.read_at = r.OptMs();
  return n;
}

Webhook ReadHook(R r) {
  Webhook w;
  w.id = r.I();
  w.org_id = r.T();
  w.url = r.T();
  w.secret = r.T();
  w.created_at = r.Ms();
  return w;
}

Delivery ReadDelivery(R r) {
  Delivery d;
  d.id = r.I();
  d.webhook_id = r.I();
  d.notification_id = r.I();
  d.attempts = static_cast<int>(r.I());
  d.next_attempt_at = r.Ms();
  d.delivered_at = r.OptMs();
  d.last_error = r.T();
  return d;
}

PregnancyReport ReadReport(R r) {
  PregnancyReport p;
  p.id = r.I();
  p.patient_id = r.T();
  p.event_id = r.T();
  p.program_id = r.T();
  p.clinic_id = r.T();
  p.reported_at = r.Ms();
  return p;
}

Lot ReadLot(R r) {
  Lot l;
  l.id = r.T();
  l.pharmacy_id = r.T();
  l.product = r.T();
  l.strength_mg = r.D();
  l.lot_number = r.T();
  l.expiry = LocalDate(static_cast<int32_t>(r.I()));
  l.location = r.T();
  l.quantity_capsules = r.I();
  l.received_at = r.Ms();
  l.quarantined = r.B();
  l.quarantine_reason = r.T();
  return l;
}

TemperatureReading ReadReading(R r) {
  TemperatureReading t;
  t.id = r.I();
  t.pharmacy_id = r.T();
  t.location = r.T();
  t.at = r.Ms();
  t.celsius = r.D();
  t.recorded_by = r.T();
  return t;
}

QuarantineEvent ReadQuarantine(R r) {
  QuarantineEvent q;
  q.id = r.I();
  q.lot_id = r.T();
  q.action = r.T();
  q.reason = r.T();
  q.at = r.Ms();
  q.by = r.T();
  return q;
}

// Reads every row with `read` (a function of R giving a T or a Result<T>).
template <typename T, typename F>
Status ReadAll(const Rows& rows, F read, std::vector<T>& out) {
  out.clear();
  out.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    auto v = read(R(rows, i));
    if constexpr (std::is_same_v<decltype(v), T>) {
      out.push_back(std::move(v));
    } else {
      if (!v.ok()) return v.error();
      out.push_back(std::move(*v));
    }
  }
  return {};
}

// `e` with a message that names what clashed (kConflict) or was missing (kNotFound).
Error Explain(Error e, const std::string& conflict, std::string conflict_field,
              const std::string& missing = {}, std::string missing_field = {}) {
  if (e.kind == ErrorKind::kConflict && !conflict.empty()) {
    return Error::Conflict(conflict, std::move(conflict_field));
  }
  if (e.kind == ErrorKind::kNotFound && !missing.empty()) {
    return Error::NotFound(missing, std::move(missing_field));
  }
  return e;
}

// The List* queries (ListQueries gives them to the tests' plan checks).
const std::string kListAccounts =
    Select(kAccountCols, "FROM svc_accounts WHERE org_id = ? ORDER BY id");
const std::string kListTokens =
    Select(kTokenCols, "FROM svc_tokens WHERE account_id = ? ORDER BY id");
const std::string kListClinicPatients =
    Select(kLinkCols,
           "FROM svc_care_links WHERE clinic_id = ? AND patient_id > ? ORDER BY patient_id "
           "LIMIT ?");
const std::string kListAuditAll =
    Select(kAuditCols, "FROM svc_audit WHERE id > ? ORDER BY id LIMIT ?");
const std::string kListAuditPatient =
    Select(kAuditCols, "FROM svc_audit WHERE patient_id = ? AND id > ? ORDER BY id LIMIT ?");
const std::string kListAuditActor =
    Select(kAuditCols, "FROM svc_audit WHERE actor_id = ? AND id > ? ORDER BY id LIMIT ?");
const std::string kListAuditBoth =
    Select(kAuditCols,
           "FROM svc_audit WHERE patient_id = ? AND actor_id = ? AND id > ? ORDER BY id LIMIT ?");
const std::string kListOpenAuths =
    Select(kAuthCols,
           "FROM svc_authorizations WHERE pharmacy_id = ? AND status = 'open' "
           "ORDER BY dispense_by_ms, id LIMIT ? OFFSET ?");
const std::string kListExpiredAuths =
    Select(kAuthCols,
           "FROM svc_authorizations WHERE status = 'open' AND dispense_by_ms <= ? "
           "ORDER BY dispense_by_ms, id LIMIT ?");
const std::string kListPatientAuths = Select(
    kAuthCols,
    "FROM svc_authorizations WHERE patient_id = ? AND status = 'open' ORDER BY dispense_by_ms, id");
const std::string kListNotes = Select(
    kNoteCols, "FROM svc_notifications WHERE recipient_id = ? AND id > ? ORDER BY id LIMIT ?");
const std::string kListUnreadNotes =
    Select(kNoteCols,
           "FROM svc_notifications WHERE recipient_id = ? AND id > ? AND read_at_ms IS NULL "
           "ORDER BY id LIMIT ?");
const std::string kListHooks = Select(kHookCols, "FROM svc_webhooks WHERE org_id = ? ORDER BY id");
const std::string kDueDeliveries =
    Select(kDeliveryCols,
           "FROM svc_deliveries WHERE delivered_at_ms IS NULL AND next_attempt_at_ms <= ? "
           "ORDER BY next_attempt_at_ms, id LIMIT ?");
const std::string kListReports =
    Select(kReportCols, "FROM svc_pregnancy_reports WHERE id > ? ORDER BY id LIMIT ?");
const std::string kListLots = Select(kLotCols, "FROM svc_lots WHERE pharmacy_id = ? ORDER BY id");
const std::string kListReadings =
    Select(kReadingCols,
           "FROM svc_temperature_readings WHERE pharmacy_id = ? AND id > ? ORDER BY id LIMIT ?");
const std::string kListQuarantine =
    Select(kQuarantineCols, "FROM svc_quarantine_events WHERE lot_id = ? ORDER BY id");

std::string Celsius(double c) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", c);
  return buf;
}

int64_t Limit(size_t limit) { return static_cast<int64_t>(ClampLimit(limit)); }

class SqlServiceStore final : public ServiceStore {
 public:
  explicit SqlServiceStore(std::unique_ptr<SqlDatabase> db) : db_(std::move(db)) {}

  Status Write(const std::function<Status(SqlTx&)>& fn) { return db_->Run(true, fn); }
  Status WriteRelaxed(const std::function<Status(SqlTx&)>& fn) { return db_->RunRelaxed(fn); }
  Status Read(const std::function<Status(SqlTx&)>& fn) { return db_->Run(false, fn); }

  // ---- Organisations

  Status CreateOrganisation(const Organisation& org) override {
    if (auto st = CheckOrganisation(org); !st.ok()) return st;
    return Write([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "INSERT INTO svc_organisations (id, kind, name, jurisdiction, created_at_ms) "
          "VALUES (?, ?, ?, ?, ?)",
          P().T(org.id)
              .T(ToString(org.kind))
              .T(org.name)
              .T(org.jurisdiction)
              .I(Ms(org.created_at))
              .get());
      if (!r.ok()) return Explain(r.error(), "the organisation " + org.id + " exists", "id");
      return {};
    });
  }

  Result<Organisation> GetOrganisation(const std::string& id) override {
    std::optional<Organisation> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(Select(kOrgCols, "FROM svc_organisations WHERE id = ?"), P().T(id).get());
      if (!r.ok()) return r.error();
      if (r->empty()) return Error::NotFound("no organisation " + id, "org_id");
      auto o = ReadOrg(R(*r, 0));
      if (!o.ok()) return o.error();
      out = std::move(*o);
      return {};
    });
    if (!st.ok()) return st.error();
    return std::move(*out);
  }

  Result<std::vector<Organisation>> ListOrganisations() override {
    std::vector<Organisation> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(Select(kOrgCols, "FROM svc_organisations ORDER BY id"), {});
      if (!r.ok()) return r.error();
      return ReadAll(*r, ReadOrg, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  // ---- Accounts

  Status CreateAccount(const Account& a) override {
    if (auto st = CheckAccount(a); !st.ok()) return st;
    return Write([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "INSERT INTO svc_accounts (id, org_id, role, name, patient_id, password_hash, disabled, "
          "created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
          P().T(a.id)
              .T(a.org_id)
              .T(ToString(a.role))
              .T(a.name)
              .T(a.patient_id)
              .T(a.password_hash)
              .I(a.disabled ? 1 : 0)
              .I(Ms(a.created_at))
              .get());
      if (!r.ok()) {
        return Explain(r.error(), "the account " + a.id + " exists", "id",
                       "no organisation " + a.org_id, "org_id");
      }
      return {};
    });
  }

  Result<Account> GetAccount(const std::string& id) override {
    std::optional<Account> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(Select(kAccountCols, "FROM svc_accounts WHERE id = ?"), P().T(id).get());
      if (!r.ok()) return r.error();
      if (r->empty()) return Error::NotFound("no account " + id, "account_id");
      auto a = ReadAccount(R(*r, 0));
      if (!a.ok()) return a.error();
      out = std::move(*a);
      return {};
    });
    if (!st.ok()) return st.error();
    return std::move(*out);
  }

  Result<std::vector<Account>> ListAccounts(const std::string& org_id) override {
    std::vector<Account> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto org = tx.Query("SELECT 1 FROM svc_organisations WHERE id = ?", P().T(org_id).get());
      if (!org.ok()) return org.error();
      if (org->empty()) return Error::NotFound("no organisation " + org_id, "org_id");
      auto r = tx.Query(kListAccounts, P().T(org_id).get());
      if (!r.ok()) return r.error();
      return ReadAll(*r, ReadAccount, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Status UpdateAccount(const std::string& id, const std::string& sql, const P& p) {
    return Write([&](SqlTx& tx) -> Status {
      auto r = tx.Query(sql, p.get());
      if (!r.ok()) return r.error();
      if (r->affected == 0) return Error::NotFound("no account " + id, "account_id");
      return {};
    });
  }

  Status SetAccountDisabled(const std::string& id, bool disabled) override {
    return UpdateAccount(id, "UPDATE svc_accounts SET disabled = ? WHERE id = ?",
                         P().I(disabled ? 1 : 0).T(id));
  }

  Status SetPasswordHash(const std::string& id, const std::string& password_hash) override {
    if (auto st = CheckText("password_hash", password_hash); !st.ok()) return st;
    return UpdateAccount(id, "UPDATE svc_accounts SET password_hash = ? WHERE id = ?",
                         P().T(password_hash).T(id));
  }

  // ---- Tokens

  Result<int64_t> InsertToken(const Token& t) override {
    if (auto st = CheckToken(t); !st.ok()) return st.error();
    int64_t id = 0;
    auto st = Write([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "INSERT INTO svc_tokens (hash, account_id, kind, label, created_at_ms, expires_at_ms, "
          "revoked_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
          P().B({reinterpret_cast<const char*>(t.hash.data()), t.hash.size()})
              .T(t.account_id)
              .T(t.kind)
              .T(t.label)
              .I(Ms(t.created_at))
              .I(Ms(t.expires_at))
              .OptMs(t.revoked_at)
              .get());
      if (!r.ok()) {
        return Explain(r.error(), "a token with this hash exists", "hash",
                       "no account " + t.account_id, "account_id");
      }
      if (r->empty()) return Error::Internal("inserting a token gave no id");
      id = R(*r, 0).I();
      return {};
    });
    if (!st.ok()) return st.error();
    return id;
  }

  Result<TokenAndAccount> FindToken(const TokenHash& hash) override {
    std::optional<TokenAndAccount> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "SELECT t.id, t.hash, t.account_id, t.kind, t.label, t.created_at_ms, t.expires_at_ms, "
          "t.revoked_at_ms, a.id, a.org_id, a.role, a.name, a.patient_id, a.password_hash, "
          "a.disabled, a.created_at_ms FROM svc_tokens t JOIN svc_accounts a ON a.id = "
          "t.account_id WHERE t.hash = ?",
          P().B({reinterpret_cast<const char*>(hash.data()), hash.size()}).get());
      if (!r.ok()) return r.error();
      if (r->empty()) return Error::NotFound("no such token", "token");
      R row(*r, 0);
      auto token = ReadToken(row);
      if (!token.ok()) return token.error();
      auto account = ReadAccount(row);
      if (!account.ok()) return account.error();
      out = TokenAndAccount{std::move(*token), std::move(*account)};
      return {};
    });
    if (!st.ok()) return st.error();
    return std::move(*out);
  }

  Status RevokeToken(int64_t token_id, Instant at) override {
    return Write([&](SqlTx& tx) -> Status {
      auto r =
          tx.Query("UPDATE svc_tokens SET revoked_at_ms = coalesce(revoked_at_ms, ?) WHERE id = ?",
                   P().I(Ms(at)).I(token_id).get());
      if (!r.ok()) return r.error();
      if (r->affected == 0)
        return Error::NotFound("no token " + std::to_string(token_id), "token_id");
      return {};
    });
  }

  Result<std::vector<Token>> ListTokens(const std::string& account_id) override {
    std::vector<Token> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(kListTokens, P().T(account_id).get());
      if (!r.ok()) return r.error();
      return ReadAll(
          *r, [](R row) { return ReadToken(row); }, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  // ---- Care

  Status LinkPatient(const CareLink& l) override {
    if (auto st = CheckCareLink(l); !st.ok()) return st;
    return Write([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "INSERT INTO svc_care_links (patient_id, clinic_id, prescriber_id, since_ms) "
          "VALUES (?, ?, ?, ?) ON CONFLICT (patient_id) DO NOTHING",
          P().T(l.patient_id).T(l.clinic_id).T(l.prescriber_id).I(Ms(l.since)).get());
      if (!r.ok()) return Explain(r.error(), "", "", "no organisation " + l.clinic_id, "clinic_id");
      if (r->affected == 1) return {};
      auto found = tx.Query("SELECT clinic_id FROM svc_care_links WHERE patient_id = ?",
                            P().T(l.patient_id).get());
      if (!found.ok()) return found.error();
      if (found->empty()) return Error::Internal("a care link vanished");
      const std::string clinic = R(*found, 0).T();
      if (clinic != l.clinic_id) {
        return Error::Conflict(
            "the patient " + l.patient_id + " is linked to another clinic (" + clinic + ")",
            "clinic_id");
      }
      return {};
    });
  }

  Result<int64_t> LinkNewPatients(const std::vector<CareLink>& links) override {
    for (const CareLink& l : links) {
      if (auto st = CheckCareLink(l); !st.ok()) return st.error();
    }
    int64_t linked = 0;
    auto st = Write([&](SqlTx& tx) -> Status {
      linked = 0;
      for (const CareLink& l : links) {
        auto r = tx.Query(
            "INSERT INTO svc_care_links (patient_id, clinic_id, prescriber_id, since_ms) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (patient_id) DO NOTHING",
            P().T(l.patient_id).T(l.clinic_id).T(l.prescriber_id).I(Ms(l.since)).get());
        if (!r.ok()) {
          return Explain(r.error(), "", "", "no organisation " + l.clinic_id, "clinic_id");
        }
        linked += r->affected == 1 ? 1 : 0;
      }
      return {};
    });
    if (!st.ok()) return st.error();
    return linked;
  }

  Result<std::optional<CareLink>> GetCareLink(const std::string& patient_id) override {
    std::optional<CareLink> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(Select(kLinkCols, "FROM svc_care_links WHERE patient_id = ?"),
                        P().T(patient_id).get());
      if (!r.ok()) return r.error();
      out.reset();
      if (!r->empty()) out = ReadLink(R(*r, 0));
      return {};
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Result<std::vector<CareLink>> ListClinicPatients(const std::string& clinic_id,
                                                   const std::string& after_patient_id,
                                                   size_t limit) override {
    std::vector<CareLink> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r =
          tx.Query(kListClinicPatients, P().T(clinic_id).T(after_patient_id).I(Limit(limit)).get());
      if (!r.ok()) return r.error();
      return ReadAll(*r, ReadLink, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  // ---- Audit

  Status AppendAudit(const std::vector<AuditRecord>& records) override {
    return AppendAuditIn(records, /*synced=*/true);
  }
  Status AppendAuditRelaxed(const std::vector<AuditRecord>& records) override {
    return AppendAuditIn(records, /*synced=*/false);
  }

  Status AppendAuditIn(const std::vector<AuditRecord>& records, bool synced) {
    if (auto st = CheckAudit(records); !st.ok()) return st;
    if (records.empty()) return {};
    auto append = [&](SqlTx& tx) -> Status {
      if (auto st = tx.SerializeAudit(); !st.ok()) return st;
      for (const AuditRecord& a : records) {
        auto r = tx.Query(
            "INSERT INTO svc_audit (at_ms, request_id, actor_id, actor_role, org_id, source, "
            "action, patient_id, outcome, status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            P().I(Ms(a.at))
                .T(a.request_id)
                .T(a.actor_id)
                .T(a.actor_role)
                .T(a.org_id)
                .T(a.source)
                .T(a.action)
                .T(a.patient_id)
                .T(a.outcome)
                .I(a.status)
                .T(a.detail)
                .get());
        if (!r.ok()) return r.error();
      }
      return {};
    };
    return synced ? Write(append) : WriteRelaxed(append);
  }

  Result<std::vector<AuditRecord>> ListAudit(const AuditFilter& f) override {
    std::vector<AuditRecord> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      P p;
      const std::string* sql = &kListAuditAll;
      if (!f.patient_id.empty() && !f.actor_id.empty()) {
        sql = &kListAuditBoth;
        p.T(f.patient_id).T(f.actor_id);
      } else if (!f.patient_id.empty()) {
        sql = &kListAuditPatient;
        p.T(f.patient_id);
      } else if (!f.actor_id.empty()) {
        sql = &kListAuditActor;
        p.T(f.actor_id);
      }
      p.I(f.after_id).I(Limit(f.limit));
      auto r = tx.Query(*sql, p.get());
      if (!r.ok()) return r.error();
      return ReadAll(*r, ReadAudit, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  // ---- Authorizations

  Status UpsertAuthorization(const AuthorizationRecord& a) override {
    if (auto st = CheckAuthorization(a); !st.ok()) return st;
    return WriteRelaxed([&](SqlTx& tx) -> Status { return UpsertIn(tx, a); });
  }

  Status ApplyAuthorizations(const std::vector<AuthorizationRecord>& upserts,
                             const std::string& cursor, int64_t position) override {
    for (const AuthorizationRecord& a : upserts) {
      if (auto st = CheckAuthorization(a); !st.ok()) return st;
    }
    if (auto st = CheckId("name", cursor); !st.ok()) return st;
    return WriteRelaxed([&](SqlTx& tx) -> Status {
      for (const AuthorizationRecord& a : upserts) {
        if (auto st = UpsertIn(tx, a); !st.ok()) return st;
      }
      auto r = tx.Query(
          "INSERT INTO svc_cursors (name, position) VALUES (?, ?) "
          "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
          P().T(cursor).I(position).get());
      if (!r.ok()) return r.error();
      return {};
    });
  }

  Status UpsertIn(SqlTx& tx, const AuthorizationRecord& a) {
    {
      auto r = tx.Query(
          "INSERT INTO svc_authorizations AS a (id, patient_id, prescription_id, pharmacy_id, "
          "pharmacist_id, created_at_ms, dispense_by_ms, status, closed_at_ms, closed_by, lot_id) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
          "status = excluded.status, closed_at_ms = excluded.closed_at_ms, "
          "closed_by = excluded.closed_by, lot_id = excluded.lot_id WHERE a.status = 'open'",
          P().T(a.id)
              .T(a.patient_id)
              .T(a.prescription_id)
              .T(a.pharmacy_id)
              .T(a.pharmacist_id)
              .I(Ms(a.created_at))
              .I(Ms(a.dispense_by))
              .T(ToString(a.status))
              .OptMs(a.closed_at)
              .T(a.closed_by)
              .T(a.lot_id)
              .get());
      if (!r.ok()) return r.error();
      return {};
    }
  }

  Result<std::optional<AuthorizationRecord>> GetAuthorization(const std::string& id) override {
    std::optional<AuthorizationRecord> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(Select(kAuthCols, "FROM svc_authorizations WHERE id = ?"), P().T(id).get());
      if (!r.ok()) return r.error();
      out.reset();
      if (r->empty()) return {};
      auto a = ReadAuth(R(*r, 0));
      if (!a.ok()) return a.error();
      out = std::move(*a);
      return {};
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Result<std::vector<AuthorizationRecord>> ListAuths(const std::string& sql, const P& p) {
    std::vector<AuthorizationRecord> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(sql, p.get());
      if (!r.ok()) return r.error();
      return ReadAll(*r, ReadAuth, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Result<std::vector<AuthorizationRecord>> ListOpenAuthorizations(const std::string& pharmacy_id,
                                                                  size_t limit,
                                                                  size_t offset) override {
    const int64_t off = static_cast<int64_t>(std::min<size_t>(offset, INT64_MAX));
    return ListAuths(kListOpenAuths, P().T(pharmacy_id).I(Limit(limit)).I(off));
  }

  Result<std::vector<AuthorizationRecord>> ListExpiredAuthorizations(Instant t,
                                                                     size_t limit) override {
    return ListAuths(kListExpiredAuths, P().I(Ms(t)).I(Limit(limit)));
  }

  Result<std::vector<AuthorizationRecord>> ListPatientAuthorizations(
      const std::string& patient_id) override {
    return ListAuths(kListPatientAuths, P().T(patient_id));
  }

  // ---- Cursors

  Result<int64_t> GetCursor(const std::string& name) override {
    int64_t out = 0;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query("SELECT position FROM svc_cursors WHERE name = ?", P().T(name).get());
      if (!r.ok()) return r.error();
      out = r->empty() ? 0 : R(*r, 0).I();
      return {};
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Status SetCursor(const std::string& name, int64_t position) override {
    if (auto st = CheckId("name", name); !st.ok()) return st;
    return WriteRelaxed([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "INSERT INTO svc_cursors (name, position) VALUES (?, ?) "
          "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
          P().T(name).I(position).get());
      if (!r.ok()) return r.error();
      return {};
    });
  }

  // ---- Notifications

  Result<Notification> InsertNotification(const Notification& n) override {
    if (auto st = CheckNotification(n); !st.ok()) return st.error();
    Notification out;
    auto st = WriteRelaxed([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "INSERT INTO svc_notifications (recipient_id, patient_id, kind, severity, message, "
          "dedupe_key, created_at_ms, read_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
          "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
          P().T(n.recipient_id)
              .T(n.patient_id)
              .T(n.kind)
              .T(n.severity)
              .T(n.message)
              .OptText(n.dedupe_key)
              .I(Ms(n.created_at))
              .OptMs(n.read_at)
              .get());
      if (!r.ok()) return r.error();
      if (r->empty()) {  // the key was used: the first one, and nothing queued again
        auto first = tx.Query(Select(kNoteCols, "FROM svc_notifications WHERE dedupe_key = ?"),
                              P().T(n.dedupe_key).get());
        if (!first.ok()) return first.error();
        if (first->empty()) return Error::Internal("a deduplicated notification vanished");
        out = ReadNote(R(*first, 0));
        return {};
      }
      out = n;
      out.id = R(*r, 0).I();
      auto queued = tx.Query(
          "INSERT INTO svc_deliveries (webhook_id, notification_id, attempts, next_attempt_at_ms) "
          "SELECT w.id, CAST(? AS BIGINT), 0, CAST(? AS BIGINT) FROM svc_webhooks w "
          "JOIN svc_accounts a ON a.org_id = w.org_id WHERE a.id = ? ORDER BY w.id",
          P().I(out.id).I(Ms(n.created_at)).T(n.recipient_id).get());
      if (!queued.ok()) return queued.error();
      return {};
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Result<std::vector<Notification>> ListNotifications(const std::string& recipient_id,
                                                      bool unread_only, int64_t after_id,
                                                      size_t limit) override {
    std::vector<Notification> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(unread_only ? kListUnreadNotes : kListNotes,
                        P().T(recipient_id).I(after_id).I(Limit(limit)).get());
      if (!r.ok()) return r.error();
      return ReadAll(*r, ReadNote, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Status MarkNotificationRead(int64_t id, const std::string& recipient_id, Instant at) override {
    return WriteRelaxed([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "UPDATE svc_notifications SET read_at_ms = coalesce(read_at_ms, ?) "
          "WHERE id = ? AND recipient_id = ?",
          P().I(Ms(at)).I(id).T(recipient_id).get());
      if (!r.ok()) return r.error();
      if (r->affected == 0) {
        return Error::NotFound("no notification " + std::to_string(id) + " for " + recipient_id,
                               "notification_id");
      }
      return {};
    });
  }

  Result<Notification> GetNotification(int64_t id) override {
    Notification out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(Select(kNoteCols, "FROM svc_notifications WHERE id = ?"), P().I(id).get());
      if (!r.ok()) return r.error();
      if (r->empty())
        return Error::NotFound("no notification " + std::to_string(id), "notification_id");
      out = ReadNote(R(*r, 0));
      return {};
    });
    if (!st.ok()) return st.error();
    return out;
  }

  // ---- Webhooks

  Result<int64_t> AddWebhook(const Webhook& w) override {
    if (auto st = CheckWebhook(w); !st.ok()) return st.error();
    int64_t id = 0;
    auto st = Write([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "INSERT INTO svc_webhooks (org_id, url, secret, created_at_ms) VALUES (?, ?, ?, ?) "
          "RETURNING id",
          P().T(w.org_id).T(w.url).T(w.secret).I(Ms(w.created_at)).get());
      if (!r.ok()) return Explain(r.error(), "", "", "no organisation " + w.org_id, "org_id");
      if (r->empty()) return Error::Internal("inserting a webhook gave no id");
      id = R(*r, 0).I();
      return {};
    });
    if (!st.ok()) return st.error();
    return id;
  }

  Result<std::vector<Webhook>> ListWebhooks(const std::string& org_id) override {
    std::vector<Webhook> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(kListHooks, P().T(org_id).get());
      if (!r.ok()) return r.error();
      return ReadAll(*r, ReadHook, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Result<Webhook> GetWebhook(int64_t id) override {
    Webhook out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(Select(kHookCols, "FROM svc_webhooks WHERE id = ?"), P().I(id).get());
      if (!r.ok()) return r.error();
      if (r->empty()) return Error::NotFound("no webhook " + std::to_string(id), "webhook_id");
      out = ReadHook(R(*r, 0));
      return {};
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Result<std::vector<Delivery>> DueDeliveries(Instant now, size_t limit) override {
    std::vector<Delivery> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(kDueDeliveries, P().I(Ms(now)).I(Limit(limit)).get());
      if (!r.ok()) return r.error();
      return ReadAll(*r, ReadDelivery, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Status UpdateDelivery(int64_t id, const std::string& sql, const P& p) {
    return WriteRelaxed([&](SqlTx& tx) -> Status {
      auto r = tx.Query(sql, p.get());
      if (!r.ok()) return r.error();
      if (r->affected == 0)
        return Error::NotFound("no delivery " + std::to_string(id), "delivery_id");
      return {};
    });
  }

  Status MarkDelivered(int64_t delivery_id, Instant at) override {
    return UpdateDelivery(
        delivery_id,
        "UPDATE svc_deliveries SET delivered_at_ms = coalesce(delivered_at_ms, ?) WHERE id = ?",
        P().I(Ms(at)).I(delivery_id));
  }

  Status MarkAttemptFailed(int64_t delivery_id, const std::string& error,
                           Instant next_attempt_at) override {
    if (auto st = CheckText("error", error); !st.ok()) return st;
    return UpdateDelivery(delivery_id,
                          "UPDATE svc_deliveries SET attempts = attempts + 1, last_error = ?, "
                          "next_attempt_at_ms = ? WHERE id = ?",
                          P().T(error).I(Ms(next_attempt_at)).I(delivery_id));
  }

  // ---- The pregnancy registry

  Result<PregnancyReport> FilePregnancyReport(const PregnancyReport& p) override {
    if (auto st = CheckPregnancyReport(p); !st.ok()) return st.error();
    PregnancyReport out;
    auto st = Write([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "INSERT INTO svc_pregnancy_reports (patient_id, event_id, program_id, clinic_id, "
          "reported_at_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING RETURNING id",
          P().T(p.patient_id)
              .T(p.event_id)
              .T(p.program_id)
              .T(p.clinic_id)
              .I(Ms(p.reported_at))
              .get());
      if (!r.ok()) return r.error();
      if (!r->empty()) {
        out = p;
        out.id = R(*r, 0).I();
        return {};
      }
      auto first = tx.Query(Select(kReportCols, "FROM svc_pregnancy_reports WHERE event_id = ?"),
                            P().T(p.event_id).get());
      if (!first.ok()) return first.error();
      if (first->empty()) return Error::Internal("a pregnancy report vanished");
      out = ReadReport(R(*first, 0));
      return {};
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Result<std::vector<PregnancyReport>> ListPregnancyReports(int64_t after_id,
                                                            size_t limit) override {
    std::vector<PregnancyReport> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(kListReports, P().I(after_id).I(Limit(limit)).get());
      if (!r.ok()) return r.error();
      return ReadAll(*r, ReadReport, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  // ---- Stock

  Status AddLot(const Lot& l) override {
    if (auto st = CheckLot(l); !st.ok()) return st;
    return Write([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "INSERT INTO svc_lots (id, pharmacy_id, product, strength_mg, lot_number, expiry_days, "
          "location, quantity_capsules, received_at_ms, quarantined, quarantine_reason) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
          P().T(l.id)
              .T(l.pharmacy_id)
              .T(l.product)
              .D(l.strength_mg)
              .T(l.lot_number)
              .I(l.expiry.days_since_epoch())
              .T(l.location)
              .I(l.quantity_capsules)
              .I(Ms(l.received_at))
              .I(l.quarantined ? 1 : 0)
              .T(l.quarantine_reason)
              .get());
      if (!r.ok()) {
        return Explain(r.error(), "the lot " + l.id + " exists", "id",
                       "no pharmacy " + l.pharmacy_id, "pharmacy_id");
      }
      return {};
    });
  }

  Result<Lot> GetLot(const std::string& id) override {
    Lot out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(Select(kLotCols, "FROM svc_lots WHERE id = ?"), P().T(id).get());
      if (!r.ok()) return r.error();
      if (r->empty()) return Error::NotFound("no lot " + id, "lot_id");
      out = ReadLot(R(*r, 0));
      return {};
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Result<std::vector<Lot>> ListLots(const std::string& pharmacy_id) override {
    std::vector<Lot> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(kListLots, P().T(pharmacy_id).get());
      if (!r.ok()) return r.error();
      return ReadAll(*r, ReadLot, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Status TakeFromLot(const std::string& lot_id, int64_t capsules) override {
    if (capsules <= 0) return Error::BadInput("must be more than 0", "capsules");
    return Write([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "UPDATE svc_lots SET quantity_capsules = quantity_capsules - ? "
          "WHERE id = ? AND quantity_capsules >= ?",
          P().I(capsules).T(lot_id).I(capsules).get());
      if (!r.ok()) return r.error();
      if (r->affected == 1) return {};
      auto left =
          tx.Query("SELECT quantity_capsules FROM svc_lots WHERE id = ?", P().T(lot_id).get());
      if (!left.ok()) return left.error();
      if (left->empty()) return Error::NotFound("no lot " + lot_id, "lot_id");
      return Error::BadInput("the lot " + lot_id + " has " + std::to_string(R(*left, 0).I()) +
                                 " capsules left, fewer than " + std::to_string(capsules),
                             "capsules");
    });
  }

  Result<TemperatureResult> RecordTemperature(const TemperatureReading& reading,
                                              const StorageRange& range) override {
    if (auto st = CheckReading(reading, range); !st.ok()) return st.error();
    TemperatureResult out;
    auto st = Write([&](SqlTx& tx) -> Status {
      out = TemperatureResult{};
      out.reading = reading;
      auto r = tx.Query(
          "INSERT INTO svc_temperature_readings (pharmacy_id, location, at_ms, celsius, "
          "recorded_by) VALUES (?, ?, ?, ?, ?) RETURNING id",
          P().T(reading.pharmacy_id)
              .T(reading.location)
              .I(Ms(reading.at))
              .D(reading.celsius)
              .T(reading.recorded_by)
              .get());
      if (!r.ok()) {
        return Explain(r.error(), "", "", "no pharmacy " + reading.pharmacy_id, "pharmacy_id");
      }
      if (r->empty()) return Error::Internal("inserting a reading gave no id");
      out.reading.id = R(*r, 0).I();
      out.excursion = reading.celsius < range.min_celsius || reading.celsius > range.max_celsius;
      if (!out.excursion) return {};
      const std::string reason = "temperature excursion: " + Celsius(reading.celsius) + " °C at " +
                                 reading.location + " (storage range " +
                                 Celsius(range.min_celsius) + " to " + Celsius(range.max_celsius) +
                                 " °C)";
      auto lots = tx.Query(
          "UPDATE svc_lots SET quarantined = TRUE, quarantine_reason = ? "
          "WHERE pharmacy_id = ? AND location = ? AND NOT quarantined RETURNING id",
          P().T(reason).T(reading.pharmacy_id).T(reading.location).get());
      if (!lots.ok()) return lots.error();
      for (size_t i = 0; i < lots->size(); ++i) out.quarantined_lot_ids.push_back(R(*lots, i).T());
      std::sort(out.quarantined_lot_ids.begin(), out.quarantined_lot_ids.end());
      for (const std::string& lot : out.quarantined_lot_ids) {
        auto e = tx.Query(
            "INSERT INTO svc_quarantine_events (lot_id, action, reason, at_ms, by_id) "
            "VALUES (?, 'quarantine', ?, ?, 'system')",
            P().T(lot).T(reason).I(Ms(reading.at)).get());
        if (!e.ok()) return e.error();
      }
      return {};
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Result<std::vector<TemperatureReading>> ListTemperatures(const std::string& pharmacy_id,
                                                           int64_t after_id,
                                                           size_t limit) override {
    std::vector<TemperatureReading> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(kListReadings, P().T(pharmacy_id).I(after_id).I(Limit(limit)).get());
      if (!r.ok()) return r.error();
      return ReadAll(*r, ReadReading, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Status ReleaseLot(const std::string& lot_id, const std::string& by, const std::string& reason,
                    Instant at) override {
    if (auto st = CheckId("by", by); !st.ok()) return st;
    if (auto st = CheckText("reason", reason); !st.ok()) return st;
    return Write([&](SqlTx& tx) -> Status {
      auto r = tx.Query(
          "UPDATE svc_lots SET quarantined = FALSE, quarantine_reason = '' "
          "WHERE id = ? AND quarantined",
          P().T(lot_id).get());
      if (!r.ok()) return r.error();
      if (r->affected == 0) {
        auto found = tx.Query("SELECT 1 FROM svc_lots WHERE id = ?", P().T(lot_id).get());
        if (!found.ok()) return found.error();
        if (found->empty()) return Error::NotFound("no lot " + lot_id, "lot_id");
        return Error::Conflict("the lot " + lot_id + " is not in quarantine", "lot_id");
      }
      auto e = tx.Query(
          "INSERT INTO svc_quarantine_events (lot_id, action, reason, at_ms, by_id) "
          "VALUES (?, 'release', ?, ?, ?)",
          P().T(lot_id).T(reason).I(Ms(at)).T(by).get());
      if (!e.ok()) return e.error();
      return {};
    });
  }

  Result<std::vector<QuarantineEvent>> ListQuarantineEvents(const std::string& lot_id) override {
    std::vector<QuarantineEvent> out;
    auto st = Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query(kListQuarantine, P().T(lot_id).get());
      if (!r.ok()) return r.error();
      return ReadAll(*r, ReadQuarantine, out);
    });
    if (!st.ok()) return st.error();
    return out;
  }

  Status Ping() override {
    return Read([&](SqlTx& tx) -> Status {
      auto r = tx.Query("SELECT 1", {});
      if (!r.ok()) return r.error();
      return {};
    });
  }

 private:
  std::unique_ptr<SqlDatabase> db_;
};

}  // namespace

std::unique_ptr<ServiceStore> MakeSqlServiceStore(std::unique_ptr<SqlDatabase> db) {
  return std::make_unique<SqlServiceStore>(std::move(db));
}

std::vector<std::string> ListQueries() {
  return {kListAccounts,     kListTokens,       kListClinicPatients, kListAuditAll,
          kListAuditPatient, kListAuditActor,   kListAuditBoth,      kListOpenAuths,
          kListExpiredAuths, kListPatientAuths, kListNotes,          kListUnreadNotes,
          kListHooks,        kDueDeliveries,    kListReports,        kListLots,
          kListReadings,     kListQuarantine};
}

}  // namespace detail

// ---- Opening

namespace {

bool IsPostgresUrl(std::string_view u) {
  return u.starts_with("postgresql://") || u.starts_with("postgres://");
}

}  // namespace

Result<std::unique_ptr<ServiceStore>> OpenServiceStore(const std::string& url) {
  if (IsPostgresUrl(url)) {
    auto store = PostgresServiceStore::Open(url);
    if (!store.ok()) return store.error();
    return std::unique_ptr<ServiceStore>(std::move(*store));
  }
  const std::string_view u = url;
  std::string path = url;
  if (u.starts_with("sqlite:")) path = url.substr(std::string_view("sqlite:").size());
  if (path.empty()) return Error::BadInput("names no database file", "db");
  if (path == ":memory:" || path.starts_with("file:")) {
    return Error::BadInput("the service store needs a database file path, not " + path, "db");
  }
  auto store = SqliteServiceStore::Open(path);
  if (!store.ok()) return store.error();
  return std::unique_ptr<ServiceStore>(std::move(*store));
}

}  // namespace isoguard::service
