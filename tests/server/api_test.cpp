// The REST API over real HTTP on loopback, against SQLite and the throwaway PostgreSQL
// cluster: the flows of each role, exactly one authorization under concurrency, the safety
// reactions, stock and storage, strict decoding of bad input, and the OpenAPI document.
#include <gtest/gtest.h>
#include <sodium.h>

#include <cctype>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "api_test_support.h"
#include "server/webhook_sender.h"
#include "service/background_worker.h"

namespace isoguard::server::testing {
namespace {

class ApiTest : public ::testing::TestWithParam<ApiBackend> {
 protected:
  void SetUp() override {
    if (GetParam().postgres && !store::testing::PgUrlFile()) {
      GTEST_SKIP() << "no PostgreSQL cluster: set ISOGUARD_TEST_PG_URL_FILE";
    }
    world_ = std::make_unique<ApiWorld>(GetParam());
    world_->MakeWorld();
  }

  ApiWorld& w() { return *world_; }
  const std::string& T(const std::string& who) { return w().tokens.at(who); }

  Reply Post(const std::string& target, const std::string& who, const std::string& body,
             std::vector<std::pair<std::string, std::string>> headers = {}) {
    return w().Call("POST", target, who.empty() ? "" : T(who), body, std::move(headers));
  }
  Reply Get(const std::string& target, const std::string& who) {
    return w().Call("GET", target, who.empty() ? "" : T(who));
  }

  // A patient who cannot get pregnant, counselled, weighed and with baseline labs, and a
  // prescription of 40 mg a day for 30 days: the engine authorizes it at the test's now.
  void EnrollReady(const std::string& patient, const std::string& clinician = "dr-a") {
    auto r = Post(
        "/v1/patients", clinician,
        R"({"patient_id":")" + patient +
            R"(","birth_date":"1995-03-02","jurisdiction":"US","category":"cannot_get_pregnant"})");
    ASSERT_EQ(r.status, 201) << r.raw.body;
    r = Post("/v1/patients/" + patient + "/events", clinician, R"({"events":[
      {"type":"visit","at":"2026-09-14T12:00:00Z","counseled":true},
      {"type":"weight","at":"2026-09-14T12:05:00Z","kg":62},
      {"type":"lab","at":"2026-09-14T12:10:00Z","test":"TG","value":120,"unit":"mg/dL"},
      {"type":"lab","at":"2026-09-14T12:10:00Z","test":"ALT","value":22,"unit":"U/L"},
      {"type":"phq9","at":"2026-09-14T12:15:00Z","items":[0,0,0,0,0,0,0,0,0]}]})");
    ASSERT_EQ(r.status, 201) << r.raw.body;
    if (clinician == "dr-a" || clinician == "dr-b") {
      r = Post(
          "/v1/patients/" + patient + "/prescriptions", clinician,
          R"({"id":"rx-1","product":"generic","doses_mg":[40],"days_supply":30,"refills":0,"at":"2026-09-14T12:20:00Z"})");
      ASSERT_EQ(r.status, 201) << r.raw.body;
    }
  }

  void AddLot(const std::string& pharmacist, const std::string& lot, const std::string& location,
              const std::string& expiry = "2028-01-31", int strength = 40) {
    auto r =
        Post("/v1/stock/lots", pharmacist,
             R"({"lot_id":")" + lot + R"(","product":"generic","strength_mg":)" +
                 std::to_string(strength) + R"(,"lot_number":"MFR-)" + lot + R"(","expiry":")" +
                 expiry + R"(","location":")" + location + R"(","quantity_capsules":500})");
    ASSERT_EQ(r.status, 201) << r.raw.body;
  }

  int64_t Version(const std::string& patient) {
    auto s = w().events().ReadState(patient);
    EXPECT_TRUE(s.ok());
    return s.ok() ? s->version : -1;
  }

  std::vector<std::string> TypesOf(const std::string& patient) {
    std::vector<std::string> types;
    auto stream = w().events().ReadStream(patient);
    EXPECT_TRUE(stream.ok());
    if (stream.ok()) {
      for (const auto& e : stream->entries) types.push_back(e.type);
    }
    return types;
  }

  std::unique_ptr<ApiWorld> world_;
};

size_t Count(const std::vector<std::string>& v, const std::string& x) {
  return static_cast<size_t>(std::count(v.begin(), v.end(), x));
}

TEST_P(ApiTest, PrescriberToPharmacyFlowEndsInTheStore) {
  EnrollReady("p-1");
  auto record = Get("/v1/patients/p-1", "dr-a");
  ASSERT_EQ(record.status, 200) << record.raw.body;
  EXPECT_EQ(*record.raw.header("etag"), "\"8\"");
  EXPECT_EQ(record.obj().at("evaluation").at("authorization").at("decision"), "authorized");

  auto auth =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-1","prescription_id":"rx-1"})");
  ASSERT_EQ(auth.status, 201) << auth.raw.body;
  EXPECT_EQ(auth.str("decision"), "authorized");
  const std::string id = auth.str("authorization_id");
  ASSERT_FALSE(id.empty());
  EXPECT_FALSE(auth.str("dispense_by").empty());

  // The same pharmacy asking again gets the same authorization; another pharmacy a conflict.
  auto again =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-1","prescription_id":"rx-1"})");
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(again.str("authorization_id"), id);
  EXPECT_EQ(again.obj().at("existing"), true);
  auto other =
      Post("/v1/authorizations", "ph-b", R"({"patient_id":"p-1","prescription_id":"rx-1"})");
  EXPECT_EQ(other.status, 409) << other.raw.body;

  auto open = Get("/v1/worklists/pharmacy", "ph-a");
  ASSERT_EQ(open.status, 200);
  ASSERT_EQ(open.obj().at("items").as_array().size(), 1u);
  EXPECT_EQ(open.obj().at("items").as_array()[0].at("authorization_id").as_string(), id);

  AddLot("ph-a", "L-1", "shelf-1");
  auto no_guide =
      Post("/v1/dispenses", "ph-a",
           R"({"authorization_id":")" + id + R"(","lot_id":"L-1","medication_guide_given":false})");
  EXPECT_EQ(no_guide.status, 400);
  EXPECT_EQ(no_guide.str("field"), "medication_guide_given");
  auto dispense =
      Post("/v1/dispenses", "ph-a",
           R"({"authorization_id":")" + id + R"(","lot_id":"L-1","medication_guide_given":true})");
  ASSERT_EQ(dispense.status, 201) << dispense.raw.body;
  EXPECT_EQ(dispense.obj().at("capsules"), 30);

  // Used: it cannot be reversed or used again.
  EXPECT_EQ(Post("/v1/authorizations/" + id + "/reversal", "ph-a", "").status, 409);
  EXPECT_EQ(
      Post("/v1/dispenses", "ph-a",
           R"({"authorization_id":")" + id + R"(","lot_id":"L-1","medication_guide_given":true})")
          .status,
      409);

  const auto types = TypesOf("p-1");
  EXPECT_EQ(Count(types, "authorization"), 1u);
  EXPECT_EQ(Count(types, "dispense"), 1u);
  auto lot = w().service_store().GetLot("L-1");
  ASSERT_TRUE(lot.ok());
  EXPECT_EQ(lot->quantity_capsules, 470);
  auto after = Get("/v1/worklists/pharmacy", "ph-a");
  EXPECT_TRUE(after.obj().at("items").as_array().empty());
}

TEST_P(ApiTest, DeniedAuthorizationGivesEveryReasonAndWritesNothing) {
  auto r = Post(
      "/v1/patients", "dr-a",
      R"({"patient_id":"p-2","birth_date":"2001-05-05","jurisdiction":"US","category":"can_get_pregnant"})");
  ASSERT_EQ(r.status, 201);
  r = Post(
      "/v1/patients/p-2/prescriptions", "dr-a",
      R"({"id":"rx-1","product":"generic","doses_mg":[40],"days_supply":30,"refills":0,"at":"2026-09-14T12:20:00Z"})");
  ASSERT_EQ(r.status, 201);
  const int64_t version = Version("p-2");
  auto auth =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-2","prescription_id":"rx-1"})");
  ASSERT_EQ(auth.status, 200) << auth.raw.body;
  EXPECT_EQ(auth.str("decision"), "denied");
  std::set<std::string> codes;
  for (const auto& reason : auth.obj().at("reasons").as_array()) {
    codes.insert(std::string(reason.at("code").as_string()));
    EXPECT_FALSE(reason.at("message").as_string().empty());
  }
  EXPECT_TRUE(codes.contains("PREGNANCY_TEST_MISSING")) << auth.raw.body;
  EXPECT_EQ(Version("p-2"), version);  // nothing recorded in the stream
  // The denial and its reasons are in the audit.
  w().audit().Flush();
  service::AuditFilter f;
  f.patient_id = "p-2";
  f.limit = 100;
  auto records = w().service_store().ListAudit(f);
  ASSERT_TRUE(records.ok());
  bool found = false;
  for (const auto& a : *records) {
    found = found || (a.action == "POST /v1/authorizations" &&
                      a.detail.find("PREGNANCY_TEST_MISSING") != std::string::npos);
  }
  EXPECT_TRUE(found);
}

TEST_P(ApiTest, FiftyConcurrentRequestsMakeExactlyOneAuthorization) {
  EnrollReady("p-3");
  constexpr int kRequests = 50;
  std::vector<Reply> replies(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      replies[static_cast<size_t>(i)] = Post("/v1/authorizations", i % 2 == 0 ? "ph-a" : "ph-b",
                                             R"({"patient_id":"p-3","prescription_id":"rx-1"})");
    });
  }
  for (auto& t : threads) t.join();
  int created = 0, existing = 0, conflicts = 0;
  std::string id, winner;
  for (int i = 0; i < kRequests; ++i) {
    const Reply& r = replies[static_cast<size_t>(i)];
    if (r.status == 201) {
      ++created;
      id = r.str("authorization_id");
      winner = i % 2 == 0 ? "ph-a" : "ph-b";
    } else if (r.status == 200) {
      ++existing;
    } else if (r.status == 409) {
      ++conflicts;
    } else {
      ADD_FAILURE() << "status " << r.status << ": " << r.raw.body;
    }
  }
  EXPECT_EQ(created, 1);
  EXPECT_EQ(created + existing + conflicts, kRequests);
  // Every answer of the winning pharmacy names the one authorization; the other pharmacy's are
  // conflicts.
  for (int i = 0; i < kRequests; ++i) {
    const Reply& r = replies[static_cast<size_t>(i)];
    const std::string who = i % 2 == 0 ? "ph-a" : "ph-b";
    if (who == winner) {
      EXPECT_EQ(r.str("authorization_id"), id);
    } else {
      EXPECT_EQ(r.status, 409);
    }
  }
  EXPECT_EQ(Count(TypesOf("p-3"), "authorization"), 1u);
}

TEST_P(ApiTest, ReversalThenANewAuthorization) {
  EnrollReady("p-4");
  auto first =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-4","prescription_id":"rx-1"})");
  ASSERT_EQ(first.status, 201);
  EXPECT_EQ(Post("/v1/authorizations/" + first.str("authorization_id") + "/reversal", "ph-b",
                 R"({"reason":"not ours"})")
                .status,
            403);
  auto reversed = Post("/v1/authorizations/" + first.str("authorization_id") + "/reversal", "ph-a",
                       R"({"reason":"patient went elsewhere"})");
  ASSERT_EQ(reversed.status, 200) << reversed.raw.body;
  EXPECT_EQ(reversed.str("status"), "reversed");
  auto second =
      Post("/v1/authorizations", "ph-b", R"({"patient_id":"p-4","prescription_id":"rx-1"})");
  ASSERT_EQ(second.status, 201) << second.raw.body;
  EXPECT_NE(second.str("authorization_id"), first.str("authorization_id"));
  const auto types = TypesOf("p-4");
  EXPECT_EQ(Count(types, "authorization"), 2u);
  EXPECT_EQ(Count(types, "authorization_reversal"), 1u);
}

TEST_P(ApiTest, PharmacyViewListsTheOpenAuthorizationsWithTheirPharmacy) {
  EnrollReady("p-4v");
  auto open_of = [&](const std::string& who) {
    auto view = Get("/v1/patients/p-4v/pharmacy-view", who);
    EXPECT_EQ(view.status, 200) << view.raw.body;
    return view.obj().at("open_authorizations").as_array();
  };
  EXPECT_TRUE(open_of("ph-a").empty());
  auto first =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-4v","prescription_id":"rx-1"})");
  ASSERT_EQ(first.status, 201) << first.raw.body;
  auto open = open_of("ph-b");
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].at("authorization_id").as_string(), first.str("authorization_id"));
  EXPECT_EQ(open[0].at("prescription_id").as_string(), "rx-1");
  EXPECT_EQ(open[0].at("pharmacy_id").as_string(), "pharmacy-a");
  EXPECT_EQ(open[0].at("dispense_by").as_string(), first.str("dispense_by"));

  ASSERT_EQ(Post("/v1/authorizations/" + first.str("authorization_id") + "/reversal", "ph-a",
                 R"({"reason":"patient went elsewhere"})")
                .status,
            200);
  EXPECT_TRUE(open_of("ph-b").empty());
  auto second =
      Post("/v1/authorizations", "ph-b", R"({"patient_id":"p-4v","prescription_id":"rx-1"})");
  ASSERT_EQ(second.status, 201) << second.raw.body;
  open = open_of("ph-a");
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].at("authorization_id").as_string(), second.str("authorization_id"));
  EXPECT_EQ(open[0].at("pharmacy_id").as_string(), "pharmacy-b");
}

TEST_P(ApiTest, UnusedAuthorizationIsReversedAtItsDispenseBy) {
  EnrollReady("p-5");
  auto auth =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-5","prescription_id":"rx-1"})");
  ASSERT_EQ(auth.status, 201);
  ASSERT_TRUE(w().service().Project().ok());
  auto swept = w().service().Sweep();
  ASSERT_TRUE(swept.ok());
  EXPECT_EQ(*swept, 0);  // not due yet
  auto by = ParseOffsetTime(auth.str("dispense_by"));
  ASSERT_TRUE(by.ok());
  w().SetNow(by->instant.time_since_epoch().count() + 1);
  swept = w().service().Sweep();
  ASSERT_TRUE(swept.ok()) << swept.error().ToString();
  EXPECT_EQ(*swept, 1);
  auto a = w().service_store().GetAuthorization(auth.str("authorization_id"));
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ((*a)->status, service::AuthorizationStatus::kReversed);
  EXPECT_EQ((*a)->closed_by, "system");
  AddLot("ph-a", "L-5", "shelf-5");
  EXPECT_EQ(Post("/v1/dispenses", "ph-a",
                 R"({"authorization_id":")" + auth.str("authorization_id") +
                     R"(","lot_id":"L-5","medication_guide_given":true})")
                .status,
            409);
}

TEST_P(ApiTest, PositivePregnancyTestHaltsNotifiesAndFilesAReport) {
  EnrollReady("p-6");
  auto auth =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-6","prescription_id":"rx-1"})");
  ASSERT_EQ(auth.status, 201);
  auto positive = Post(
      "/v1/patients/p-6/events", "dr-a",
      R"({"type":"pregnancy_test","collected_at":"2026-09-14T13:30:00Z","result":"positive","setting":"lab","specimen":"serum"})");
  ASSERT_EQ(positive.status, 201) << positive.raw.body;
  ASSERT_TRUE(w().service().Project().ok());
  ASSERT_TRUE(w().service().Project().ok());  // the reversal it appended
  auto a = w().service_store().GetAuthorization(auth.str("authorization_id"));
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ((*a)->status, service::AuthorizationStatus::kReversed);
  auto inbox = Get("/v1/notifications?unread=true", "dr-a");
  ASSERT_EQ(inbox.status, 200);
  bool pregnancy = false;
  for (const auto& n : inbox.obj().at("items").as_array()) {
    pregnancy = pregnancy || n.at("kind") == "pregnancy";
  }
  EXPECT_TRUE(pregnancy) << inbox.raw.body;
  auto registry = Get("/v1/registry/pregnancies", "admin");
  ASSERT_EQ(registry.status, 200);
  ASSERT_EQ(registry.obj().at("items").as_array().size(), 1u);
  EXPECT_EQ(registry.obj().at("items").as_array()[0].at("patient_id"), "p-6");
  // And no new authorization while the test stands.
  auto again =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-6","prescription_id":"rx-1"})");
  EXPECT_EQ(again.str("decision"), "denied");
}

// The dispense checks the halt itself: the background reversal may not have run yet (its
// thread may be busy), and a positive test dated ahead of the service's clock halts too.
TEST_P(ApiTest, ADispenseIsRefusedOnAPositiveTestBeforeTheBackgroundReversal) {
  AddLot("ph-a", "L-h", "shelf-h");
  for (const std::string collected : {"2026-09-14T13:30:00Z", "2026-09-20T09:00:00Z"}) {
    const std::string patient = "p-h" + collected.substr(8, 2);
    EnrollReady(patient);
    auto auth = Post("/v1/authorizations", "ph-a",
                     R"({"patient_id":")" + patient + R"(","prescription_id":"rx-1"})");
    ASSERT_EQ(auth.status, 201) << auth.raw.body;
    ASSERT_TRUE(w().service().Project().ok());  // the read model has the authorization
    auto positive = Post("/v1/patients/" + patient + "/events", "dr-a",
                         R"({"type":"pregnancy_test","collected_at":")" + collected +
                             R"(","result":"positive","setting":"lab","specimen":"serum"})");
    ASSERT_EQ(positive.status, 201) << positive.raw.body;
    // No projection since the test: the authorization is still open in the read model.
    auto projected = w().service_store().GetAuthorization(auth.str("authorization_id"));
    ASSERT_TRUE(projected.ok() && projected->has_value());
    ASSERT_EQ((*projected)->status, service::AuthorizationStatus::kOpen);
    const int64_t version = Version(patient);
    auto dispense = Post("/v1/dispenses", "ph-a",
                         R"({"authorization_id":")" + auth.str("authorization_id") +
                             R"(","lot_id":"L-h","medication_guide_given":true})");
    EXPECT_EQ(dispense.status, 409) << collected << ": " << dispense.raw.body;
    EXPECT_NE(dispense.raw.body.find("pregnancy test is positive"), std::string::npos)
        << dispense.raw.body;
    EXPECT_EQ(Version(patient), version) << "nothing was recorded";
    // Asked again, the open authorization is reversed and the answer is a denial.
    auto again = Post("/v1/authorizations", "ph-a",
                      R"({"patient_id":")" + patient + R"(","prescription_id":"rx-1"})");
    EXPECT_EQ(again.str("decision"), "denied") << collected << ": " << again.raw.body;
    const auto types = TypesOf(patient);
    EXPECT_EQ(Count(types, "authorization_reversal"), 1u) << collected;
    EXPECT_EQ(Count(types, "dispense"), 0u) << collected;
  }
}

TEST_P(ApiTest, ACancelledPrescriptionIsNotDispensedThroughItsAuthorization) {
  AddLot("ph-a", "L-cx", "shelf-cx");
  // Cancelled, or withdrawn as entered in error: either way it is not to be dispensed.
  for (const std::string way : {"cancel", "correction"}) {
    const std::string patient = "p-cx-" + way;
    EnrollReady(patient);
    auto auth = Post("/v1/authorizations", "ph-a",
                     R"({"patient_id":")" + patient + R"(","prescription_id":"rx-1"})");
    ASSERT_EQ(auth.status, 201) << auth.raw.body;
    ASSERT_TRUE(w().service().Project().ok());
    auto voided = Post(way == "cancel" ? "/v1/patients/" + patient + "/prescriptions/rx-1/cancel"
                                       : "/v1/patients/" + patient + "/events/rx-1/correction",
                       "dr-a", "");
    ASSERT_LT(voided.status, 300) << way << ": " << voided.raw.body;
    const std::string dispense_body = R"({"authorization_id":")" + auth.str("authorization_id") +
                                      R"(","lot_id":"L-cx","medication_guide_given":true})";
    auto dispense = Post("/v1/dispenses", "ph-a", dispense_body);
    EXPECT_EQ(dispense.status, 409) << way << ": " << dispense.raw.body;
    EXPECT_NE(dispense.raw.body.find("was cancelled"), std::string::npos) << dispense.raw.body;
    // The background pass reverses the authorization.
    ASSERT_TRUE(w().service().Project().ok());
    ASSERT_TRUE(w().service().Project().ok());  // the reversal it appended
    auto a = w().service_store().GetAuthorization(auth.str("authorization_id"));
    ASSERT_TRUE(a.ok() && a->has_value());
    EXPECT_EQ((*a)->status, service::AuthorizationStatus::kReversed) << way;
    auto again = Post("/v1/authorizations", "ph-a",
                      R"({"patient_id":")" + patient + R"(","prescription_id":"rx-1"})");
    EXPECT_NE(again.str("decision"), "authorized") << way << ": " << again.raw.body;
    EXPECT_EQ(Post("/v1/dispenses", "ph-a", dispense_body).status, 409) << way;
    EXPECT_EQ(Count(TypesOf(patient), "dispense"), 0u) << way;
  }
}

// entered_in_error is one policy whichever route records it: the pharmacy's records are
// reversed, never withdrawn, and a prescription is withdrawn only by whoever may cancel it.
TEST_P(ApiTest, CorrectionsFollowOnePolicyOnEitherRoute) {
  EnrollReady("p-ee");
  auto auth =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-ee","prescription_id":"rx-1"})");
  ASSERT_EQ(auth.status, 201) << auth.raw.body;
  std::string authorization_event;
  auto stream = w().events().ReadStream("p-ee");
  ASSERT_TRUE(stream.ok());
  for (const auto& e : stream->entries) {
    if (e.type == "authorization") authorization_event = e.event_id;
  }
  ASSERT_FALSE(authorization_event.empty());
  const int64_t version = Version("p-ee");
  auto raw = Post("/v1/patients/p-ee/events", "dr-a",
                  R"({"type":"entered_in_error","target":")" + authorization_event + R"("})");
  EXPECT_EQ(raw.status, 400) << raw.raw.body;
  EXPECT_NE(raw.raw.body.find("events[0].target"), std::string::npos) << raw.raw.body;
  EXPECT_EQ(
      Post("/v1/patients/p-ee/events/" + authorization_event + "/correction", "dr-a", "").status,
      400);
  // Clinic staff may not cancel a prescription, so may not withdraw it either way.
  EXPECT_EQ(Post("/v1/patients/p-ee/events/rx-1/correction", "staff-a", "").status, 403);
  EXPECT_EQ(
      Post("/v1/patients/p-ee/events", "staff-a", R"({"type":"entered_in_error","target":"rx-1"})")
          .status,
      403);
  EXPECT_EQ(Version("p-ee"), version) << "nothing was recorded";
  // The authorization still stands, and the prescriber may still withdraw a weight.
  auto again =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-ee","prescription_id":"rx-1"})");
  EXPECT_EQ(again.str("authorization_id"), auth.str("authorization_id")) << again.raw.body;
}

TEST_P(ApiTest, EnrollingTheIdOfAnUnlinkedImportedPatientGivesNoAccess) {
  store::AppendRequest imported;
  imported.patient_id = "p-imp";
  imported.expected_version = 0;
  imported.actor = store::Actor{"import", "system", "test"};
  imported.entries = {
      R"({"type":"patient","id":"p-imp","birth_date":"1990-01-01","jurisdiction":"US","category":"cannot_get_pregnant"})"};
  ASSERT_TRUE(w().events().Append(imported).ok());
  // A bad request says nothing of whether an id is taken: the same 400 for a taken and a free id.
  EnrollReady("p-taken");
  for (const std::string id : {"p-taken", "p-imp", "p-free"}) {
    auto bad = Post(
        "/v1/patients", "dr-b",
        R"({"patient_id":")" + id +
            R"(","birth_date":"1990-13-01","jurisdiction":"US","category":"cannot_get_pregnant"})");
    EXPECT_EQ(bad.status, 400) << id << ": " << bad.raw.body;
  }
  auto enroll = Post(
      "/v1/patients", "dr-b",
      R"({"patient_id":"p-imp","birth_date":"1990-01-01","jurisdiction":"US","category":"cannot_get_pregnant"})");
  EXPECT_EQ(enroll.status, 409) << enroll.raw.body;
  EXPECT_EQ(Get("/v1/patients/p-imp", "dr-b").status, 403);
  auto care = w().service_store().GetCareLink("p-imp");
  ASSERT_TRUE(care.ok());
  EXPECT_FALSE(care->has_value()) << "no care link was made";
}

TEST_P(ApiTest, IdsCannotCarryHeadersAndLocationsAreEncoded) {
  auto bad = Post("/v1/patients", "dr-a",
                  "{\"patient_id\":\"p-x\\r\\nSet-Cookie: a=b\",\"birth_date\":\"1995-03-02\","
                  "\"jurisdiction\":\"US\",\"category\":\"cannot_get_pregnant\"}");
  EXPECT_EQ(bad.status, 400) << bad.raw.body;
  EXPECT_EQ(bad.str("field"), "patient_id") << bad.raw.body;
  EXPECT_EQ(bad.raw.header("set-cookie"), nullptr);
  EnrollReady("p-loc");
  auto rx = Post("/v1/patients/p-loc/prescriptions", "dr-a",
                 "{\"id\":\"rx 2/\\r\\nX-Injected: 1\",\"product\":\"generic\",\"doses_mg\":[40],"
                 "\"days_supply\":30,\"refills\":0,\"at\":\"2026-09-14T12:25:00Z\"}");
  ASSERT_EQ(rx.status, 201) << rx.raw.body;
  EXPECT_EQ(rx.raw.header("x-injected"), nullptr);
  ASSERT_NE(rx.raw.header("location"), nullptr);
  EXPECT_EQ(*rx.raw.header("location"),
            "/v1/patients/p-loc/prescriptions/rx%202%2F%0D%0AX-Injected%3A%201/evaluation");
}

TEST_P(ApiTest, SelfHarmAnswerShowsCrisisResourcesOfThePatientsCountry) {
  auto r = Post(
      "/v1/patients", "dr-a",
      R"({"patient_id":"p-uk","birth_date":"1999-01-01","jurisdiction":"UK","category":"cannot_get_pregnant"})");
  ASSERT_EQ(r.status, 201);
  const std::string patient_token = w().User("pat-uk", "clinic-a", service::Role::kPatient, "p-uk");
  auto phq = w().Call("POST", "/v1/patients/p-uk/events", patient_token,
                      R"({"type":"phq9","at":"2026-09-14T13:00:00Z","items":[1,1,0,0,0,0,0,0,2]})");
  ASSERT_EQ(phq.status, 201) << phq.raw.body;
  ASSERT_TRUE(phq.obj().contains("crisis"));
  EXPECT_EQ(phq.obj().at("crisis").at("phone"), "116 123");
  ASSERT_TRUE(w().service().Project().ok());
  auto inbox = Get("/v1/notifications", "dr-a");
  bool told = false;
  for (const auto& n : inbox.obj().at("items").as_array()) {
    told = told || (n.at("kind") == "suicidal_ideation" && n.at("patient_id") == "p-uk");
  }
  EXPECT_TRUE(told);
  // The patient reports a side effect the leaflet lists as serious.
  auto ae = w().Call(
      "POST", "/v1/patients/p-uk/events", patient_token,
      R"({"type":"adverse_event","at":"2026-09-14T13:05:00Z","term":"Dark urine","serious":false})");
  ASSERT_EQ(ae.status, 201) << ae.raw.body;
  ASSERT_TRUE(ae.obj().contains("contact_prescriber_now"));
  // A patient may not record what a clinician records, nor read another patient.
  EXPECT_EQ(w().Call("POST", "/v1/patients/p-uk/events", patient_token,
                     R"({"type":"weight","at":"2026-09-14T13:00:00Z","kg":60})")
                .status,
            403);
  EnrollReady("p-other");
  EXPECT_EQ(w().Call("GET", "/v1/patients/p-other", patient_token).status, 403);
  auto own = w().Call("GET", "/v1/patients/p-uk", patient_token);
  EXPECT_EQ(own.status, 200);
  auto ics = w().Call("GET", "/v1/patients/p-uk/calendar.ics", patient_token);
  ASSERT_EQ(ics.status, 200);
  EXPECT_NE(ics.raw.header("content-type")->find("text/calendar"), std::string::npos);
  EXPECT_EQ(ics.raw.body.rfind("BEGIN:VCALENDAR\r\n", 0), 0u);
  EXPECT_NE(ics.raw.body.find("BEGIN:VEVENT"), std::string::npos);
}

TEST_P(ApiTest, TemperatureExcursionQuarantinesUntilReleased) {
  EnrollReady("p-7");
  AddLot("ph-a", "L-7", "fridge-free-1");
  AddLot("ph-a", "L-old", "shelf-9", "2026-01-31");
  auto reading =
      Post("/v1/stock/temperatures", "ph-a", R"({"location":"fridge-free-1","celsius":31})");
  ASSERT_EQ(reading.status, 201) << reading.raw.body;
  EXPECT_EQ(reading.obj().at("excursion"), true);
  ASSERT_EQ(reading.obj().at("quarantined_lot_ids").as_array().size(), 1u);
  auto in_range = Post("/v1/stock/temperatures", "ph-a", R"({"location":"shelf-9","celsius":30})");
  EXPECT_EQ(in_range.obj().at("excursion"), false);

  auto auth =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-7","prescription_id":"rx-1"})");
  ASSERT_EQ(auth.status, 201);
  const std::string body_quarantined = R"({"authorization_id":")" + auth.str("authorization_id") +
                                       R"(","lot_id":"L-7","medication_guide_given":true})";
  auto refused = Post("/v1/dispenses", "ph-a", body_quarantined);
  EXPECT_EQ(refused.status, 409);
  EXPECT_EQ(refused.str("field"), "lot_id");
  auto expired = Post("/v1/dispenses", "ph-a",
                      R"({"authorization_id":")" + auth.str("authorization_id") +
                          R"(","lot_id":"L-old","medication_guide_given":true})");
  EXPECT_EQ(expired.status, 409);
  EXPECT_EQ(Post("/v1/stock/lots/L-7/release", "ph-b", R"({"reason":"x"})").status, 403);
  auto released = Post("/v1/stock/lots/L-7/release", "ph-a",
                       R"({"reason":"manufacturer data: stable at 31 °C for 24 h"})");
  ASSERT_EQ(released.status, 200) << released.raw.body;
  EXPECT_EQ(released.obj().at("quarantined"), false);
  EXPECT_EQ(Post("/v1/dispenses", "ph-a", body_quarantined).status, 201);
  auto events = Get("/v1/stock/lots/L-7/quarantine-events", "ph-a");
  ASSERT_EQ(events.status, 200);
  EXPECT_EQ(events.obj().at("items").as_array().size(), 2u);
}

TEST_P(ApiTest, PrescriberWorklistShowsWhatIsDueAndStaysInTheClinic) {
  EnrollReady("p-8");
  // In treatment: the engine's due list then holds NO_BLOOD_DONATION_UNTIL, advice with an end
  // date that the worklist must not show as a task.
  auto auth =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-8","prescription_id":"rx-1"})");
  ASSERT_EQ(auth.status, 201);
  AddLot("ph-a", "L-8", "shelf-8");
  ASSERT_EQ(Post("/v1/dispenses", "ph-a",
                 R"({"authorization_id":")" + auth.str("authorization_id") +
                     R"(","lot_id":"L-8","medication_guide_given":true})")
                .status,
            201);
  auto r = Post(
      "/v1/patients", "dr-b",
      R"({"patient_id":"p-b","birth_date":"1990-01-01","jurisdiction":"US","category":"can_get_pregnant"})");
  ASSERT_EQ(r.status, 201);
  w().Advance(std::chrono::hours(24 * 40));
  auto list = Get("/v1/worklists/prescriber?as_of=2026-11-08&limit=10", "dr-a");
  ASSERT_EQ(list.status, 200) << list.raw.body;
  const auto& items = list.obj().at("items").as_array();
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].at("patient_id"), "p-8");
  EXPECT_FALSE(items[0].at("overdue").as_array().empty());
  auto evaluation =
      Get("/v1/patients/p-8/prescriptions/rx-1/evaluation?at=2026-11-08T12:00:00Z", "dr-a");
  ASSERT_EQ(evaluation.status, 200);
  EXPECT_NE(evaluation.raw.body.find("NO_BLOOD_DONATION_UNTIL"), std::string::npos);
  for (const char* kind : {"overdue", "due"}) {
    for (const auto& code : items[0].at(kind).as_array()) {
      EXPECT_FALSE(std::string(code.as_string()).ends_with("_UNTIL")) << code;  // not tasks
    }
  }
  EXPECT_EQ(Get("/v1/patients/p-b", "dr-a").status, 403);
  EXPECT_EQ(Get("/v1/worklists/prescriber", "ph-a").status, 403);

  // Lines are kept per patient, version and day: asked again, the same list; a new event or
  // another day, the line computed afresh.
  const std::string first = list.raw.body;
  EXPECT_EQ(Get("/v1/worklists/prescriber?as_of=2026-11-08&limit=10", "dr-a").raw.body, first);
  EXPECT_NE(Get("/v1/worklists/prescriber?as_of=2026-09-15&limit=10", "dr-a").raw.body, first);
  EXPECT_TRUE(items[0].at("worst_severity").is_null()) << first;  // no alert yet
  ASSERT_EQ(Post("/v1/patients/p-8/events", "dr-a",
                 R"({"events":[{"type":"lab","at":"2026-10-20T10:00:00Z","test":"ALT",)"
                 R"("value":400,"unit":"U/L","uln":40}]})")
                .status,
            201);
  auto after = Get("/v1/worklists/prescriber?as_of=2026-11-08&limit=10", "dr-a");
  ASSERT_EQ(after.status, 200);
  ASSERT_EQ(after.obj().at("items").as_array().size(), 1u);
  EXPECT_EQ(after.obj().at("items").as_array()[0].at("worst_severity"), "critical")
      << after.raw.body;
}

TEST_P(ApiTest, RequestsNamingUnstorablePatientIdsAreAuditedAndTheAuditGoesOn) {
  EnrollReady("p-aud");
  // Ids no patient can have: longer than any id, or holding a NUL (valid UTF-8, which a
  // PostgreSQL text column refuses). Each request is refused and audited all the same.
  const std::string long_id(200, 'x');
  for (const std::string& id : {long_id, std::string("p%00x")}) {
    auto r = Get("/v1/patients/" + id, "dr-a");
    EXPECT_GE(r.status, 400) << id;
    EXPECT_LT(r.status, 500) << id << " " << r.raw.body;
  }
  // The audit writer is not stuck on them: a later request's record is written.
  ASSERT_EQ(Get("/v1/patients/p-aud", "dr-a").status, 200);
  w().audit().Flush();
  service::AuditFilter f;
  f.limit = 1000;
  auto records = w().service_store().ListAudit(f);
  ASSERT_TRUE(records.ok()) << records.error().ToString();
  int of_p_aud = 0;
  int of_long = 0;
  for (const auto& a : *records) {
    if (a.patient_id == "p-aud" && a.action.starts_with("GET")) ++of_p_aud;
    if (a.patient_id.starts_with("xxxx")) {
      ++of_long;
      EXPECT_LE(a.patient_id.size(), service::kMaxIdBytes);
      EXPECT_NE(a.detail.find("200 bytes"), std::string::npos) << a.detail;
    }
  }
  EXPECT_EQ(of_p_aud, 1);
  EXPECT_EQ(of_long, 1);
}

TEST_P(ApiTest, AnImportedAuthorizationWithoutPharmacyHoldsThePrescription) {
  EnrollReady("p-imp");
  // An authorization of an imported history: the record format has no pharmacy field.
  store::AppendRequest imported;
  imported.patient_id = "p-imp";
  imported.entries = {R"({"type":"authorization","at":"2026-09-14T12:30:00Z",)"
                      R"("prescription":"rx-1","authorization":"A-imported",)"
                      R"("dispense_by":"2030-01-01T00:00:00Z"})"};
  imported.actor = store::Actor{"import-1", "importer", "test"};
  ASSERT_TRUE(w().events().Append(imported).ok());
  auto r = Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-imp","prescription_id":"rx-1"})");
  EXPECT_EQ(r.status, 409) << r.raw.body;
  EXPECT_EQ(r.str("field"), "prescription_id");
  EXPECT_NE(r.raw.body.find("another pharmacy (not named in the record)"), std::string::npos)
      << r.raw.body;
}

TEST_P(ApiTest, PrescriberWorklistFiltersBeforePaging) {
  for (const char* p : {"p-f1", "p-f2", "p-f3"}) EnrollReady(p);
  ASSERT_EQ(Post("/v1/patients/p-f2/events", "dr-a",
                 R"({"events":[{"type":"lab","at":"2026-10-20T10:00:00Z","test":"ALT",)"
                 R"("value":400,"unit":"U/L","uln":40}]})")
                .status,
            201);
  const std::string base = "/v1/worklists/prescriber?as_of=2026-11-08";
  auto whole = Get(base + "&limit=1000", "dr-a");
  ASSERT_EQ(whole.status, 200) << whole.raw.body;
  const json::array all = whole.obj().at("items").as_array();
  ASSERT_EQ(all.size(), 3u) << whole.raw.body;
  // What each filter must give: the whole list filtered here, in the server's order.
  auto expected = [&](const std::function<bool(const json::object&)>& keep) {
    std::vector<std::string> ids;
    for (const auto& v : all) {
      if (keep(v.as_object())) ids.emplace_back(v.at("patient_id").as_string());
    }
    return ids;
  };
  auto pages_of = [&](const std::string& query, size_t page_size) {
    std::vector<std::string> ids;
    for (size_t offset = 0;; offset += page_size) {
      auto r = Get(base + query + "&limit=" + std::to_string(page_size) +
                       "&offset=" + std::to_string(offset),
                   "dr-a");
      EXPECT_EQ(r.status, 200) << query << " " << r.raw.body;
      if (r.status != 200) break;
      for (const auto& v : r.obj().at("items").as_array()) {
        ids.emplace_back(v.at("patient_id").as_string());
      }
      if (offset + page_size >= static_cast<size_t>(r.obj().at("total").as_int64())) break;
    }
    return ids;
  };
  auto has = [](const json::object& o, const char* kind) { return !o.at(kind).as_array().empty(); };
  const std::string critical_code(all[0].at("alerts").as_array().at(0).as_string());
  EXPECT_EQ(all[0].at("patient_id"), "p-f2");  // critical first
  EXPECT_EQ(all[0].at("worst_severity"), "critical");
  const std::vector<std::string> critical = {"p-f2"};
  EXPECT_EQ(pages_of("&severity=critical", 1), critical);
  EXPECT_EQ(pages_of("&severity=none", 1),
            expected([](const json::object& o) { return o.at("worst_severity").is_null(); }));
  const std::vector<std::string> warnings = {"p-f1", "p-f3"};  // baseline labs missing
  EXPECT_EQ(pages_of("&severity=warning", 1), warnings);
  EXPECT_EQ(pages_of("&status=alerting", 2),
            expected([&](const json::object& o) { return has(o, "alerts"); }));
  EXPECT_EQ(pages_of("&status=overdue", 2),
            expected([&](const json::object& o) { return has(o, "overdue"); }));
  EXPECT_EQ(pages_of("&status=due", 2),
            expected([&](const json::object& o) { return has(o, "due"); }));
  // Text: a part of the patient id or of a code, in any case.
  EXPECT_EQ(pages_of("&q=F3", 1), std::vector<std::string>{"p-f3"});
  std::string lowered = critical_code;
  for (char& c : lowered) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  EXPECT_EQ(pages_of("&q=" + lowered, 1), critical);
  EXPECT_TRUE(pages_of("&q=nothing-has-this", 1).empty());
  EXPECT_EQ(pages_of("&severity=critical&q=p-f1", 1), std::vector<std::string>{});
  // Bad filters are named.
  for (const auto& [query, field] : std::vector<std::pair<std::string, std::string>>{
           {"&severity=urgent", "severity"},
           {"&status=late", "status"},
           {"&q=" + std::string(service::kMaxWorklistFilterText + 1, 'x'), "q"}}) {
    auto bad = Get(base + query, "dr-a");
    EXPECT_EQ(bad.status, 400) << query;
    EXPECT_EQ(bad.str("field"), field) << bad.raw.body;
  }
  EXPECT_EQ(Get(base + "&q=" + std::string(service::kMaxWorklistFilterText, 'x'), "dr-a").status,
            200);
}

TEST_P(ApiTest, AnErasedPatientLeavesTheWorklistThoughItsLineWasKept) {
  EnrollReady("p-er1");
  EnrollReady("p-er2");
  const std::string url = "/v1/worklists/prescriber?as_of=2026-11-08";
  auto before = Get(url, "dr-a");
  ASSERT_EQ(before.status, 200);
  ASSERT_EQ(before.obj().at("total"), 2);  // both lines computed and kept
  // Erasure leaves the stream's version as it was: the kept line must not outlive it.
  ASSERT_TRUE(
      w().events().ErasePatient("p-er1", store::Actor{"dpo-1", "privacy_officer", "test"}).ok());
  auto after = Get(url, "dr-a");
  ASSERT_EQ(after.status, 200) << after.raw.body;
  EXPECT_EQ(after.obj().at("total"), 1);
  const auto& items = after.obj().at("items").as_array();
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].at("patient_id"), "p-er2");
}

TEST_P(ApiTest, RemindersBeforeAWindowClosesOnceEach) {
  EnrollReady("p-r");
  const std::string patient_token = w().User("pat-r", "clinic-a", service::Role::kPatient, "p-r");
  // The PHQ-9 of 2026-09-14 makes the next one due by 2026-10-14: two days before, a reminder.
  w().SetNow(kTestNowMs + int64_t{28} * 24 * 3600 * 1000);
  auto made = w().service().Remind();
  ASSERT_TRUE(made.ok()) << made.error().ToString();
  EXPECT_GT(*made, 0);
  auto inbox = w().Call("GET", "/v1/notifications", patient_token);
  ASSERT_EQ(inbox.status, 200);
  size_t reminders = 0;
  for (const auto& n : inbox.obj().at("items").as_array()) {
    if (n.at("kind") == "reminder") {
      ++reminders;
      EXPECT_NE(std::string(n.at("message").as_string()).find("PHQ-9"), std::string::npos);
    }
  }
  EXPECT_GE(reminders, 1u);
  ASSERT_TRUE(w().service().Remind().ok());
  auto again = w().Call("GET", "/v1/notifications", patient_token);
  EXPECT_EQ(again.obj().at("items").as_array().size(), inbox.obj().at("items").as_array().size());
  auto prescriber = Get("/v1/notifications", "dr-a");
  bool told = false;
  for (const auto& n : prescriber.obj().at("items").as_array()) {
    told = told || (n.at("kind") == "reminder" && n.at("patient_id") == "p-r");
  }
  EXPECT_TRUE(told);
}

TEST_P(ApiTest, IfMatchAndIdempotencyKey) {
  EnrollReady("p-9");
  const std::string weight = R"({"type":"weight","at":"2026-09-14T13:00:00Z","kg":63})";
  auto stale = Post("/v1/patients/p-9/events", "dr-a", weight, {{"If-Match", "\"3\""}});
  EXPECT_EQ(stale.status, 412) << stale.raw.body;
  auto fresh = Post(
      "/v1/patients/p-9/events", "dr-a", weight,
      {{"If-Match", "\"" + std::to_string(Version("p-9")) + "\""}, {"Idempotency-Key", "w-1"}});
  ASSERT_EQ(fresh.status, 201) << fresh.raw.body;
  const int64_t version = Version("p-9");
  auto replay = Post("/v1/patients/p-9/events", "dr-a", weight, {{"Idempotency-Key", "w-1"}});
  EXPECT_EQ(replay.status, 200);
  EXPECT_EQ(replay.obj().at("replayed"), true);
  EXPECT_EQ(Version("p-9"), version);
  // A correction withdraws an event and is itself a new event.
  const std::string target = std::string(fresh.obj().at("event_ids").as_array()[0].as_string());
  auto corrected = Post("/v1/patients/p-9/events/" + target + "/correction", "dr-a", "");
  ASSERT_EQ(corrected.status, 201) << corrected.raw.body;
  EXPECT_EQ(Version("p-9"), version + 1);
  EXPECT_EQ(Post("/v1/patients/p-9/events/nope/correction", "dr-a", "").status, 404);
}

TEST_P(ApiTest, BadInputIsRefusedPreciselyAndChangesNothing) {
  EnrollReady("p-10");
  const int64_t version = Version("p-10");
  struct Case {
    std::string name, target, body, content_type;
    int status;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"malformed json", "/v1/patients/p-10/events", R"({"type":"weight",)", "application/json",
       400, ""},
      {"wrong type", "/v1/patients/p-10/events",
       R"({"type":"weight","at":"2026-09-14T13:00:00Z","kg":"heavy"})", "application/json", 400,
       "events[0].kg"},
      {"unknown event type", "/v1/patients/p-10/events",
       R"({"type":"teleport","at":"2026-09-14T13:00:00Z"})", "application/json", 400,
       "events[0].type"},
      {"unknown field", "/v1/authorizations",
       R"({"patient_id":"p-10","prescription_id":"rx-1","pharmacy":"x"})", "application/json", 400,
       "pharmacy"},
      {"wrong media type", "/v1/patients/p-10/events", R"({"type":"weight"})", "text/plain", 415,
       ""},
      {"invalid utf-8", "/v1/patients/p-10/events",
       "{\"type\":\"adverse_event\",\"at\":\"2026-09-14T13:00:00Z\",\"term\":\"\xff\xfe\","
       "\"serious\":false}",
       "application/json", 400, ""},
      {"enroll without birth date", "/v1/patients",
       R"({"patient_id":"p-x","jurisdiction":"US","category":"can_get_pregnant"})",
       "application/json", 400, "birth_date"},
      {"enroll with a bad date", "/v1/patients",
       R"({"patient_id":"p-y","birth_date":"1990-02-30","jurisdiction":"US","category":"can_get_pregnant"})",
       "application/json", 400, "birth_date"},
  };
  for (const Case& c : cases) {
    const std::string who = c.target == "/v1/authorizations" ? "ph-a" : "dr-a";
    auto r = w().Call("POST", c.target, T(who), c.body, {}, c.content_type);
    EXPECT_EQ(r.status, c.status) << c.name << ": " << r.raw.body;
    EXPECT_NE(r.raw.header("content-type")->find("application/problem+json"), std::string::npos)
        << c.name;
    if (!c.field.empty()) {
      EXPECT_EQ(r.str("field"), c.field) << c.name << ": " << r.raw.body;
    }
  }
  // Too large: refused before the body is read.
  auto big = w().Call("POST", "/v1/patients/p-10/events", T("dr-a"),
                      std::string(kMaxApiBodyBytes + 1, ' '));
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(Version("p-10"), version);
  EXPECT_EQ(Version("p-x"), 0);
  EXPECT_EQ(Version("p-y"), 0);
}

TEST_P(ApiTest, TokensExpireAreRevokedAndDieWithTheirAccount) {
  EnrollReady("p-11");
  EXPECT_EQ(w().Call("GET", "/v1/patients/p-11", "").status, 401);
  EXPECT_EQ(w().Call("GET", "/v1/patients/p-11", "igt_" + std::string(43, 'A')).status, 401);
  auto r = w().Call("GET", "/v1/patients/p-11", "not-a-token");
  EXPECT_EQ(r.status, 401);
  EXPECT_NE(r.raw.header("www-authenticate"), nullptr);

  // Sign in with a password; sign out revokes the session token.
  w().User("dr-pw", "clinic-a", service::Role::kPrescriber, "", "correct horse battery");
  EXPECT_EQ(
      w().Call("POST", "/v1/sessions", "", R"({"account_id":"dr-pw","password":"wrong password!"})")
          .status,
      401);
  auto session = w().Call("POST", "/v1/sessions", "",
                          R"({"account_id":"dr-pw","password":"correct horse battery"})");
  ASSERT_EQ(session.status, 201) << session.raw.body;
  const std::string token = session.str("token");
  EXPECT_EQ(w().Call("GET", "/v1/patients/p-11", token).status, 200);
  EXPECT_EQ(w().Call("DELETE", "/v1/sessions/current", token).status, 204);
  EXPECT_EQ(w().Call("GET", "/v1/patients/p-11", token).status, 401);

  // Expired: the session lives 12 hours.
  auto s2 = w().Call("POST", "/v1/sessions", "",
                     R"({"account_id":"dr-pw","password":"correct horse battery"})");
  ASSERT_EQ(s2.status, 201);
  w().Advance(std::chrono::hours(13));
  EXPECT_EQ(w().Call("GET", "/v1/me", s2.str("token")).status, 401);

  // Disabled by the admin: its token stops working at once.
  EXPECT_EQ(Get("/v1/me", "staff-a").status, 200);
  EXPECT_EQ(Post("/v1/accounts/staff-a/disable", "dr-a", "").status, 403);
  EXPECT_EQ(Post("/v1/accounts/staff-a/disable", "admin", "").status, 200);
  EXPECT_EQ(Get("/v1/me", "staff-a").status, 401);

  // Disabled by another process (the `isoguard admin` command writes the store directly):
  // refused once this process's two-second memory of the token has passed.
  EXPECT_EQ(Get("/v1/me", "dr-b").status, 200);
  ASSERT_TRUE(w().service_store().SetAccountDisabled("dr-b", true).ok());
  w().Advance(std::chrono::milliseconds(service::Authenticator::kTokenCacheMs + 1));
  EXPECT_EQ(Get("/v1/me", "dr-b").status, 401);

  // Refused attempts are audited too.
  w().audit().Flush();
  service::AuditFilter f;
  f.limit = 1000;
  auto records = w().service_store().ListAudit(f);
  ASSERT_TRUE(records.ok());
  int refused = 0;
  for (const auto& a : *records) refused += a.outcome == "refused" ? 1 : 0;
  EXPECT_GE(refused, 5);
}

// The role x route matrix: every route of the router, asked by every role (and by a caller
// from another organisation where that matters); the expected cells are written here, not
// derived from the policy table.
TEST_P(ApiTest, RoleByRouteMatrix) {
  EnrollReady("p-m");
  w().tokens["patient-m"] = w().User("patient-m", "clinic-a", service::Role::kPatient, "p-m");
  auto auth =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-m","prescription_id":"rx-1"})");
  ASSERT_EQ(auth.status, 201);
  const std::string a = auth.str("authorization_id");
  AddLot("ph-a", "L-m", "shelf-m");
  ASSERT_TRUE(w().service().Project().ok());

  struct Row {
    std::string method, target, body;
    std::set<std::string> allowed;  // roles whose request is not refused (401/403)
  };
  const std::string ev = R"({"type":"weight","at":"2026-09-14T13:00:00Z","kg":62.5})";
  const std::string report =
      R"({"type":"comprehension","at":"2026-09-14T13:00:00Z","passed":true})";
  const std::vector<Row> rows = {
      {"GET", "/v1/me", "", {"dr-a", "staff-a", "dr-b", "ph-a", "ph-b", "admin", "patient-m"}},
      {"GET",
       "/v1/knowledge",
       "",
       {"dr-a", "staff-a", "dr-b", "ph-a", "ph-b", "admin", "patient-m"}},
      {"GET",
       "/v1/dose-plan?weight_kg=60&mg_per_kg_day=0.5",
       "",
       {"dr-a", "staff-a", "dr-b", "ph-a", "ph-b", "admin", "patient-m"}},
      {"POST",
       "/v1/patients",
       R"({"birth_date":"1990-01-01","jurisdiction":"US","category":"can_get_pregnant"})",
       {"dr-a", "staff-a", "dr-b"}},
      {"GET", "/v1/patients/p-m", "", {"dr-a", "staff-a", "patient-m"}},
      {"GET", "/v1/patients/p-m/events", "", {"dr-a", "staff-a", "patient-m"}},
      {"POST", "/v1/patients/p-m/events", ev, {"dr-a", "staff-a"}},
      {"POST", "/v1/patients/p-m/events", report, {"dr-a", "staff-a", "patient-m"}},
      {"POST",
       "/v1/patients/p-m/prescriptions",
       R"({"product":"generic","doses_mg":[40],"days_supply":30,"refills":0})",
       {"dr-a"}},
      {"GET",
       "/v1/patients/p-m/prescriptions/rx-1/evaluation",
       "",
       {"dr-a", "staff-a", "patient-m"}},
      {"GET", "/v1/patients/p-m/calendar.ics", "", {"dr-a", "staff-a", "patient-m"}},
      {"GET", "/v1/patients/p-m/pharmacy-view", "", {"ph-a", "ph-b"}},
      {"POST",
       "/v1/authorizations",
       R"({"patient_id":"p-m","prescription_id":"rx-1"})",
       {"ph-a", "ph-b"}},
      {"GET", "/v1/authorizations/" + a, "", {"ph-a", "ph-b"}},
      {"GET", "/v1/worklists/prescriber", "", {"dr-a", "staff-a", "dr-b"}},
      {"GET", "/v1/worklists/pharmacy", "", {"ph-a", "ph-b"}},
      {"GET", "/v1/stock/lots", "", {"ph-a", "ph-b"}},
      {"GET", "/v1/stock/temperatures", "", {"ph-a", "ph-b"}},
      {"POST",
       "/v1/stock/temperatures",
       R"({"location":"shelf-z","celsius":21})",
       {"ph-a", "ph-b"}},
      {"GET", "/v1/stock/lots/L-m/quarantine-events", "", {"ph-a", "ph-b"}},
      {"GET",
       "/v1/notifications",
       "",
       {"dr-a", "staff-a", "dr-b", "ph-a", "ph-b", "admin", "patient-m"}},
      {"GET", "/v1/audit", "", {"admin"}},
      {"GET", "/v1/registry/pregnancies", "", {"admin"}},
      {"POST",
       "/v1/organisations",
       R"({"id":"o-x","kind":"clinic","name":"x","jurisdiction":"US"})",
       {"admin"}},
      {"POST", "/v1/accounts/ph-b/tokens", R"({"label":"x"})", {"admin"}},
      {"POST",
       "/v1/accounts",
       R"({"id":"new-dr","org_id":"clinic-a","role":"prescriber","name":"x"})",
       {"admin"}},
      {"POST", "/v1/accounts/dummy/disable", "", {"admin"}},
      {"POST", "/v1/accounts/dummy/enable", "", {"admin"}},
      {"POST",
       "/v1/notifications/1/read",
       "",
       {"dr-a", "staff-a", "dr-b", "ph-a", "ph-b", "admin", "patient-m"}},
      {"POST",
       "/v1/stock/lots",
       R"({"product":"generic","strength_mg":20,"lot_number":"N","expiry":"2028-01-01","location":"s","quantity_capsules":10})",
       {"ph-a", "ph-b"}},
      {"POST", "/v1/stock/lots/L-m/release", R"({"reason":"fine"})", {"ph-a"}},
      {"POST", "/v1/patients/p-m/events/p-m-3/correction", "", {"dr-a", "staff-a"}},
      {"POST",
       "/v1/dispenses",
       R"({"authorization_id":")" + a + R"(","lot_id":"L-m","medication_guide_given":true})",
       {"ph-a"}},
      {"POST", "/v1/authorizations/" + a + "/reversal", "", {"ph-a"}},
      {"POST",
       "/v1/webhooks",
       R"({"url":"http://127.0.0.1:9/hook"})",
       {"dr-a", "staff-a", "dr-b", "ph-a", "ph-b", "admin"}},
      {"GET", "/v1/webhooks", "", {"dr-a", "staff-a", "dr-b", "ph-a", "ph-b", "admin"}},
      {"POST", "/v1/patients/p-m/prescriptions/rx-1/cancel", "", {"dr-a"}},
  };
  w().User("dummy", "clinic-b", service::Role::kClinicStaff);
  const std::vector<std::string> roles = {"dr-a", "staff-a", "dr-b",     "ph-a",
                                          "ph-b", "admin",   "patient-m"};
  std::set<std::string> covered;
  for (const Row& row : rows) {
    for (const std::string& role : roles) {
      auto r = w().Call(row.method, row.target, T(role), row.body);
      const bool refused = r.status == 401 || r.status == 403;
      EXPECT_EQ(!refused, row.allowed.contains(role))
          << row.method << " " << row.target << " as " << role << ": " << r.status << " "
          << r.raw.body;
      if (r.status >= 500) ADD_FAILURE() << row.method << " " << row.target << ": " << r.raw.body;
    }
    auto anonymous = w().Call(row.method, row.target, "", row.body);
    EXPECT_EQ(anonymous.status, 401) << row.method << " " << row.target;
    const std::string path = row.target.substr(0, row.target.find('?'));
    covered.insert(row.method + " " + w().router().Match(row.method, path).pattern);
  }
  // Every route under /v1 is in the matrix, but the two that sign in and out (public, and
  // revoking the token would end the matrix; TokensExpireAreRevokedAndDieWithTheirAccount
  // checks them).
  const std::set<std::string> elsewhere = {"POST /v1/sessions", "DELETE /v1/sessions/current"};
  for (const RouteInfo& r : w().router().Routes()) {
    const std::string route = r.method + " " + r.pattern;
    if (!r.pattern.starts_with("/v1/") || elsewhere.contains(route)) continue;
    EXPECT_TRUE(covered.contains(route)) << route << " is not in the role x route matrix";
  }
}

// A receiver of webhook posts on loopback: answers the first `fail_first` requests 500, then
// 200, and keeps every request it read.
class WebhookReceiver {
 public:
  explicit WebhookReceiver(int fail_first) : fail_first_(fail_first) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 16);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~WebhookReceiver() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  uint16_t port() const { return port_; }
  std::vector<std::string> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void Run() {
    for (;;) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string got;
      char buf[4096];
      size_t need = std::string::npos;
      while (need == std::string::npos || got.size() < need) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        got.append(buf, static_cast<size_t>(n));
        const size_t end = got.find("\r\n\r\n");
        if (end != std::string::npos && need == std::string::npos) {
          const size_t cl = got.find("Content-Length: ");
          need = end + 4 + (cl == std::string::npos ? 0 : std::stoul(got.substr(cl + 16)));
        }
      }
      int n_seen;
      {
        std::lock_guard lock(mu_);
        requests_.push_back(got);
        n_seen = static_cast<int>(requests_.size());
      }
      const char* answer = n_seen <= fail_first_ ? "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
                                                 : "HTTP/1.1 204 No Content\r\n\r\n";
      ::send(c, answer, std::strlen(answer), MSG_NOSIGNAL);
      ::close(c);
    }
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  int fail_first_;
  std::mutex mu_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

TEST_P(ApiTest, WebhooksDeliverSignedNotificationsAndRetry) {
  WebhookReceiver receiver(/*fail_first=*/1);
  const std::string secret = "0123456789abcdef0123";
  auto bad = Post("/v1/webhooks", "dr-a", R"({"url":"ftp://example.org/x"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.str("field"), "url");
  auto hook = Post("/v1/webhooks", "dr-a",
                   R"({"url":"http://127.0.0.1:)" + std::to_string(receiver.port()) +
                       R"(/hook","secret":")" + secret + R"("})");
  ASSERT_EQ(hook.status, 201) << hook.raw.body;
  auto listed = Get("/v1/webhooks", "staff-a");  // the clinic's webhook, without its secret
  ASSERT_EQ(listed.obj().at("items").as_array().size(), 1u);
  EXPECT_FALSE(listed.obj().at("items").as_array()[0].as_object().contains("secret"));
  EXPECT_TRUE(Get("/v1/webhooks", "dr-b").obj().at("items").as_array().empty());
  w().service().SetWebhookPoster(
      [](const std::string& url, const std::string& body,
         const std::vector<std::pair<std::string, std::string>>& headers) {
        return PostJson(url, body, headers, std::chrono::seconds(5));
      });

  auto r = Post(
      "/v1/patients", "dr-a",
      R"({"patient_id":"p-w","birth_date":"1999-01-01","jurisdiction":"US","category":"cannot_get_pregnant"})");
  ASSERT_EQ(r.status, 201);
  r = Post("/v1/patients/p-w/events", "dr-a",
           R"({"type":"phq9","at":"2026-09-14T13:00:00Z","items":[0,0,0,0,0,0,0,0,1]})");
  ASSERT_EQ(r.status, 201);
  ASSERT_TRUE(w().service().Project().ok());
  auto first = w().service().DeliverWebhooks();
  ASSERT_TRUE(first.ok()) << first.error().ToString();
  EXPECT_EQ(*first, 0);  // the receiver answered 500: tried again later
  auto early = w().service().DeliverWebhooks();
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(*early, 0);  // not yet due again
  w().Advance(std::chrono::seconds(11));
  auto second = w().service().DeliverWebhooks();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, 1);
  const auto requests = receiver.requests();
  ASSERT_EQ(requests.size(), 2u);
  const std::string& request = requests[1];
  EXPECT_EQ(request.rfind("POST /hook HTTP/1.1\r\n", 0), 0u);
  const std::string body = request.substr(request.find("\r\n\r\n") + 4);
  EXPECT_NE(body.find("\"kind\":\"suicidal_ideation\""), std::string::npos) << body;
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, reinterpret_cast<const unsigned char*>(secret.data()),
                              secret.size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(body.data()),
                                body.size());
  crypto_auth_hmacsha256_final(&state, mac);
  char hex[2 * sizeof mac + 1];
  sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
  EXPECT_NE(request.find(std::string("X-Isoguard-Signature: sha256=") + hex), std::string::npos)
      << request;
  auto third = w().service().DeliverWebhooks();
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(*third, 0);  // delivered once
}

TEST_P(ApiTest, AnOrganisationSubscribesAtMostSixteenWebhooks) {
  const std::string body = R"({"url":"http://127.0.0.1:9/hook"})";
  for (size_t i = 0; i < service::kMaxWebhooksPerOrg; ++i) {
    ASSERT_EQ(Post("/v1/webhooks", "dr-b", body).status, 201) << i;
  }
  auto refused = Post("/v1/webhooks", "dr-b", body);
  EXPECT_EQ(refused.status, 409) << refused.raw.body;
  EXPECT_EQ(refused.str("field"), "url");
  EXPECT_EQ(Get("/v1/webhooks", "dr-b").obj().at("items").as_array().size(),
            service::kMaxWebhooksPerOrg);
  EXPECT_EQ(Post("/v1/webhooks", "dr-a", body).status, 201);  // another organisation's count
}

// A receiver that never answers holds the delivery thread only: the projector's safety
// reactions go on meanwhile.
TEST_P(ApiTest, ASilentWebhookReceiverDoesNotHoldBackTheSafetyReactions) {
  ASSERT_EQ(Post("/v1/webhooks", "dr-a", R"({"url":"http://127.0.0.1:9/hook"})").status, 201);
  std::mutex mu;
  std::condition_variable cv;
  bool posting = false;
  bool release = false;
  w().service().SetWebhookPoster([&](const std::string&, const std::string&,
                                     const std::vector<std::pair<std::string, std::string>>&) {
    std::unique_lock lock(mu);
    posting = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
    return Status(Error::Unavailable("the receiver did not answer"));
  });
  EnrollReady("p-sw");
  auto auth =
      Post("/v1/authorizations", "ph-a", R"({"patient_id":"p-sw","prescription_id":"rx-1"})");
  ASSERT_EQ(auth.status, 201) << auth.raw.body;
  // A notification to deliver: a PHQ-9 answer of self-harm.
  ASSERT_EQ(Post("/v1/patients/p-sw/events", "dr-a",
                 R"({"type":"phq9","at":"2026-09-14T13:00:00Z","items":[0,0,0,0,0,0,0,0,1]})")
                .status,
            201);
  service::BackgroundWorker::Options options;
  options.poll_interval = std::chrono::milliseconds(20);
  options.sweep_interval = std::chrono::hours(1);
  service::BackgroundWorker worker(w().service(), options, [](const std::string&) {});
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return posting; }))
        << "the delivery never started";
  }
  // The delivery thread is held. A positive test now must still reverse the authorization.
  ASSERT_EQ(
      Post(
          "/v1/patients/p-sw/events", "dr-a",
          R"({"type":"pregnancy_test","collected_at":"2026-09-14T13:30:00Z","result":"positive","setting":"lab","specimen":"serum"})")
          .status,
      201);
  worker.Kick();
  bool reversed = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!reversed && std::chrono::steady_clock::now() < deadline) {
    auto a = w().service_store().GetAuthorization(auth.str("authorization_id"));
    ASSERT_TRUE(a.ok() && a->has_value());
    reversed = (*a)->status == service::AuthorizationStatus::kReversed;
    if (!reversed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  {
    std::lock_guard lock(mu);
    EXPECT_FALSE(release) << "the delivery was still held";
    release = true;
  }
  cv.notify_all();
  worker.Stop();
  EXPECT_TRUE(reversed) << "the projector waited for the webhook";
}

TEST_P(ApiTest, EveryRouteIsInTheOpenApiDocument) {
  std::ifstream in(std::string(ISOGUARD_SOURCE_DIR) + "/api/openapi.json");
  std::stringstream text;
  text << in.rdbuf();
  boost::system::error_code ec;
  json::value doc = json::parse(text.str(), ec);
  ASSERT_FALSE(ec) << "api/openapi.json does not parse";
  EXPECT_EQ(doc.at("openapi"), "3.1.0");
  const json::object& paths = doc.at("paths").as_object();
  std::set<std::string> documented;
  for (const auto& [path, item] : paths) {
    for (const auto& [method, op] : item.as_object()) {
      std::string m(method);
      for (char& ch : m) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      documented.insert(m + " " + std::string(path));
      EXPECT_TRUE(op.as_object().contains("responses")) << m << " " << path;
    }
  }
  std::set<std::string> routed;
  for (const RouteInfo& r : w().router().Routes()) routed.insert(r.method + " " + r.pattern);
  for (const std::string& r : routed)
    EXPECT_TRUE(documented.contains(r)) << r << " is not documented";
  for (const std::string& d : documented) EXPECT_TRUE(routed.contains(d)) << d << " is not routed";
}

// A repeated request with the same Idempotency-Key answers a status the document lists.
TEST_P(ApiTest, ReplaysAnswerStatusesTheDocumentLists) {
  std::ifstream in(std::string(ISOGUARD_SOURCE_DIR) + "/api/openapi.json");
  std::stringstream text;
  text << in.rdbuf();
  const json::value doc = json::parse(text.str());
  auto documented = [&](const std::string& path, int status) {
    const json::object& responses = doc.at("paths").at(path).at("post").at("responses").as_object();
    return responses.contains(std::to_string(status));
  };
  EnrollReady("p-rp");
  struct Case {
    std::string path, target, body;
  };
  const std::vector<Case> cases = {
      {"/v1/patients/{patient_id}/prescriptions", "/v1/patients/p-rp/prescriptions",
       R"({"id":"rx-2","product":"generic","doses_mg":[40],"days_supply":30,"refills":0,"at":"2026-09-14T12:30:00Z"})"},
      {"/v1/patients/{patient_id}/prescriptions/{prescription_id}/cancel",
       "/v1/patients/p-rp/prescriptions/rx-2/cancel", ""},
      {"/v1/patients/{patient_id}/events/{event_id}/correction",
       "/v1/patients/p-rp/events/p-rp-3/correction", ""},
  };
  for (const Case& c : cases) {
    const std::string key = "replay-" + std::to_string(&c - cases.data());
    auto first = Post(c.target, "dr-a", c.body, {{"Idempotency-Key", key}});
    ASSERT_EQ(first.status, 201) << c.target << ": " << first.raw.body;
    auto again = Post(c.target, "dr-a", c.body, {{"Idempotency-Key", key}});
    EXPECT_LT(again.status, 300) << c.target << ": " << again.raw.body;
    EXPECT_TRUE(documented(c.path, first.status)) << c.path;
    EXPECT_TRUE(documented(c.path, again.status)) << c.path << " answers " << again.status;
  }
}

INSTANTIATE_TEST_SUITE_P(Sqlite, ApiTest, ::testing::Values(ApiBackend{"Sqlite", false}),
                         [](const auto& param_info) { return param_info.param.name; });
INSTANTIATE_TEST_SUITE_P(Postgres, ApiTest, ::testing::Values(ApiBackend{"Postgres", true}),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace isoguard::server::testing
