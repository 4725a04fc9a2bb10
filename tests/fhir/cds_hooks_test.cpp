// The CDS Hooks 2.0 services over real HTTP, with requests shaped as the public CDS Hooks
// sandbox sends them (hook, hookInstance, fhirServer, fhirAuthorization, context with the
// draftOrders Bundle, prefetch): cards for every unmet requirement with the native API's codes
// and messages, the dose for the prefetched weight with the planner's dose as a suggestion,
// interactions with the prefetched medications, patient-view's due list, the prefetch
// fallback to the EHR's FHIR server (with its deadline), and feedback in the audit.
#include "fhir/cds_hooks.h"

#include <chrono>
#include <set>
#include <thread>

#include "fhir_test_support.h"

namespace isoguard::server::testing {
namespace {

class CdsHooksTest : public FhirWorldTest {
 protected:
  // A request as the sandbox sends it; `prefetch` is the JSON of the prefetch object (or
  // empty for none); `fhir_server` names the EHR's FHIR server (or empty).
  static std::string Request(const std::string& hook, const std::string& patient,
                             const std::string& drafts, const std::string& prefetch,
                             const std::string& fhir_server = {},
                             const std::string& selections = {}) {
    std::string r =
        R"({"hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","hook":")" + hook + R"(",)";
    if (!fhir_server.empty()) {
      r +=
          R"("fhirServer":")" + fhir_server +
          R"(","fhirAuthorization":{"access_token":"ehr-token-1","token_type":"Bearer","expires_in":300,"scope":"user/Patient.read user/Observation.read","subject":"cds-service"},)";
    }
    r += R"("context":{"userId":"Practitioner/example","patientId":")" + patient + R"(")";
    if (!drafts.empty()) {
      r += R"(,"draftOrders":{"resourceType":"Bundle","entry":[)" + drafts + "]}";
    }
    if (!selections.empty()) r += R"(,"selections":[)" + selections + "]";
    r += "}";
    if (!prefetch.empty()) r += R"(,"prefetch":)" + prefetch;
    return r + "}";
  }
  static std::string Draft(const std::string& patient, std::vector<int> doses,
                           const std::string& id = "draft-1") {
    return R"({"resource":)" + IsotretinoinRequest(patient, "draft", doses, 30, id) + "}";
  }
  static std::string Prefetch(const std::string& patient, double kg,
                              const std::string& medication) {
    std::string meds = R"({"resourceType":"Bundle","type":"searchset","entry":[)";
    if (!medication.empty()) {
      meds +=
          R"({"resource":{"resourceType":"MedicationRequest","id":"m-1","status":"active","intent":"order",
        "medicationCodeableConcept":{"text":")" +
          medication + R"("},"subject":{"reference":"Patient/)" + patient +
          R"("},"authoredOn":"2026-09-10T10:00:00Z"}})";
    }
    meds += "]}";
    return R"({"patient":{"resourceType":"Patient","id":")" + patient + R"("},
      "weight":{"resourceType":"Bundle","type":"searchset","entry":[{"resource":)" +
           WeightObservation(patient, kg, "2026-09-14T13:50:00Z") + R"(}]},"medications":)" + meds +
           "}";
  }
  static std::vector<json::object> Cards(const Reply& r) {
    std::vector<json::object> out;
    const json::value* cards = r.obj().if_contains("cards");
    if (cards == nullptr) return out;
    for (const json::value& c : cards->as_array()) out.push_back(c.as_object());
    return out;
  }
  static std::string Topic(const json::object& card) {
    return std::string(card.at("source").at("topic").at("code").as_string());
  }
  // Every card is shaped as the specification says.
  static void ExpectWellFormed(const std::vector<json::object>& cards) {
    for (const json::object& c : cards) {
      EXPECT_FALSE(std::string(c.at("uuid").as_string()).empty());
      const std::string summary(c.at("summary").as_string());
      size_t chars = 0;
      for (unsigned char ch : summary) chars += (ch & 0xC0) != 0x80;
      EXPECT_LT(chars, 140u) << summary;
      const std::string indicator(c.at("indicator").as_string());
      EXPECT_TRUE(indicator == "info" || indicator == "warning" || indicator == "critical");
      EXPECT_FALSE(std::string(c.at("source").at("label").as_string()).empty());
      EXPECT_EQ(c.contains("overrideReasons"), indicator == "critical");
      if (c.contains("suggestions")) {
        EXPECT_TRUE(c.contains("selectionBehavior"));
      }
      EXPECT_EQ(c.at("links").at(0).at("type"), "absolute");
    }
  }
};

TEST_P(CdsHooksTest, DiscoveryDeclaresTheServicesAndTheirPrefetch) {
  auto r = Cds("GET", "/cds-services", "");
  ASSERT_EQ(r.status, 200) << r.raw.body;
  std::set<std::string> hooks;
  for (const json::value& s : r.obj().at("services").as_array()) {
    hooks.insert(std::string(s.at("hook").as_string()));
    if (s.at("hook") != "patient-view") {
      const json::object& prefetch = s.at("prefetch").as_object();
      EXPECT_EQ(prefetch.size(), 2u);
      EXPECT_NE(std::string(prefetch.at("weight").as_string()).find("http://loinc.org|29463-7"),
                std::string::npos);
      EXPECT_TRUE(prefetch.contains("medications"));
    }
  }
  EXPECT_EQ(hooks, (std::set<std::string>{"order-select", "order-sign", "patient-view"}));
}

TEST_P(CdsHooksTest, OrderSignCardsAreTheEnginesReasonsAndAlerts) {
  Enroll("p-2", "can_get_pregnant");
  auto r = Cds("POST", "/cds-services/isoguard-order-sign", "dr-a",
               Request("order-sign", "p-2", Draft("p-2", {40}), Prefetch("p-2", 62, "")));
  ASSERT_EQ(r.status, 200) << r.raw.body;
  auto cards = Cards(r);
  ExpectWellFormed(cards);
  std::map<std::string, std::string> critical;  // code -> detail
  for (const json::object& c : cards) {
    if (c.at("indicator") == "critical")
      critical[Topic(c)] = std::string(c.at("detail").as_string());
  }
  // The same prescription written through the native API: the same codes and messages.
  ASSERT_EQ(Post("/v1/patients/p-2/events", "dr-a",
                 R"({"type":"weight","at":"2026-09-14T13:50:00Z","kg":62})")
                .status,
            201);
  ASSERT_EQ(
      Post(
          "/v1/patients/p-2/prescriptions", "dr-a",
          R"({"id":"rx-2","product":"generic","doses_mg":[40],"days_supply":30,"refills":0,"at":"2026-09-14T14:00:00Z"})")
          .status,
      201);
  auto native = Get("/v1/patients/p-2/prescriptions/rx-2/evaluation", "dr-a");
  ASSERT_EQ(native.status, 200) << native.raw.body;
  const json::value& auth = native.obj().contains("evaluation")
                                ? native.obj().at("evaluation").at("authorization")
                                : native.obj().at("authorization");
  ASSERT_FALSE(auth.at("reasons").as_array().empty());
  std::set<std::string> native_codes;
  for (const json::value& reason : auth.at("reasons").as_array()) {
    const std::string code(reason.at("code").as_string());
    native_codes.insert(code);
    ASSERT_TRUE(critical.contains(code)) << code;
    EXPECT_NE(critical[code].find(std::string(reason.at("message").as_string())),
              std::string::npos);
  }
  std::set<std::string> card_reasons;
  for (const auto& [code, detail] : critical) {
    if (code != "PREGNANCY" && code != "INTERACTION") card_reasons.insert(code);
  }
  EXPECT_EQ(card_reasons, native_codes);
}

TEST_P(CdsHooksTest, DoseForThePrefetchedWeightWithThePlannersDoseAndInteractions) {
  EnrollReady("p-1");
  // 120 mg a day for the prefetched 62 kg is 1.94 mg/kg: above the usual 0.5-1.0.
  auto r = Cds("POST", "/cds-services/isoguard-order-sign", "dr-a",
               Request("order-sign", "p-1", Draft("p-1", {60, 60}),
                       Prefetch("p-1", 62, "Doxycycline 100 mg")));
  ASSERT_EQ(r.status, 200) << r.raw.body;
  auto cards = Cards(r);
  ExpectWellFormed(cards);
  const json::object* dose = nullptr;
  const json::object* interaction = nullptr;
  for (const json::object& c : cards) {
    if (Topic(c) == "DOSE_OUT_OF_RANGE") dose = &c;
    if (Topic(c) == "INTERACTION") interaction = &c;
  }
  ASSERT_NE(dose, nullptr) << r.raw.body;
  EXPECT_EQ(dose->at("indicator"), "warning");
  ASSERT_TRUE(dose->contains("suggestions")) << json::serialize(*dose);
  EXPECT_EQ(dose->at("selectionBehavior"), "at-most-one");
  const json::object& action = dose->at("suggestions").at(0).at("actions").at(0).as_object();
  EXPECT_EQ(action.at("type"), "update");
  EXPECT_EQ(action.at("resource").at("id"), "draft-1");
  double daily = 0;
  for (const json::value& d : action.at("resource").at("dosageInstruction").as_array()) {
    daily += d.at("doseAndRate").at(0).at("doseQuantity").at("value").to_number<double>();
  }
  // The planner's dose at the top of the usual range: 62 mg for 62 kg, in real capsules.
  EXPECT_GE(daily / 62, 0.5);
  EXPECT_LE(daily / 62, 1.0);
  ASSERT_NE(interaction, nullptr) << r.raw.body;
  EXPECT_EQ(interaction->at("indicator"), "critical");
  EXPECT_NE(std::string(interaction->at("links").at(0).at("url").as_string()).find("p-1"),
            std::string::npos);

  // The same draft at a right dose for the weight: no dose card.
  auto right = Cds("POST", "/cds-services/isoguard-order-sign", "dr-a",
                   Request("order-sign", "p-1", Draft("p-1", {40}), Prefetch("p-1", 62, "")));
  for (const json::object& c : Cards(right)) EXPECT_NE(Topic(c), "DOSE_OUT_OF_RANGE");
  // 40 mg for a prefetched 100 kg is 0.4 mg/kg: under the range.
  auto heavier = Cds("POST", "/cds-services/isoguard-order-sign", "dr-a",
                     Request("order-sign", "p-1", Draft("p-1", {40}), Prefetch("p-1", 100, "")));
  bool low = false;
  for (const json::object& c : Cards(heavier)) low = low || Topic(c) == "DOSE_OUT_OF_RANGE";
  EXPECT_TRUE(low) << heavier.raw.body;
}

TEST_P(CdsHooksTest, OrderSelectJudgesOnlyTheSelectedIsotretinoinOrders) {
  EnrollReady("p-1");
  const std::string other =
      R"({"resource":{"resourceType":"MedicationRequest","id":"other-1","status":"draft","intent":"order",
    "medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"197696"}]},
    "subject":{"reference":"Patient/p-1"}}})";
  auto unselected = Cds("POST", "/cds-services/isoguard-order-select", "dr-a",
                        Request("order-select", "p-1", Draft("p-1", {60, 60}) + "," + other,
                                Prefetch("p-1", 62, ""), "", R"("MedicationRequest/other-1")"));
  ASSERT_EQ(unselected.status, 200) << unselected.raw.body;
  EXPECT_TRUE(Cards(unselected).empty()) << unselected.raw.body;
  auto selected = Cds("POST", "/cds-services/isoguard-order-select", "dr-a",
                      Request("order-select", "p-1", Draft("p-1", {60, 60}) + "," + other,
                              Prefetch("p-1", 62, ""), "", R"("MedicationRequest/draft-1")"));
  ASSERT_EQ(selected.status, 200) << selected.raw.body;
  bool dose = false;
  for (const json::object& c : Cards(selected)) dose = dose || Topic(c) == "DOSE_OUT_OF_RANGE";
  EXPECT_TRUE(dose);
  // A patient isoguard does not hold for this clinic: enrollment first.
  auto unknown = Cds("POST", "/cds-services/isoguard-order-select", "dr-a",
                     Request("order-select", "p-404", Draft("p-404", {40}), "", "",
                             R"("MedicationRequest/draft-1")"));
  ASSERT_EQ(unknown.status, 200) << unknown.raw.body;
  ASSERT_EQ(Cards(unknown).size(), 1u);
  EXPECT_EQ(Topic(Cards(unknown)[0]), "NOT_ENROLLED");
}

TEST_P(CdsHooksTest, PatientViewShowsWhatIsDueAndOverdue) {
  Enroll("p-2", "can_get_pregnant");
  // A PHQ-9 of August: the next one was due a month later, so it is overdue now.
  ASSERT_EQ(Post("/v1/patients/p-2/events", "dr-a",
                 R"({"type":"phq9","at":"2026-08-01T10:00:00Z","items":[0,0,0,0,0,0,0,0,0]})")
                .status,
            201);
  ASSERT_EQ(
      Post(
          "/v1/patients/p-2/prescriptions", "dr-a",
          R"({"id":"rx-2","product":"generic","doses_mg":[40],"days_supply":30,"refills":0,"at":"2026-09-14T12:20:00Z"})")
          .status,
      201);
  auto native = Get("/v1/patients/p-2", "dr-a");
  std::set<std::string> due;
  for (const json::value& d : native.obj().at("evaluation").at("due").as_array()) {
    due.insert(std::string(d.at("code").as_string()));
  }
  auto r = Cds("POST", "/cds-services/isoguard-patient-view", "dr-a",
               Request("patient-view", "p-2", "", ""));
  ASSERT_EQ(r.status, 200) << r.raw.body;
  auto cards = Cards(r);
  ExpectWellFormed(cards);
  std::set<std::string> topics;
  bool overdue = false;
  for (const json::object& c : cards) {
    topics.insert(Topic(c));
    overdue = overdue || (c.at("indicator") == "warning" &&
                          std::string(c.at("summary").as_string()).starts_with("Overdue"));
  }
  EXPECT_FALSE(due.empty());
  for (const std::string& d : due) EXPECT_TRUE(topics.contains(d)) << d;
  EXPECT_TRUE(overdue) << r.raw.body;
}

// The EHR's FHIR server, for the prefetch fallback: a second HTTP server on loopback that
// answers the weight search with 100 kg and records the bearer token it was sent.
class FakeEhr {
 public:
  explicit FakeEhr(std::chrono::milliseconds delay) {
    router_.Add("GET", "/fhir/Observation",
                [this, delay](const HttpRequest& request, const PathParams&) {
                  if (const std::string* auth = request.header("authorization")) {
                    std::lock_guard lock(mu_);
                    authorization_ = *auth;
                  }
                  std::this_thread::sleep_for(delay);
                  HttpResponse r;
                  r.content_type = "application/fhir+json";
                  r.body = R"({"resourceType":"Bundle","type":"searchset","entry":[{"resource":)" +
                           WeightObservation("p-1", 100, "2026-09-14T13:55:00Z") + "}]}";
                  return r;
                });
    router_.Add("GET", "/fhir/MedicationRequest", [](const HttpRequest&, const PathParams&) {
      HttpResponse r;
      r.content_type = "application/fhir+json";
      r.body = R"({"resourceType":"Bundle","type":"searchset","entry":[]})";
      return r;
    });
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.worker_threads = 2;
    auto http = HttpServer::Start(options, router_, metrics_, logger_);
    if (!http.ok()) throw std::runtime_error(http.error().ToString());
    http_ = std::move(*http);
  }
  ~FakeEhr() {
    http_->Stop();
    http_->Wait();
  }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(http_->port()) + "/fhir"; }
  std::string authorization() {
    std::lock_guard lock(mu_);
    return authorization_;
  }

 private:
  Router router_;
  Metrics metrics_;
  Logger logger_{-1};
  std::mutex mu_;
  std::string authorization_;
  std::unique_ptr<HttpServer> http_;
};

TEST_P(CdsHooksTest, MissingPrefetchIsFetchedFromTheFhirServerWithinItsDeadline) {
  EnrollReady("p-1");
  {
    FakeEhr ehr(std::chrono::milliseconds(0));
    // No prefetch: the weight (100 kg) comes from the EHR, so 40 mg a day is under the range.
    auto r = Cds("POST", "/cds-services/isoguard-order-sign", "dr-a",
                 Request("order-sign", "p-1", Draft("p-1", {40}), "", ehr.base()));
    ASSERT_EQ(r.status, 200) << r.raw.body;
    bool dose = false;
    for (const json::object& c : Cards(r)) dose = dose || Topic(c) == "DOSE_OUT_OF_RANGE";
    EXPECT_TRUE(dose) << r.raw.body;
    EXPECT_EQ(ehr.authorization(), "Bearer ehr-token-1");
  }
  {
    // An EHR slower than the deadline: the answer comes without its data, in time.
    FakeEhr slow(std::chrono::milliseconds(4000));
    const auto start = std::chrono::steady_clock::now();
    auto r = Cds("POST", "/cds-services/isoguard-order-sign", "dr-a",
                 Request("order-sign", "p-1", Draft("p-1", {40}), "", slow.base()));
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_EQ(r.status, 200) << r.raw.body;
    EXPECT_LT(took, std::chrono::milliseconds(3500));
    for (const json::object& c : Cards(r)) EXPECT_NE(Topic(c), "DOSE_OUT_OF_RANGE");
  }
}

TEST_P(CdsHooksTest, BadRequestsAreRefusedNamingTheField) {
  EnrollReady("p-1");
  struct Case {
    std::string service, body, field;
    int status;
  };
  const std::vector<Case> cases = {
      {"isoguard-order-sign", R"({"hookInstance":"x","context":{}})", "hook", 400},
      {"isoguard-order-sign", Request("order-select", "p-1", Draft("p-1", {40}), ""), "hook", 400},
      {"isoguard-order-sign",
       R"({"hook":"order-sign","hookInstance":"x","context":{"userId":"u"}})", "context.patientId",
       400},
      {"isoguard-order-sign",
       R"({"hook":"order-sign","hookInstance":"x","context":{"userId":"u","patientId":"p-1"}})",
       "context.draftOrders", 400},
      {"isoguard-order-select", Request("order-select", "p-1", Draft("p-1", {40}), ""),
       "context.selections", 400},
      {"isoguard-order-sign",
       R"({"hook":"order-sign","hookInstance":"x","fhirAuthorization":{"access_token":"t"},"context":{"userId":"u","patientId":"p-1","draftOrders":{"resourceType":"Bundle"}}})",
       "fhirServer", 400},
      {"no-such-service", Request("order-sign", "p-1", Draft("p-1", {40}), ""), "service", 404},
  };
  for (const Case& c : cases) {
    auto r = Cds("POST", "/cds-services/" + c.service, "dr-a", c.body);
    EXPECT_EQ(r.status, c.status) << c.body << "\n" << r.raw.body;
    EXPECT_EQ(r.str("field"), c.field) << r.raw.body;
  }
  auto anonymous = Cds("POST", "/cds-services/isoguard-order-sign", "",
                       Request("order-sign", "p-1", Draft("p-1", {40}), ""));
  EXPECT_EQ(anonymous.status, 401);
}

TEST_P(CdsHooksTest, FeedbackIsRecordedInTheAuditLog) {
  EnrollReady("p-1");
  auto r = Cds("POST", "/cds-services/isoguard-order-sign", "dr-a",
               Request("order-sign", "p-1", Draft("p-1", {60, 60}), Prefetch("p-1", 62, "")));
  ASSERT_FALSE(Cards(r).empty());
  const std::string uuid(Cards(r)[0].at("uuid").as_string());
  auto feedback = Cds("POST", "/cds-services/isoguard-order-sign/feedback", "dr-a",
                      R"({"feedback":[{"card":")" + uuid + R"(","outcome":"overridden",
      "overrideReason":{"reason":{"system":"https://isoguard.example/fhir/CodeSystem/override-reason","code":"patient-informed","display":"Patient informed"},"userComment":"discussed"},
      "outcomeTimestamp":"2026-09-14T14:01:00Z"}]})");
  EXPECT_EQ(feedback.status, 200) << feedback.raw.body;
  auto bad = Cds(
      "POST", "/cds-services/isoguard-order-sign/feedback", "dr-a",
      R"({"feedback":[{"card":"x","outcome":"ignored","outcomeTimestamp":"2026-09-14T14:01:00Z"}]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.str("field"), "feedback[0].outcome");
  w().audit().Flush();
  auto audit = Get("/v1/audit?actor_id=dr-a&limit=1000", "admin");
  ASSERT_EQ(audit.status, 200) << audit.raw.body;
  bool found = false;
  for (const json::value& item : audit.obj().at("items").as_array()) {
    const std::string detail(item.at("detail").as_string());
    found = found || (detail.find(uuid) != std::string::npos &&
                      detail.find("overridden") != std::string::npos &&
                      detail.find("patient-informed") != std::string::npos);
  }
  EXPECT_TRUE(found);
}

// A CDS call about a patient the caller may not see answers cards without the record, and the
// refused read is in the audit as refused.
TEST_P(CdsHooksTest, ARefusedRecordReadIsAuditedAsRefused) {
  Enroll("p-r", "cannot_get_pregnant");
  auto r = Cds("POST", "/cds-services/isoguard-order-sign", "dr-b",
               Request("order-sign", "p-r", Draft("p-r", {40}), Prefetch("p-r", 62, "")));
  ASSERT_EQ(r.status, 200) << r.raw.body;
  w().audit().Flush();
  auto audit = Get("/v1/audit?patient_id=p-r&limit=1000", "admin");
  ASSERT_EQ(audit.status, 200) << audit.raw.body;
  bool refused_read = false, call_says_so = false;
  for (const json::value& item : audit.obj().at("items").as_array()) {
    if (item.at("actor_id") != "dr-b") continue;
    refused_read = refused_read || (item.at("action") == "CDS patient record read" &&
                                    item.at("outcome") == "refused");
    const std::string detail(item.at("detail").as_string());
    call_says_so = call_says_so || detail.find("without the patient's record") != std::string::npos;
  }
  EXPECT_TRUE(refused_read) << audit.raw.body;
  EXPECT_TRUE(call_says_so) << audit.raw.body;
}

TEST(CdsHooksSummary, CutsAtFewerThan140CharactersOnCharacterBoundaries) {
  EXPECT_EQ(fhir::CdsHooks::Summary("short"), "short");
  const std::string exact(139, 'a');
  EXPECT_EQ(fhir::CdsHooks::Summary(exact), exact);
  std::string accented;
  for (int i = 0; i < 150; ++i) accented += "\xC3\xA9";  // é
  const std::string cut = fhir::CdsHooks::Summary(accented);
  size_t chars = 0;
  for (unsigned char ch : cut) chars += (ch & 0xC0) != 0x80;
  EXPECT_EQ(chars, 139u);
  EXPECT_TRUE(cut.ends_with("\u2026"));
}

INSTANTIATE_TEST_SUITE_P(Sqlite, CdsHooksTest, ::testing::Values(ApiBackend{"Sqlite", false}),
                         [](const auto& param_info) { return param_info.param.name; });
INSTANTIATE_TEST_SUITE_P(Postgres, CdsHooksTest, ::testing::Values(ApiBackend{"Postgres", true}),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace isoguard::server::testing
