// The service store's conformance suite: what both backends (SQLite beside the event store,
// PostgreSQL in the schema isoguard_service) must do, written against service_store.h alone
// and run once per backend, plus the checks that reach behind the store with raw SQL: the
// append-only triggers, a newer schema refused, and the query plans of the List* queries.
#include "service/service_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <thread>

#include "../store/postgres_backend.h"
#include "../store/store_test_support.h"
#include "service/sqlite_service_store.h"
#include "store/sqlite/sqlite_event_store.h"

namespace isoguard::service {
namespace {

using store::testing::Fails;
using store::testing::Ok;
using store::testing::TempDir;

// ---- The backends

struct ServiceBackend {
  std::string name;
  bool postgres = false;
};

std::ostream& operator<<(std::ostream& os, const ServiceBackend& b) { return os << b.name; }

// Raw SQL on a SQLite file, behind the store's back.
Status SqliteExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return Error::Internal("cannot open " + path);
  }
  sqlite3_busy_timeout(db, 5000);
  char* message = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message);
  std::string text = message != nullptr ? message : "";
  sqlite3_free(message);
  sqlite3_close(db);
  if (rc == SQLITE_OK) return {};
  return Error::Internal(text + " in: " + sql);
}

// Every row of a query, its columns joined by '|', rows by '\n'.
std::string SqliteRows(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK) {
      while (sqlite3_step(stmt) == SQLITE_ROW) {
        for (int c = 0; c < sqlite3_column_count(stmt); ++c) {
          const auto* t = sqlite3_column_text(stmt, c);
          out += (c > 0 ? "|" : "") + std::string(t ? reinterpret_cast<const char*>(t) : "");
        }
        out += "\n";
      }
    } else {
      out = std::string("error: ") + sqlite3_errmsg(db);
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return out;
}

Instant At(int64_t ms) { return Instant(std::chrono::milliseconds(ms)); }

// 2026-09-14T10:00:00.123Z and around.
constexpr int64_t kT0 = 1789380000123;

TokenHash HashOf(uint8_t seed) {
  TokenHash h{};
  for (size_t i = 0; i < h.size(); ++i) h[i] = static_cast<uint8_t>(seed * 31 + i);
  return h;
}

class ServiceStoreConformance : public ::testing::TestWithParam<ServiceBackend> {
 protected:
  void SetUp() override {
    if (GetParam().postgres) {
      if (!store::testing::PgUrlFile()) {
        GTEST_SKIP() << "no PostgreSQL cluster: set ISOGUARD_TEST_PG_URL_FILE";
      }
      url_ = store::testing::FreshPgDatabase();
    } else {
      path_ = dir_.File("isoguard.db");
      auto events = store::SqliteEventStore::Open(path_);
      ASSERT_TRUE(Ok(events));
      url_ = "sqlite:" + path_;
    }
    Reopen();
  }

  void Reopen() {
    store_.reset();
    auto opened = OpenServiceStore(url_);
    ASSERT_TRUE(Ok(opened));
    store_ = std::move(*opened);
  }

  ServiceStore& store() { return *store_; }
  bool postgres() const { return GetParam().postgres; }

  // A table's name on this backend ("audit": svc_audit or isoguard_service.audit).
  std::string Table(const std::string& name) const {
    return postgres() ? "isoguard_service." + name : "svc_" + name;
  }

  Status RawExec(const std::string& sql) {
    if (postgres()) {
      store::testing::RawPg db(url_);
      return db.Exec(sql);
    }
    return SqliteExec(path_, sql);
  }

  void MakeOrg(const std::string& id, OrgKind kind = OrgKind::kClinic) {
    Organisation o;
    o.id = id;
    o.kind = kind;
    o.name = "Org " + id;
    o.jurisdiction = "US";
    o.created_at = At(kT0);
    ASSERT_TRUE(Ok(store().CreateOrganisation(o)));
  }

  void MakeAccount(const std::string& id, const std::string& org, Role role = Role::kPrescriber) {
    Account a;
    a.id = id;
    a.org_id = org;
    a.role = role;
    a.name = "Account " + id;
    a.created_at = At(kT0);
    ASSERT_TRUE(Ok(store().CreateAccount(a)));
  }

  Lot MakeLot(const std::string& id, const std::string& pharmacy, const std::string& location,
              int64_t capsules = 100) {
    Lot l;
    l.id = id;
    l.pharmacy_id = pharmacy;
    l.product = "generic";
    l.strength_mg = 20;
    l.lot_number = "LN-" + id;
    l.expiry = LocalDate::FromYmd(2028, 1, 31);
    l.location = location;
    l.quantity_capsules = capsules;
    l.received_at = At(kT0);
    EXPECT_TRUE(Ok(store().AddLot(l)));
    return l;
  }

  AuthorizationRecord Auth(const std::string& id, const std::string& pharmacy, int64_t due_ms,
                           const std::string& patient = "p-1") {
    AuthorizationRecord a;
    a.id = id;
    a.patient_id = patient;
    a.prescription_id = "rx-" + id;
    a.pharmacy_id = pharmacy;
    a.pharmacist_id = "ph-1";
    a.created_at = At(kT0);
    a.dispense_by = At(due_ms);
    return a;
  }

  TempDir dir_;
  std::string path_;
  std::string url_;
  std::unique_ptr<ServiceStore> store_;
};

template <typename T>
::testing::AssertionResult Is(const Result<T>& r, ErrorKind kind) {
  if (r.ok()) return ::testing::AssertionFailure() << "succeeded";
  if (r.error().kind != kind) {
    return ::testing::AssertionFailure()
           << "kind " << static_cast<int>(r.error().kind) << ": " << r.error().ToString();
  }
  return ::testing::AssertionSuccess();
}

// ---- Enums

TEST_P(ServiceStoreConformance, EnumNamesRoundTrip) {
  for (Role r :
       {Role::kPrescriber, Role::kClinicStaff, Role::kPharmacist, Role::kPatient, Role::kAdmin}) {
    EXPECT_EQ(ParseRole(ToString(r)), r);
  }
  EXPECT_EQ(ToString(Role::kClinicStaff), "clinic_staff");
  EXPECT_FALSE(ParseRole("Prescriber"));
  for (OrgKind k : {OrgKind::kClinic, OrgKind::kPharmacy, OrgKind::kProgram}) {
    EXPECT_EQ(ParseOrgKind(ToString(k)), k);
  }
  EXPECT_FALSE(ParseOrgKind(""));
  EXPECT_EQ(ToString(AuthorizationStatus::kOpen), "open");
  EXPECT_EQ(ToString(AuthorizationStatus::kDispensed), "dispensed");
  EXPECT_EQ(ToString(AuthorizationStatus::kReversed), "reversed");
  EXPECT_TRUE(Ok(store().Ping()));
}

// ---- Organisations and accounts

TEST_P(ServiceStoreConformance, OrganisationsRoundTripAndConflict) {
  Organisation o{"clinic-1", OrgKind::kClinic, "Derm Clinic", "US", At(kT0)};
  ASSERT_TRUE(Ok(store().CreateOrganisation(o)));
  EXPECT_TRUE(Is(store().CreateOrganisation(o), ErrorKind::kConflict));
  ASSERT_TRUE(
      Ok(store().CreateOrganisation({"apo-1", OrgKind::kPharmacy, "Apo", "EU", At(kT0 + 1)})));
  auto got = store().GetOrganisation("clinic-1");
  ASSERT_TRUE(Ok(got));
  EXPECT_EQ(got->id, "clinic-1");
  EXPECT_EQ(got->kind, OrgKind::kClinic);
  EXPECT_EQ(got->name, "Derm Clinic");
  EXPECT_EQ(got->jurisdiction, "US");
  EXPECT_EQ(got->created_at, At(kT0));
  EXPECT_TRUE(Is(store().GetOrganisation("nope"), ErrorKind::kNotFound));
  auto all = store().ListOrganisations();
  ASSERT_TRUE(Ok(all));
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "apo-1");
  EXPECT_EQ((*all)[0].kind, OrgKind::kPharmacy);
  EXPECT_EQ((*all)[1].id, "clinic-1");
}

TEST_P(ServiceStoreConformance, AccountsRoundTripConflictAndNotFound) {
  MakeOrg("clinic-1");
  Account a;
  a.id = "dr-smith";
  a.org_id = "clinic-1";
  a.role = Role::kPrescriber;
  a.name = "Dr Smith";
  a.password_hash = "$argon2id$v=19$m=65536,t=2,p=1$abc$def";
  a.created_at = At(kT0 + 5);
  ASSERT_TRUE(Ok(store().CreateAccount(a)));
  EXPECT_TRUE(Is(store().CreateAccount(a), ErrorKind::kConflict));
  Account orphan = a;
  orphan.id = "dr-orphan";
  orphan.org_id = "no-such-org";
  EXPECT_TRUE(Fails(store().CreateAccount(orphan), ErrorKind::kNotFound, "org_id"));
  Account patient = a;
  patient.id = "pat-1";
  patient.role = Role::kPatient;
  patient.patient_id = "P-1";
  patient.password_hash.clear();
  ASSERT_TRUE(Ok(store().CreateAccount(patient)));

  auto got = store().GetAccount("dr-smith");
  ASSERT_TRUE(Ok(got));
  EXPECT_EQ(got->org_id, "clinic-1");
  EXPECT_EQ(got->role, Role::kPrescriber);
  EXPECT_EQ(got->name, "Dr Smith");
  EXPECT_EQ(got->password_hash, a.password_hash);
  EXPECT_FALSE(got->disabled);
  EXPECT_EQ(got->created_at, At(kT0 + 5));
  EXPECT_TRUE(Is(store().GetAccount("nobody"), ErrorKind::kNotFound));

  auto listed = store().ListAccounts("clinic-1");
  ASSERT_TRUE(Ok(listed));
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, "dr-smith");
  EXPECT_EQ((*listed)[1].id, "pat-1");
  EXPECT_EQ((*listed)[1].role, Role::kPatient);
  EXPECT_EQ((*listed)[1].patient_id, "P-1");
  EXPECT_TRUE(Is(store().ListAccounts("no-such-org"), ErrorKind::kNotFound));

  ASSERT_TRUE(Ok(store().SetAccountDisabled("dr-smith", true)));
  EXPECT_TRUE(store().GetAccount("dr-smith")->disabled);
  ASSERT_TRUE(Ok(store().SetAccountDisabled("dr-smith", false)));
  EXPECT_FALSE(store().GetAccount("dr-smith")->disabled);
  EXPECT_TRUE(Is(store().SetAccountDisabled("nobody", true), ErrorKind::kNotFound));
  ASSERT_TRUE(Ok(store().SetPasswordHash("dr-smith", "new-hash")));
  EXPECT_EQ(store().GetAccount("dr-smith")->password_hash, "new-hash");
  EXPECT_TRUE(Is(store().SetPasswordHash("nobody", "x"), ErrorKind::kNotFound));
}

// ---- Tokens

TEST_P(ServiceStoreConformance, TokensInsertFindRevokeAndList) {
  MakeOrg("clinic-1");
  MakeAccount("dr-smith", "clinic-1");
  Token t;
  t.hash = HashOf(1);
  t.account_id = "dr-smith";
  t.kind = "api";
  t.label = "the EHR bridge";
  t.created_at = At(kT0);
  t.expires_at = At(kT0 + 86'400'000);
  auto id = store().InsertToken(t);
  ASSERT_TRUE(Ok(id));
  EXPECT_GT(*id, 0);
  EXPECT_TRUE(Is(store().InsertToken(t), ErrorKind::kConflict));  // the same hash
  Token orphan = t;
  orphan.hash = HashOf(9);
  orphan.account_id = "nobody";
  EXPECT_TRUE(Fails(store().InsertToken(orphan), ErrorKind::kNotFound, "account_id"));
  Token second = t;
  second.hash = HashOf(2);
  second.kind = "session";
  auto id2 = store().InsertToken(second);
  ASSERT_TRUE(Ok(id2));
  EXPECT_GT(*id2, *id);

  auto found = store().FindToken(HashOf(1));
  ASSERT_TRUE(Ok(found));
  EXPECT_EQ(found->token.id, *id);
  EXPECT_EQ(found->token.hash, HashOf(1));
  EXPECT_EQ(found->token.kind, "api");
  EXPECT_EQ(found->token.label, "the EHR bridge");
  EXPECT_EQ(found->token.created_at, At(kT0));
  EXPECT_EQ(found->token.expires_at, At(kT0 + 86'400'000));
  EXPECT_FALSE(found->token.revoked_at);
  EXPECT_EQ(found->account.id, "dr-smith");
  EXPECT_EQ(found->account.org_id, "clinic-1");
  EXPECT_TRUE(Is(store().FindToken(HashOf(3)), ErrorKind::kNotFound));

  ASSERT_TRUE(Ok(store().RevokeToken(*id, At(kT0 + 10))));
  ASSERT_TRUE(Ok(store().RevokeToken(*id, At(kT0 + 20))));  // keeps the first time
  EXPECT_EQ(store().FindToken(HashOf(1))->token.revoked_at, At(kT0 + 10));
  EXPECT_TRUE(Is(store().RevokeToken(*id2 + 100, At(kT0)), ErrorKind::kNotFound));

  auto listed = store().ListTokens("dr-smith");
  ASSERT_TRUE(Ok(listed));
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, *id);
  EXPECT_EQ((*listed)[0].revoked_at, At(kT0 + 10));
  EXPECT_EQ((*listed)[1].id, *id2);
  EXPECT_EQ((*listed)[1].kind, "session");
  EXPECT_TRUE(store().ListTokens("nobody")->empty());
}

// ---- Care links

TEST_P(ServiceStoreConformance, LinkNewPatientsSkipsThoseInCareAlready) {
  MakeOrg("clinic-1");
  MakeOrg("clinic-2");
  ASSERT_TRUE(Ok(store().LinkPatient({"P-1", "clinic-2", "dr-jones", At(kT0)})));
  std::vector<CareLink> cohort;
  for (const char* p : {"P-1", "P-2", "P-3"})
    cohort.push_back({p, "clinic-1", "dr-smith", At(kT0)});
  auto linked = store().LinkNewPatients(cohort);
  ASSERT_TRUE(Ok(linked));
  EXPECT_EQ(*linked, 2);
  auto p1 = store().GetCareLink("P-1");
  ASSERT_TRUE(Ok(p1) && p1->has_value());
  EXPECT_EQ((*p1)->clinic_id, "clinic-2");  // already in care: unchanged
  auto again = store().LinkNewPatients(cohort);
  ASSERT_TRUE(Ok(again));
  EXPECT_EQ(*again, 0);
  // One bad link refuses the whole batch.
  cohort.push_back({"P-4", "no-clinic", "dr", At(kT0)});
  cohort.insert(cohort.begin(), CareLink{"P-5", "clinic-1", "dr-smith", At(kT0)});
  EXPECT_TRUE(Fails(store().LinkNewPatients(cohort), ErrorKind::kNotFound, "clinic_id"));
  auto p5 = store().GetCareLink("P-5");
  ASSERT_TRUE(Ok(p5));
  EXPECT_FALSE(p5->has_value());
}

TEST_P(ServiceStoreConformance, LinkPatientIsIdempotentForTheSameClinicOnly) {
  MakeOrg("clinic-1");
  MakeOrg("clinic-2");
  CareLink l{"P-1", "clinic-1", "dr-smith", At(kT0)};
  ASSERT_TRUE(Ok(store().LinkPatient(l)));
  ASSERT_TRUE(Ok(store().LinkPatient(l)));
  CareLink later = l;
  later.since = At(kT0 + 99);
  ASSERT_TRUE(Ok(store().LinkPatient(later)));  // the same clinic: nothing changes
  CareLink other{"P-1", "clinic-2", "dr-jones", At(kT0)};
  EXPECT_TRUE(Fails(store().LinkPatient(other), ErrorKind::kConflict, "clinic_id"));
  EXPECT_TRUE(Fails(store().LinkPatient({"P-9", "no-clinic", "dr", At(kT0)}), ErrorKind::kNotFound,
                    "clinic_id"));

  auto got = store().GetCareLink("P-1");
  ASSERT_TRUE(Ok(got));
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->clinic_id, "clinic-1");
  EXPECT_EQ((*got)->prescriber_id, "dr-smith");
  EXPECT_EQ((*got)->since, At(kT0));
  auto none = store().GetCareLink("P-404");
  ASSERT_TRUE(Ok(none));
  EXPECT_FALSE(none->has_value());

  for (const char* p : {"P-3", "P-2", "P-5", "P-4"}) {
    ASSERT_TRUE(Ok(store().LinkPatient({p, "clinic-1", "dr-smith", At(kT0)})));
  }
  ASSERT_TRUE(Ok(store().LinkPatient({"P-0", "clinic-2", "dr-jones", At(kT0)})));
  auto page = store().ListClinicPatients("clinic-1", "", 3);
  ASSERT_TRUE(Ok(page));
  ASSERT_EQ(page->size(), 3u);
  EXPECT_EQ((*page)[0].patient_id, "P-1");
  EXPECT_EQ((*page)[2].patient_id, "P-3");
  page = store().ListClinicPatients("clinic-1", "P-3", 3);
  ASSERT_TRUE(Ok(page));
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].patient_id, "P-4");
  EXPECT_EQ((*page)[1].patient_id, "P-5");
  EXPECT_TRUE(store().ListClinicPatients("clinic-1", "P-5", 3)->empty());
}

// ---- The audit

TEST_P(ServiceStoreConformance, AuditIdsIncreaseAndFiltersPage) {
  std::vector<AuditRecord> batch;
  for (int i = 0; i < 6; ++i) {
    AuditRecord r;
    r.at = At(kT0 + i);
    r.request_id = "req-" + std::to_string(i);
    r.actor_id = i % 2 == 0 ? "dr-a" : "dr-b";
    r.actor_role = "prescriber";
    r.org_id = "clinic-1";
    r.source = "203.0.113.7:51234";
    r.action = "GET /v1/patients/{patient_id}";
    r.patient_id = i < 3 ? "P-1" : "P-2";
    r.outcome = i == 5 ? "refused" : "ok";
    r.status = i == 5 ? 403 : 200;
    r.detail = "d" + std::to_string(i);
    batch.push_back(r);
  }
  ASSERT_TRUE(Ok(store().AppendAudit(batch)));
  ASSERT_TRUE(Ok(store().AppendAudit({})));
  ASSERT_TRUE(Ok(store().AppendAuditRelaxed({batch[0]})));  // committed, not synced: the same rows

  auto all = store().ListAudit({});
  ASSERT_TRUE(Ok(all));
  ASSERT_EQ(all->size(), 7u);
  for (size_t i = 1; i < all->size(); ++i) EXPECT_GT((*all)[i].id, (*all)[i - 1].id);
  const AuditRecord& last_of_batch = (*all)[5];
  EXPECT_EQ(last_of_batch.request_id, "req-5");
  EXPECT_EQ(last_of_batch.at, At(kT0 + 5));
  EXPECT_EQ(last_of_batch.actor_id, "dr-b");
  EXPECT_EQ(last_of_batch.actor_role, "prescriber");
  EXPECT_EQ(last_of_batch.org_id, "clinic-1");
  EXPECT_EQ(last_of_batch.source, "203.0.113.7:51234");
  EXPECT_EQ(last_of_batch.action, "GET /v1/patients/{patient_id}");
  EXPECT_EQ(last_of_batch.patient_id, "P-2");
  EXPECT_EQ(last_of_batch.outcome, "refused");
  EXPECT_EQ(last_of_batch.status, 403);
  EXPECT_EQ(last_of_batch.detail, "d5");
  EXPECT_EQ((*all)[6].request_id, "req-0");

  AuditFilter by_patient;
  by_patient.patient_id = "P-1";
  auto p1 = store().ListAudit(by_patient);
  ASSERT_TRUE(Ok(p1));
  EXPECT_EQ(p1->size(), 4u);
  AuditFilter by_actor;
  by_actor.actor_id = "dr-b";
  auto b = store().ListAudit(by_actor);
  ASSERT_TRUE(Ok(b));
  ASSERT_EQ(b->size(), 3u);
  for (const auto& r : *b) EXPECT_EQ(r.actor_id, "dr-b");
  AuditFilter both;
  both.patient_id = "P-2";
  both.actor_id = "dr-a";
  auto pb = store().ListAudit(both);
  ASSERT_TRUE(Ok(pb));
  ASSERT_EQ(pb->size(), 1u);
  EXPECT_EQ((*pb)[0].request_id, "req-4");

  AuditFilter page;
  page.limit = 2;
  auto first = store().ListAudit(page);
  ASSERT_TRUE(Ok(first));
  ASSERT_EQ(first->size(), 2u);
  page.after_id = (*first)[1].id;
  auto second = store().ListAudit(page);
  ASSERT_TRUE(Ok(second));
  ASSERT_EQ(second->size(), 2u);
  EXPECT_EQ((*second)[0].id, (*all)[2].id);
  page.after_id = (*all)[6].id;
  EXPECT_TRUE(store().ListAudit(page)->empty());
}

TEST_P(ServiceStoreConformance, AuditIdsFollowAppendOrderUnderConcurrency) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        AuditRecord r;
        r.at = At(kT0);
        r.actor_id = "t" + std::to_string(t);
        r.detail = std::to_string(i);
        EXPECT_TRUE(Ok(store().AppendAudit({r})));
      }
    });
  }
  for (auto& th : threads) th.join();
  AuditFilter f;
  f.limit = 1000;
  auto all = store().ListAudit(f);
  ASSERT_TRUE(Ok(all));
  ASSERT_EQ(all->size(), 40u);
  // Each thread's records in its own order.
  std::map<std::string, int> next;
  for (const auto& r : *all) EXPECT_EQ(std::to_string(next[r.actor_id]++), r.detail);
}

// ---- Authorizations

TEST_P(ServiceStoreConformance, UpsertAuthorizationNeverReopensNorRewritesTheFacts) {
  AuthorizationRecord a = Auth("A-1", "apo-1", kT0 + 1000);
  ASSERT_TRUE(Ok(store().UpsertAuthorization(a)));
  auto got = store().GetAuthorization("A-1");
  ASSERT_TRUE(Ok(got));
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->patient_id, "p-1");
  EXPECT_EQ((*got)->prescription_id, "rx-A-1");
  EXPECT_EQ((*got)->pharmacy_id, "apo-1");
  EXPECT_EQ((*got)->pharmacist_id, "ph-1");
  EXPECT_EQ((*got)->created_at, At(kT0));
  EXPECT_EQ((*got)->dispense_by, At(kT0 + 1000));
  EXPECT_EQ((*got)->status, AuthorizationStatus::kOpen);
  EXPECT_FALSE((*got)->closed_at);
  EXPECT_FALSE(store().GetAuthorization("A-404")->has_value());

  // Closing changes the closed fields only, whatever else the record says.
  AuthorizationRecord closing = a;
  closing.patient_id = "p-other";
  closing.prescription_id = "rx-other";
  closing.created_at = At(1);
  closing.dispense_by = At(2);
  closing.status = AuthorizationStatus::kDispensed;
  closing.closed_at = At(kT0 + 500);
  closing.closed_by = "ph-1";
  closing.lot_id = "LOT-7";
  ASSERT_TRUE(Ok(store().UpsertAuthorization(closing)));
  got = store().GetAuthorization("A-1");
  ASSERT_TRUE(Ok(got));
  EXPECT_EQ((*got)->patient_id, "p-1");
  EXPECT_EQ((*got)->prescription_id, "rx-A-1");
  EXPECT_EQ((*got)->created_at, At(kT0));
  EXPECT_EQ((*got)->dispense_by, At(kT0 + 1000));
  EXPECT_EQ((*got)->status, AuthorizationStatus::kDispensed);
  EXPECT_EQ((*got)->closed_at, At(kT0 + 500));
  EXPECT_EQ((*got)->closed_by, "ph-1");
  EXPECT_EQ((*got)->lot_id, "LOT-7");

  // Never reopened; a closed one stays as it was closed.
  ASSERT_TRUE(Ok(store().UpsertAuthorization(a)));
  AuthorizationRecord reversal = a;
  reversal.status = AuthorizationStatus::kReversed;
  reversal.closed_at = At(kT0 + 900);
  reversal.closed_by = "system";
  ASSERT_TRUE(Ok(store().UpsertAuthorization(reversal)));
  got = store().GetAuthorization("A-1");
  EXPECT_EQ((*got)->status, AuthorizationStatus::kDispensed);
  EXPECT_EQ((*got)->closed_at, At(kT0 + 500));
  EXPECT_TRUE(store().ListOpenAuthorizations("apo-1", 10, 0)->empty());
}

TEST_P(ServiceStoreConformance, OpenExpiredAndPatientAuthorizationLists) {
  // dispense_by order, then id; another pharmacy and a closed one left out.
  ASSERT_TRUE(Ok(store().UpsertAuthorization(Auth("A-3", "apo-1", kT0 + 300))));
  ASSERT_TRUE(Ok(store().UpsertAuthorization(Auth("A-1", "apo-1", kT0 + 100, "p-2"))));
  ASSERT_TRUE(Ok(store().UpsertAuthorization(Auth("A-2", "apo-1", kT0 + 300))));
  ASSERT_TRUE(Ok(store().UpsertAuthorization(Auth("A-0", "apo-1", kT0 + 400))));
  ASSERT_TRUE(Ok(store().UpsertAuthorization(Auth("B-1", "apo-2", kT0 + 50))));
  AuthorizationRecord closed = Auth("A-9", "apo-1", kT0 + 10);
  closed.status = AuthorizationStatus::kReversed;
  closed.closed_at = At(kT0 + 11);
  closed.closed_by = "system";
  ASSERT_TRUE(Ok(store().UpsertAuthorization(closed)));

  auto ids = [](const Result<std::vector<AuthorizationRecord>>& r) {
    std::vector<std::string> out;
    if (r.ok()) {
      for (const auto& a : *r) out.push_back(a.id);
    }
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(ids(store().ListOpenAuthorizations("apo-1", 10, 0)), (V{"A-1", "A-2", "A-3", "A-0"}));
  EXPECT_EQ(ids(store().ListOpenAuthorizations("apo-1", 2, 0)), (V{"A-1", "A-2"}));
  EXPECT_EQ(ids(store().ListOpenAuthorizations("apo-1", 2, 2)), (V{"A-3", "A-0"}));
  EXPECT_EQ(ids(store().ListOpenAuthorizations("apo-1", 2, 4)), V{});
  EXPECT_EQ(ids(store().ListOpenAuthorizations("apo-2", 10, 0)), V{"B-1"});

  EXPECT_EQ(ids(store().ListExpiredAuthorizations(At(kT0 + 300), 10)),
            (V{"B-1", "A-1", "A-2", "A-3"}));  // <= t, oldest first
  EXPECT_EQ(ids(store().ListExpiredAuthorizations(At(kT0 + 299), 10)), (V{"B-1", "A-1"}));
  EXPECT_EQ(ids(store().ListExpiredAuthorizations(At(kT0 + 1000), 1)), V{"B-1"});
  EXPECT_EQ(ids(store().ListExpiredAuthorizations(At(kT0), 10)), V{});

  EXPECT_EQ(ids(store().ListPatientAuthorizations("p-1")), (V{"B-1", "A-2", "A-3", "A-0"}));
  EXPECT_EQ(ids(store().ListPatientAuthorizations("p-2")), V{"A-1"});
  EXPECT_EQ(ids(store().ListPatientAuthorizations("p-404")), V{});
}

// ---- Cursors

TEST_P(ServiceStoreConformance, CursorsDefaultToZero) {
  auto c = store().GetCursor("authorizations");
  ASSERT_TRUE(Ok(c));
  EXPECT_EQ(*c, 0);
  ASSERT_TRUE(Ok(store().SetCursor("authorizations", 42)));
  ASSERT_TRUE(Ok(store().SetCursor("notifications", 7)));
  ASSERT_TRUE(Ok(store().SetCursor("authorizations", 43)));
  EXPECT_EQ(*store().GetCursor("authorizations"), 43);
  EXPECT_EQ(*store().GetCursor("notifications"), 7);
  EXPECT_EQ(*store().GetCursor("other"), 0);
}

// ---- Notifications, webhooks and deliveries

Notification Note(const std::string& recipient, const std::string& key, int64_t at_ms) {
  Notification n;
  n.recipient_id = recipient;
  n.patient_id = "P-1";
  n.kind = "pregnancy";
  n.severity = "critical";
  n.message = "A positive pregnancy test was recorded.";
  n.dedupe_key = key;
  n.created_at = At(at_ms);
  return n;
}

TEST_P(ServiceStoreConformance, NotificationsDedupeAndQueueADeliveryPerWebhook) {
  MakeOrg("clinic-1");
  MakeOrg("clinic-2");
  MakeAccount("dr-a", "clinic-1");
  MakeAccount("dr-b", "clinic-2");
  auto h1 = store().AddWebhook({0, "clinic-1", "https://a.example/hook", "s1", At(kT0)});
  auto h2 = store().AddWebhook({0, "clinic-1", "https://b.example/hook", "s2", At(kT0)});
  ASSERT_TRUE(Ok(h1));
  ASSERT_TRUE(Ok(h2));
  EXPECT_TRUE(Fails(store().AddWebhook({0, "no-org", "https://c.example", "", At(kT0)}),
                    ErrorKind::kNotFound, "org_id"));
  auto hooks = store().ListWebhooks("clinic-1");
  ASSERT_TRUE(Ok(hooks));
  ASSERT_EQ(hooks->size(), 2u);
  EXPECT_EQ((*hooks)[0].id, *h1);
  EXPECT_EQ((*hooks)[0].url, "https://a.example/hook");
  EXPECT_EQ((*hooks)[0].secret, "s1");
  EXPECT_EQ((*hooks)[0].created_at, At(kT0));
  EXPECT_TRUE(store().ListWebhooks("clinic-2")->empty());
  auto hook = store().GetWebhook(*h2);
  ASSERT_TRUE(Ok(hook));
  EXPECT_EQ(hook->org_id, "clinic-1");
  EXPECT_TRUE(Is(store().GetWebhook(*h2 + 100), ErrorKind::kNotFound));

  auto n1 = store().InsertNotification(Note("dr-a", "pregnancy:P-1:ev-1", kT0 + 10));
  ASSERT_TRUE(Ok(n1));
  EXPECT_GT(n1->id, 0);
  EXPECT_EQ(n1->dedupe_key, "pregnancy:P-1:ev-1");
  Notification again = Note("dr-a", "pregnancy:P-1:ev-1", kT0 + 20);
  again.message = "something else";
  auto n2 = store().InsertNotification(again);
  ASSERT_TRUE(Ok(n2));
  EXPECT_EQ(n2->id, n1->id);
  EXPECT_EQ(n2->message, n1->message);
  EXPECT_EQ(n2->created_at, At(kT0 + 10));
  // Without a key every insert is a new one; the other clinic has no webhook.
  auto n3 = store().InsertNotification(Note("dr-a", "", kT0 + 30));
  auto n4 = store().InsertNotification(Note("dr-a", "", kT0 + 30));
  auto n5 = store().InsertNotification(Note("dr-b", "", kT0 + 5));
  ASSERT_TRUE(Ok(n3));
  ASSERT_TRUE(Ok(n4));
  ASSERT_TRUE(Ok(n5));
  EXPECT_NE(n3->id, n4->id);
  EXPECT_EQ(n3->dedupe_key, "");

  auto got = store().GetNotification(n1->id);
  ASSERT_TRUE(Ok(got));
  EXPECT_EQ(got->recipient_id, "dr-a");
  EXPECT_EQ(got->patient_id, "P-1");
  EXPECT_EQ(got->kind, "pregnancy");
  EXPECT_EQ(got->severity, "critical");
  EXPECT_EQ(got->message, "A positive pregnancy test was recorded.");
  EXPECT_EQ(got->created_at, At(kT0 + 10));
  EXPECT_FALSE(got->read_at);
  EXPECT_TRUE(Is(store().GetNotification(n5->id + 100), ErrorKind::kNotFound));

  // Two webhooks x three notifications of dr-a; nothing for dr-b; oldest first.
  auto due = store().DueDeliveries(At(kT0 + 1000), 100);
  ASSERT_TRUE(Ok(due));
  ASSERT_EQ(due->size(), 6u);
  EXPECT_EQ((*due)[0].notification_id, n1->id);
  EXPECT_EQ((*due)[0].webhook_id, *h1);
  EXPECT_EQ((*due)[1].notification_id, n1->id);
  EXPECT_EQ((*due)[1].webhook_id, *h2);
  EXPECT_EQ((*due)[0].attempts, 0);
  EXPECT_EQ((*due)[0].next_attempt_at, At(kT0 + 10));
  EXPECT_FALSE((*due)[0].delivered_at);
  for (const auto& d : *due) EXPECT_NE(d.notification_id, n5->id);
  EXPECT_TRUE(store().DueDeliveries(At(kT0 + 9), 100)->empty());
  EXPECT_EQ(store().DueDeliveries(At(kT0 + 10), 100)->size(), 2u);
  EXPECT_EQ(store().DueDeliveries(At(kT0 + 1000), 3)->size(), 3u);

  // A failure moves the attempt later; a delivery leaves the queue.
  ASSERT_TRUE(Ok(store().MarkAttemptFailed((*due)[0].id, "HTTP 503", At(kT0 + 5000))));
  ASSERT_TRUE(Ok(store().MarkDelivered((*due)[1].id, At(kT0 + 40))));
  ASSERT_TRUE(Ok(store().MarkDelivered((*due)[1].id, At(kT0 + 99))));
  EXPECT_TRUE(Is(store().MarkDelivered((*due)[5].id + 100, At(kT0)), ErrorKind::kNotFound));
  EXPECT_TRUE(
      Is(store().MarkAttemptFailed((*due)[5].id + 100, "x", At(kT0)), ErrorKind::kNotFound));
  auto later = store().DueDeliveries(At(kT0 + 1000), 100);
  ASSERT_TRUE(Ok(later));
  ASSERT_EQ(later->size(), 4u);
  for (const auto& d : *later) {
    EXPECT_NE(d.id, (*due)[0].id);
    EXPECT_NE(d.id, (*due)[1].id);
  }
  auto retried = store().DueDeliveries(At(kT0 + 5000), 100);
  ASSERT_TRUE(Ok(retried));
  ASSERT_EQ(retried->size(), 5u);
  EXPECT_EQ(retried->back().id, (*due)[0].id);
  EXPECT_EQ(retried->back().attempts, 1);
  EXPECT_EQ(retried->back().last_error, "HTTP 503");
  EXPECT_EQ(retried->back().next_attempt_at, At(kT0 + 5000));
}

TEST_P(ServiceStoreConformance, ListAndMarkNotifications) {
  std::vector<int64_t> ids;
  for (int i = 0; i < 4; ++i) {
    auto n = store().InsertNotification(Note("dr-a", "", kT0 + i));
    ASSERT_TRUE(Ok(n));
    ids.push_back(n->id);
  }
  ASSERT_TRUE(Ok(store().InsertNotification(Note("dr-b", "", kT0))));
  EXPECT_TRUE(Is(store().MarkNotificationRead(ids[1], "dr-b", At(kT0 + 50)), ErrorKind::kNotFound));
  EXPECT_TRUE(
      Is(store().MarkNotificationRead(ids[3] + 100, "dr-a", At(kT0)), ErrorKind::kNotFound));
  ASSERT_TRUE(Ok(store().MarkNotificationRead(ids[1], "dr-a", At(kT0 + 50))));
  ASSERT_TRUE(Ok(store().MarkNotificationRead(ids[1], "dr-a", At(kT0 + 60))));
  EXPECT_EQ(store().GetNotification(ids[1])->read_at, At(kT0 + 50));

  auto all = store().ListNotifications("dr-a", false, 0, 100);
  ASSERT_TRUE(Ok(all));
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[1].read_at, At(kT0 + 50));
  auto unread = store().ListNotifications("dr-a", true, 0, 100);
  ASSERT_TRUE(Ok(unread));
  ASSERT_EQ(unread->size(), 3u);
  EXPECT_EQ((*unread)[1].id, ids[2]);
  auto page = store().ListNotifications("dr-a", false, ids[1], 1);
  ASSERT_TRUE(Ok(page));
  ASSERT_EQ(page->size(), 1u);
  EXPECT_EQ((*page)[0].id, ids[2]);
}

TEST_P(ServiceStoreConformance, ConcurrentInsertsOfOneDedupeKeyMakeOneRow) {
  MakeOrg("clinic-1");
  MakeAccount("dr-a", "clinic-1");
  ASSERT_TRUE(Ok(store().AddWebhook({0, "clinic-1", "https://a.example/hook", "s", At(kT0)})));
  std::vector<int64_t> got(8, -1);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto n = store().InsertNotification(Note("dr-a", "reminder:P-1:2026-09", kT0 + t));
      EXPECT_TRUE(Ok(n));
      if (n.ok()) got[static_cast<size_t>(t)] = n->id;
    });
  }
  for (auto& th : threads) th.join();
  for (int64_t id : got) EXPECT_EQ(id, got[0]);
  EXPECT_EQ(store().ListNotifications("dr-a", false, 0, 100)->size(), 1u);
  EXPECT_EQ(store().DueDeliveries(At(kT0 + 100), 100)->size(), 1u);
}

// ---- The pregnancy registry

TEST_P(ServiceStoreConformance, PregnancyReportsOnePerEvent) {
  PregnancyReport r{0, "P-1", "ev-7", "us-ipledge-2023", "clinic-1", At(kT0)};
  auto first = store().FilePregnancyReport(r);
  ASSERT_TRUE(Ok(first));
  EXPECT_GT(first->id, 0);
  PregnancyReport again = r;
  again.reported_at = At(kT0 + 1);
  auto second = store().FilePregnancyReport(again);
  ASSERT_TRUE(Ok(second));
  EXPECT_EQ(second->id, first->id);
  EXPECT_EQ(second->reported_at, At(kT0));
  EXPECT_EQ(second->program_id, "us-ipledge-2023");
  auto other = store().FilePregnancyReport({0, "P-2", "ev-8", "eu-ppp", "clinic-2", At(kT0 + 2)});
  ASSERT_TRUE(Ok(other));
  auto all = store().ListPregnancyReports(0, 10);
  ASSERT_TRUE(Ok(all));
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].event_id, "ev-7");
  EXPECT_EQ((*all)[0].clinic_id, "clinic-1");
  EXPECT_EQ((*all)[1].patient_id, "P-2");
  EXPECT_EQ((*all)[1].reported_at, At(kT0 + 2));
  auto after = store().ListPregnancyReports(first->id, 10);
  ASSERT_TRUE(Ok(after));
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ((*after)[0].id, other->id);
  EXPECT_EQ(store().ListPregnancyReports(0, 1)->size(), 1u);
}

// ---- Stock

TEST_P(ServiceStoreConformance, LotsAddGetListAndTake) {
  MakeOrg("apo-1", OrgKind::kPharmacy);
  Lot l = MakeLot("LOT-2", "apo-1", "shelf A", 60);
  MakeLot("LOT-1", "apo-1", "shelf B", 30);
  EXPECT_TRUE(Is(store().AddLot(l), ErrorKind::kConflict));
  Lot orphan = l;
  orphan.id = "LOT-X";
  orphan.pharmacy_id = "no-pharmacy";
  EXPECT_TRUE(Fails(store().AddLot(orphan), ErrorKind::kNotFound, "pharmacy_id"));

  auto got = store().GetLot("LOT-2");
  ASSERT_TRUE(Ok(got));
  EXPECT_EQ(got->pharmacy_id, "apo-1");
  EXPECT_EQ(got->product, "generic");
  EXPECT_EQ(got->strength_mg, 20);
  EXPECT_EQ(got->lot_number, "LN-LOT-2");
  EXPECT_EQ(got->expiry, LocalDate::FromYmd(2028, 1, 31));
  EXPECT_EQ(got->location, "shelf A");
  EXPECT_EQ(got->quantity_capsules, 60);
  EXPECT_EQ(got->received_at, At(kT0));
  EXPECT_FALSE(got->quarantined);
  EXPECT_TRUE(Is(store().GetLot("LOT-404"), ErrorKind::kNotFound));
  auto listed = store().ListLots("apo-1");
  ASSERT_TRUE(Ok(listed));
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, "LOT-1");
  EXPECT_EQ((*listed)[1].id, "LOT-2");

  ASSERT_TRUE(Ok(store().TakeFromLot("LOT-2", 28)));
  ASSERT_TRUE(Ok(store().TakeFromLot("LOT-2", 30)));
  EXPECT_TRUE(Fails(store().TakeFromLot("LOT-2", 3), ErrorKind::kBadInput, "capsules"));
  EXPECT_EQ(store().GetLot("LOT-2")->quantity_capsules, 2);
  ASSERT_TRUE(Ok(store().TakeFromLot("LOT-2", 2)));
  EXPECT_EQ(store().GetLot("LOT-2")->quantity_capsules, 0);
  EXPECT_TRUE(Fails(store().TakeFromLot("LOT-2", 0), ErrorKind::kBadInput, "capsules"));
  EXPECT_TRUE(Fails(store().TakeFromLot("LOT-2", -5), ErrorKind::kBadInput, "capsules"));
  EXPECT_TRUE(Is(store().TakeFromLot("LOT-404", 1), ErrorKind::kNotFound));
}

TEST_P(ServiceStoreConformance, ConcurrentTakesNeverGoBelowZero) {
  MakeOrg("apo-1", OrgKind::kPharmacy);
  MakeLot("LOT-1", "apo-1", "shelf A", 100);
  std::atomic<int> taken{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        Status st = store().TakeFromLot("LOT-1", 3);
        if (st.ok()) {
          ++taken;
        } else {
          EXPECT_EQ(st.error().kind, ErrorKind::kBadInput) << st.error().ToString();
          ++refused;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(taken.load(), 33);  // 33 x 3 = 99 of 100
  EXPECT_EQ(refused.load(), 7);
  EXPECT_EQ(store().GetLot("LOT-1")->quantity_capsules, 1);
}

TEST_P(ServiceStoreConformance, ExcursionQuarantinesExactlyTheLotsAtThatPlace) {
  MakeOrg("apo-1", OrgKind::kPharmacy);
  MakeOrg("apo-2", OrgKind::kPharmacy);
  MakeLot("LOT-B", "apo-1", "shelf A");
  MakeLot("LOT-A", "apo-1", "shelf A");
  MakeLot("LOT-C", "apo-1", "shelf B");
  MakeLot("LOT-D", "apo-2", "shelf A");
  const StorageRange range{15, 30};

  // The bounds are in range.
  for (double c : {15.0, 30.0, 22.5}) {
    TemperatureReading r{0, "apo-1", "shelf A", At(kT0), c, "ph-1"};
    auto result = store().RecordTemperature(r, range);
    ASSERT_TRUE(Ok(result));
    EXPECT_FALSE(result->excursion) << c;
    EXPECT_TRUE(result->quarantined_lot_ids.empty());
    EXPECT_GT(result->reading.id, 0);
  }
  // A lot already in quarantine is not quarantined again.
  TemperatureReading hot{0, "apo-1", "shelf A", At(kT0 + 60'000), 30.000000000000004, "ph-1"};
  auto result = store().RecordTemperature(hot, range);
  ASSERT_TRUE(Ok(result));
  EXPECT_TRUE(result->excursion);
  EXPECT_EQ(result->quarantined_lot_ids, (std::vector<std::string>{"LOT-A", "LOT-B"}));
  EXPECT_EQ(result->reading.celsius, 30.000000000000004);
  auto lot = store().GetLot("LOT-A");
  EXPECT_TRUE(lot->quarantined);
  EXPECT_NE(lot->quarantine_reason.find("shelf A"), std::string::npos) << lot->quarantine_reason;
  EXPECT_FALSE(store().GetLot("LOT-C")->quarantined);
  EXPECT_FALSE(store().GetLot("LOT-D")->quarantined);
  auto events = store().ListQuarantineEvents("LOT-A");
  ASSERT_TRUE(Ok(events));
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].action, "quarantine");
  EXPECT_EQ((*events)[0].at, At(kT0 + 60'000));
  EXPECT_EQ((*events)[0].by, "system");
  EXPECT_EQ((*events)[0].lot_id, "LOT-A");
  EXPECT_FALSE((*events)[0].reason.empty());

  TemperatureReading cold{0, "apo-1", "shelf A", At(kT0 + 120'000), 14.999, "ph-1"};
  auto again = store().RecordTemperature(cold, range);
  ASSERT_TRUE(Ok(again));
  EXPECT_TRUE(again->excursion);
  EXPECT_TRUE(again->quarantined_lot_ids.empty());
  EXPECT_EQ(store().ListQuarantineEvents("LOT-A")->size(), 1u);
  EXPECT_TRUE(store().ListQuarantineEvents("LOT-C")->empty());

  EXPECT_TRUE(Fails(store().RecordTemperature({0, "no-pharmacy", "x", At(kT0), 40, "ph"}, range),
                    ErrorKind::kNotFound, "pharmacy_id"));
  EXPECT_TRUE(Fails(store().RecordTemperature({0, "apo-1", "x", At(kT0), NAN, "ph"}, range),
                    ErrorKind::kBadInput, "celsius"));
  EXPECT_TRUE(Fails(store().RecordTemperature({0, "apo-1", "x", At(kT0), 20, "ph"}, {30, 15}),
                    ErrorKind::kBadInput, "range"));

  auto readings = store().ListTemperatures("apo-1", 0, 100);
  ASSERT_TRUE(Ok(readings));
  ASSERT_EQ(readings->size(), 5u);
  EXPECT_EQ((*readings)[3].celsius, 30.000000000000004);
  EXPECT_EQ((*readings)[3].at, At(kT0 + 60'000));
  EXPECT_EQ((*readings)[3].location, "shelf A");
  EXPECT_EQ((*readings)[3].recorded_by, "ph-1");
  EXPECT_EQ((*readings)[4].celsius, 14.999);
  auto page = store().ListTemperatures("apo-1", (*readings)[1].id, 2);
  ASSERT_TRUE(Ok(page));
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].id, (*readings)[2].id);
  EXPECT_TRUE(store().ListTemperatures("apo-2", 0, 100)->empty());

  // Release: only a lot in quarantine.
  EXPECT_TRUE(Fails(store().ReleaseLot("LOT-C", "ph-1", "checked", At(kT0)), ErrorKind::kConflict,
                    "lot_id"));
  EXPECT_TRUE(Is(store().ReleaseLot("LOT-404", "ph-1", "checked", At(kT0)), ErrorKind::kNotFound));
  ASSERT_TRUE(Ok(store().ReleaseLot("LOT-A", "ph-1", "manufacturer says fine", At(kT0 + 3))));
  EXPECT_TRUE(Is(store().ReleaseLot("LOT-A", "ph-1", "again", At(kT0 + 4)), ErrorKind::kConflict));
  lot = store().GetLot("LOT-A");
  EXPECT_FALSE(lot->quarantined);
  EXPECT_EQ(lot->quarantine_reason, "");
  events = store().ListQuarantineEvents("LOT-A");
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].action, "release");
  EXPECT_EQ((*events)[1].reason, "manufacturer says fine");
  EXPECT_EQ((*events)[1].by, "ph-1");
  EXPECT_EQ((*events)[1].at, At(kT0 + 3));
  // A released lot is quarantined again by the next excursion.
  auto third = store().RecordTemperature({0, "apo-1", "shelf A", At(kT0 + 9), 31, "ph-1"}, range);
  ASSERT_TRUE(Ok(third));
  EXPECT_EQ(third->quarantined_lot_ids, std::vector<std::string>{"LOT-A"});
}

// ---- Values come back as written

TEST_P(ServiceStoreConformance, InstantsAndDoublesComeBackExactly) {
  MakeOrg("apo-1", OrgKind::kPharmacy);
  for (double strength : {0.1 + 0.2, 1e-300, 10.0 / 3.0, 40.0, 8.000000000000002}) {
    Lot l;
    l.id = "LOT-" + std::to_string(strength);
    l.pharmacy_id = "apo-1";
    l.product = "absorica_ld";
    l.strength_mg = strength;
    l.location = "x";
    l.received_at = At(-86'400'001);  // before 1970
    l.expiry = LocalDate(-3);
    ASSERT_TRUE(Ok(store().AddLot(l)));
    auto got = store().GetLot(l.id);
    ASSERT_TRUE(Ok(got));
    EXPECT_EQ(got->strength_mg, strength);
    EXPECT_EQ(got->received_at, l.received_at);
    EXPECT_EQ(got->expiry, l.expiry);
  }
  const StorageRange range{-1e9, 1e9};
  for (double c : {-40.123456789012345, 1.0 / 7.0, 0.0, 25.5}) {
    auto r = store().RecordTemperature({0, "apo-1", "x", At(kT0 + 7), c, ""}, range);
    ASSERT_TRUE(Ok(r));
  }
  auto readings = store().ListTemperatures("apo-1", 0, 10);
  ASSERT_TRUE(Ok(readings));
  ASSERT_EQ(readings->size(), 4u);
  EXPECT_EQ((*readings)[0].celsius, -40.123456789012345);
  EXPECT_EQ((*readings)[1].celsius, 1.0 / 7.0);
  EXPECT_EQ((*readings)[0].at, At(kT0 + 7));
  // Milliseconds survive: the largest and a negative instant.
  ASSERT_TRUE(Ok(store().CreateOrganisation(
      {"org-t", OrgKind::kProgram, "n", "", At(std::numeric_limits<int64_t>::max() / 4)})));
  EXPECT_EQ(store().GetOrganisation("org-t")->created_at,
            At(std::numeric_limits<int64_t>::max() / 4));
}

// ---- Limits

TEST_P(ServiceStoreConformance, OverlongStringsAreRefusedNamingTheField) {
  const std::string long_id(kMaxIdBytes + 1, 'x');
  const std::string max_id(kMaxIdBytes, 'y');
  const std::string long_text(kMaxTextBytes + 1, 't');
  const std::string max_text(kMaxTextBytes, 'u');
  EXPECT_TRUE(Fails(store().CreateOrganisation({long_id, OrgKind::kClinic, "n", "US", At(kT0)}),
                    ErrorKind::kBadInput, "id"));
  EXPECT_TRUE(Fails(store().CreateOrganisation({"o", OrgKind::kClinic, long_text, "US", At(kT0)}),
                    ErrorKind::kBadInput, "name"));
  EXPECT_TRUE(Fails(store().CreateOrganisation({"", OrgKind::kClinic, "n", "US", At(kT0)}),
                    ErrorKind::kBadInput, "id"));
  ASSERT_TRUE(Ok(store().CreateOrganisation({max_id, OrgKind::kClinic, max_text, "US", At(kT0)})));
  EXPECT_EQ(store().GetOrganisation(max_id)->name, max_text);

  Account a;
  a.id = "acc";
  a.org_id = max_id;
  a.name = "n";
  a.password_hash = long_text;
  EXPECT_TRUE(Fails(store().CreateAccount(a), ErrorKind::kBadInput, "password_hash"));
  a.password_hash.clear();
  ASSERT_TRUE(Ok(store().CreateAccount(a)));
  EXPECT_TRUE(
      Fails(store().SetPasswordHash("acc", long_text), ErrorKind::kBadInput, "password_hash"));

  AuditRecord r;
  r.detail = long_text;
  EXPECT_TRUE(
      Fails(store().AppendAudit({AuditRecord{}, r}), ErrorKind::kBadInput, "records[1].detail"));
  EXPECT_TRUE(store().ListAudit({})->empty());  // nothing of the batch was written

  Notification n = Note("acc", long_text, kT0);
  EXPECT_TRUE(Fails(store().InsertNotification(n), ErrorKind::kBadInput, "dedupe_key"));
  EXPECT_TRUE(Fails(store().LinkPatient({long_id, max_id, "dr", At(kT0)}), ErrorKind::kBadInput,
                    "patient_id"));
  EXPECT_TRUE(
      Fails(store().UpsertAuthorization(Auth(long_id, "apo", kT0)), ErrorKind::kBadInput, "id"));
  EXPECT_TRUE(Fails(store().SetCursor(long_id, 1), ErrorKind::kBadInput, "name"));
  EXPECT_TRUE(
      Fails(store().AddWebhook({0, max_id, long_text, "", At(kT0)}), ErrorKind::kBadInput, "url"));
  EXPECT_TRUE(Fails(store().FilePregnancyReport({0, "P", long_id, "", "", At(kT0)}),
                    ErrorKind::kBadInput, "event_id"));
  Lot l;
  l.id = "L";
  l.pharmacy_id = max_id;
  l.product = "generic";
  l.location = long_text;
  EXPECT_TRUE(Fails(store().AddLot(l), ErrorKind::kBadInput, "location"));
  l.location = "x";
  l.strength_mg = -1;
  EXPECT_TRUE(Fails(store().AddLot(l), ErrorKind::kBadInput, "strength_mg"));
  l.strength_mg = 20;
  l.quantity_capsules = -1;
  EXPECT_TRUE(Fails(store().AddLot(l), ErrorKind::kBadInput, "quantity_capsules"));
  EXPECT_TRUE(
      Fails(store().ReleaseLot("L", "ph", long_text, At(kT0)), ErrorKind::kBadInput, "reason"));
  EXPECT_TRUE(
      Fails(store().MarkAttemptFailed(1, long_text, At(kT0)), ErrorKind::kBadInput, "error"));
}

TEST_P(ServiceStoreConformance, ListLimitIsCappedAtTheMaximum) {
  std::vector<AuditRecord> batch(kMaxListLimit + 5);
  for (size_t i = 0; i < batch.size(); ++i) batch[i].detail = std::to_string(i);
  ASSERT_TRUE(Ok(store().AppendAudit(batch)));
  AuditFilter f;
  f.limit = kMaxListLimit * 10;
  auto got = store().ListAudit(f);
  ASSERT_TRUE(Ok(got));
  EXPECT_EQ(got->size(), kMaxListLimit);
  f.after_id = got->back().id;
  EXPECT_EQ(store().ListAudit(f)->size(), 5u);
  EXPECT_EQ(store().ListPregnancyReports(0, std::numeric_limits<size_t>::max())->size(), 0u);
}

// ---- Behind the store: triggers, schema versions, reopening, query plans

TEST_P(ServiceStoreConformance, AppendOnlyTablesRefuseUpdateAndDelete) {
  MakeOrg("apo-1", OrgKind::kPharmacy);
  MakeLot("LOT-1", "apo-1", "shelf A");
  ASSERT_TRUE(Ok(store().AppendAudit({AuditRecord{}})));
  ASSERT_TRUE(Ok(store().RecordTemperature({0, "apo-1", "shelf A", At(kT0), 40, "ph"}, {15, 30})));
  ASSERT_TRUE(Ok(store().FilePregnancyReport({0, "P", "ev", "prog", "clinic", At(kT0)})));
  for (const char* table :
       {"audit", "temperature_readings", "quarantine_events", "pregnancy_reports"}) {
    SCOPED_TRACE(table);
    const std::string t = Table(table);
    const char* column = std::string(table) == "pregnancy_reports" ? "reported_at_ms" : "at_ms";
    Status update = RawExec("UPDATE " + t + " SET " + column + " = 1");
    EXPECT_FALSE(update.ok());
    if (!update.ok()) {
      EXPECT_NE(update.error().message.find("append-only"), std::string::npos);
    }
    Status del = RawExec("DELETE FROM " + t);
    EXPECT_FALSE(del.ok());
    if (!del.ok()) {
      EXPECT_NE(del.error().message.find("append-only"), std::string::npos);
    }
    if (postgres()) {
      EXPECT_FALSE(RawExec("TRUNCATE " + t + " CASCADE").ok());
    }
  }
  EXPECT_EQ(store().ListAudit({})->size(), 1u);
  EXPECT_EQ(store().ListQuarantineEvents("LOT-1")->size(), 1u);
  // The tables that are not append-only may change (a lot's quantity, say).
  EXPECT_TRUE(Ok(RawExec("UPDATE " + Table("lots") + " SET quantity_capsules = 5")));
}

TEST_P(ServiceStoreConformance, ANewerSchemaIsRefused) {
  store_.reset();
  const std::string version_table = postgres() ? "isoguard_service.schema_version" : "svc_schema";
  ASSERT_TRUE(Ok(RawExec("UPDATE " + version_table + " SET version = 99")));
  auto opened = OpenServiceStore(url_);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().kind, ErrorKind::kBadInput);
  EXPECT_NE(opened.error().message.find("99"), std::string::npos) << opened.error().message;
  ASSERT_TRUE(Ok(RawExec("UPDATE " + version_table + " SET version = 1")));
  Reopen();
  EXPECT_TRUE(Ok(store().Ping()));
}

TEST_P(ServiceStoreConformance, ReopeningKeepsEverything) {
  MakeOrg("clinic-1");
  MakeOrg("apo-1", OrgKind::kPharmacy);
  MakeAccount("dr-a", "clinic-1");
  Token t;
  t.hash = HashOf(4);
  t.account_id = "dr-a";
  t.kind = "api";
  t.created_at = At(kT0);
  t.expires_at = At(kT0 + 1);
  ASSERT_TRUE(Ok(store().InsertToken(t)));
  ASSERT_TRUE(Ok(store().LinkPatient({"P-1", "clinic-1", "dr-a", At(kT0)})));
  ASSERT_TRUE(Ok(store().AppendAudit({AuditRecord{}})));
  ASSERT_TRUE(Ok(store().UpsertAuthorization(Auth("A-1", "apo-1", kT0))));
  ASSERT_TRUE(Ok(store().SetCursor("c", 9)));
  ASSERT_TRUE(Ok(store().AddWebhook({0, "clinic-1", "https://x.example", "s", At(kT0)})));
  ASSERT_TRUE(Ok(store().InsertNotification(Note("dr-a", "k", kT0))));
  ASSERT_TRUE(Ok(store().FilePregnancyReport({0, "P-1", "ev", "prog", "clinic-1", At(kT0)})));
  MakeLot("LOT-1", "apo-1", "A");
  ASSERT_TRUE(Ok(store().RecordTemperature({0, "apo-1", "A", At(kT0), 50, "ph"}, {15, 30})));

  Reopen();
  Reopen();  // a second open migrates nothing
  EXPECT_EQ(store().ListOrganisations()->size(), 2u);
  EXPECT_EQ(store().FindToken(HashOf(4))->account.id, "dr-a");
  EXPECT_EQ((*store().GetCareLink("P-1"))->clinic_id, "clinic-1");
  EXPECT_EQ(store().ListAudit({})->size(), 1u);
  EXPECT_TRUE(store().GetAuthorization("A-1")->has_value());
  EXPECT_EQ(*store().GetCursor("c"), 9);
  EXPECT_EQ(store().ListWebhooks("clinic-1")->size(), 1u);
  EXPECT_EQ(store().ListNotifications("dr-a", true, 0, 10)->size(), 1u);
  EXPECT_EQ(store().DueDeliveries(At(kT0), 10)->size(), 1u);
  EXPECT_EQ(store().ListPregnancyReports(0, 10)->size(), 1u);
  EXPECT_TRUE(store().GetLot("LOT-1")->quarantined);
  EXPECT_EQ(store().ListTemperatures("apo-1", 0, 10)->size(), 1u);
  EXPECT_EQ(store().ListQuarantineEvents("LOT-1")->size(), 1u);
  // The dedupe key still holds after reopening.
  auto again = store().InsertNotification(Note("dr-a", "k", kT0 + 5));
  ASSERT_TRUE(Ok(again));
  EXPECT_EQ(again->created_at, At(kT0));
  EXPECT_EQ(store().DueDeliveries(At(kT0 + 10), 10)->size(), 1u);
}

TEST_P(ServiceStoreConformance, ConcurrentOpensOfANewDatabaseMigrateOnce) {
  std::string url;
  if (postgres()) {
    url = store::testing::FreshPgDatabase();
  } else {
    const std::string path = dir_.File("concurrent.db");
    ASSERT_TRUE(Ok(store::SqliteEventStore::Open(path)));
    url = path;  // a plain path names a SQLite file too
  }
  std::vector<std::unique_ptr<ServiceStore>> stores(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < stores.size(); ++i) {
    threads.emplace_back([&, i] {
      auto opened = OpenServiceStore(url);
      EXPECT_TRUE(Ok(opened));
      if (opened.ok()) stores[i] = std::move(*opened);
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& s : stores) ASSERT_NE(s, nullptr);
  ASSERT_TRUE(Ok(stores[0]->SetCursor("c", 5)));
  EXPECT_EQ(*stores[3]->GetCursor("c"), 5);
  if (postgres()) {
    // The other spelling of the scheme names the same database.
    std::string alias = url;
    alias.replace(0, std::string_view("postgresql").size(), "postgres");
    ASSERT_EQ(alias.rfind("postgres://", 0), 0u) << alias;
    auto opened = OpenServiceStore(alias);
    ASSERT_TRUE(Ok(opened));
    EXPECT_EQ(*(*opened)->GetCursor("c"), 5);
  }
}

TEST_P(ServiceStoreConformance, EveryListQueryUsesAnIndex) {
  for (const std::string& sql : detail::ListQueries()) {
    SCOPED_TRACE(sql);
    if (postgres()) {
      // Sequential scans off: a plan still holding one has no index to use.
      std::string translated;
      for (size_t i = 0; i < sql.size(); ++i) {
        if (sql[i] == '?') {
          translated += "'1'";
        } else if (sql.compare(i, 4, "svc_") == 0) {
          translated += "isoguard_service.";
          i += 3;
        } else {
          translated += sql[i];
        }
      }
      store::testing::RawPg db(url_);
      ASSERT_TRUE(Ok(db.Exec("SET enable_seqscan = off")));
      PGresult* r = PQexec(db.get(), ("EXPLAIN " + translated).c_str());
      ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
      std::string plan;
      for (int i = 0; i < PQntuples(r); ++i) plan += std::string(PQgetvalue(r, i, 0)) + "\n";
      PQclear(r);
      EXPECT_EQ(plan.find("Seq Scan"), std::string::npos) << plan;
    } else {
      const std::string plan = SqliteRows(path_, "EXPLAIN QUERY PLAN " + sql);
      EXPECT_EQ(plan.find("error"), std::string::npos) << plan;
      EXPECT_NE(plan.find("SEARCH"), std::string::npos) << plan;
      EXPECT_EQ(plan.find("SCAN"), std::string::npos) << plan;
      EXPECT_EQ(plan.find("TEMP B-TREE"), std::string::npos) << plan;
    }
  }
}

TEST_P(ServiceStoreConformance, SqliteRefusesAFileThatIsNotAnEventStore) {
  if (postgres()) GTEST_SKIP() << "SQLite only";
  const std::string other = dir_.File("other.db");
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(other.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE t (x INTEGER)", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  auto opened = OpenServiceStore("sqlite:" + other);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().kind, ErrorKind::kBadInput);
  EXPECT_EQ(SqliteRows(other, "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'svc_%'"), "0\n");
  auto missing = OpenServiceStore(dir_.File("missing.db"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind, ErrorKind::kBadInput);
  EXPECT_FALSE(std::filesystem::exists(dir_.File("missing.db")));
  EXPECT_TRUE(Is(OpenServiceStore("sqlite:"), ErrorKind::kBadInput));
  // The event store still opens beside the service tables (they are no "other data").
  store_.reset();
  auto events = store::SqliteEventStore::Open(path_);
  EXPECT_TRUE(Ok(events));
}

TEST_P(ServiceStoreConformance, PostgresReestablishesABrokenConnection) {
  if (!postgres()) GTEST_SKIP() << "PostgreSQL only";
  ASSERT_TRUE(Ok(store().SetCursor("c", 1)));
  const auto kill_others = [&] {
    store::testing::RawPg db(url_);
    ASSERT_TRUE(
        Ok(db.Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE datname = current_database() AND pid <> pg_backend_pid()")));
  };
  kill_others();
  auto read = store().GetCursor("c");  // the pooled connection died while idle
  ASSERT_TRUE(Ok(read));
  EXPECT_EQ(*read, 1);
  kill_others();
  ASSERT_TRUE(Ok(store().SetCursor("c", 2)));  // a write whose transaction had not begun
  EXPECT_EQ(*store().GetCursor("c"), 2);
}

TEST_P(ServiceStoreConformance, PostgresNeverShowsThePassword) {
  if (!postgres()) GTEST_SKIP() << "PostgreSQL only";
  // Nothing listens on port 1: the connection fails, and its message names no password.
  auto opened = OpenServiceStore("postgresql://someone:Sup3rSecretPw@127.0.0.1:1/nowhere");
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().ToString().find("Sup3rSecretPw"), std::string::npos)
      << opened.error().ToString();
  auto bad = OpenServiceStore("postgresql://someone:Sup3rSecretPw@[bad");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().ToString().find("Sup3rSecretPw"), std::string::npos)
      << bad.error().ToString();
}

INSTANTIATE_TEST_SUITE_P(Sqlite, ServiceStoreConformance,
                         ::testing::Values(ServiceBackend{"Sqlite", false}),
                         [](const auto& param_info) { return param_info.param.name; });
INSTANTIATE_TEST_SUITE_P(Postgres, ServiceStoreConformance,
                         ::testing::Values(ServiceBackend{"Postgres", true}),
                         [](const auto& param_info) { return param_info.param.name; });

// Whatever a request named, its audit record is storable once fitted: the store takes it.
TEST_P(ServiceStoreConformance, AFittedAuditRecordIsStoredWhateverTheRequestNamed) {
  AuditRecord r;
  r.at = At(kT0);
  r.request_id = std::string("req\0x", 5);
  r.actor_id = "dr-a";
  r.actor_role = "prescriber";
  r.source = "203.0.113.7:51234";
  r.action = "GET /v1/patients/{patient_id}";
  r.patient_id = std::string(200, 'p');
  r.outcome = "refused";
  r.status = 404;
  // Cut inside a multi-byte character: the cut must fall on a boundary.
  r.detail = std::string(kMaxTextBytes - 2, 'd') + "\xc3\xa9\xc3\xa9\xff";
  AuditRecord fitted = r;
  FitAuditRecord(fitted);
  EXPECT_EQ(fitted.request_id, "req\\x00x");
  EXPECT_LE(fitted.patient_id.size(), kMaxIdBytes);
  EXPECT_TRUE(fitted.patient_id.starts_with("ppp"));
  EXPECT_TRUE(fitted.patient_id.ends_with("..."));
  EXPECT_TRUE(fitted.detail.starts_with("the patient id named was 200 bytes")) << fitted.detail;
  EXPECT_LE(fitted.detail.size(), kMaxTextBytes);
  EXPECT_TRUE(fitted.detail.ends_with("...")) << fitted.detail.substr(fitted.detail.size() - 8);
  ASSERT_TRUE(Ok(store().AppendAudit({fitted})));
  auto stored = store().ListAudit({});
  ASSERT_TRUE(Ok(stored));
  ASSERT_EQ(stored->size(), 1u);
  EXPECT_EQ(stored->at(0).patient_id, fitted.patient_id);
  EXPECT_EQ(stored->at(0).detail, fitted.detail);
  // A record that fits already is left as it is.
  AuditRecord plain = r;
  plain.request_id = "req-1";
  plain.patient_id = "P-\xc3\xa9";
  plain.detail = "fine";
  AuditRecord same = plain;
  FitAuditRecord(same);
  EXPECT_EQ(same.patient_id, plain.patient_id);
  EXPECT_EQ(same.detail, plain.detail);
  EXPECT_EQ(same.request_id, plain.request_id);
}

}  // namespace
}  // namespace isoguard::service
