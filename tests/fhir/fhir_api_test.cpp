// The FHIR R4 facade over real HTTP, on SQLite and PostgreSQL: the CapabilityStatement, read
// and search with paging, creates that become events through the service's validation, round
// trips FHIR -> events -> FHIR, transaction Bundles (all or nothing, bounded), ETag/If-Match,
// OperationOutcomes naming the element at fault, and $rems-etasu.
#include <set>

#include "fhir_test_support.h"

namespace isoguard::server::testing {
namespace {

class FhirTest : public FhirWorldTest {
 protected:
  // The path and query of an absolute link ("http://t/fhir/Observation?..." -> "/fhir/...").
  static std::string PathOf(const std::string& url) {
    const size_t at = url.find("/fhir");
    return at == std::string::npos ? url : url.substr(at);
  }
  static std::string Link(const Reply& bundle, const std::string& relation) {
    const json::value* links = bundle.obj().if_contains("link");
    if (links == nullptr) return {};
    for (const json::value& l : links->as_array()) {
      if (l.at("relation").as_string() == relation) return std::string(l.at("url").as_string());
    }
    return {};
  }
  static std::vector<json::object> Entries(const Reply& bundle) {
    std::vector<json::object> out;
    const json::value* entries = bundle.obj().if_contains("entry");
    if (entries == nullptr) return out;
    for (const json::value& e : entries->as_array()) out.push_back(e.at("resource").as_object());
    return out;
  }
  static std::string Expression(const Reply& outcome) {
    const json::value* issues = outcome.obj().if_contains("issue");
    if (issues == nullptr || issues->as_array().empty()) return "<no issue>";
    const json::value* e = issues->as_array()[0].as_object().if_contains("expression");
    return e == nullptr ? "<no expression>" : std::string(e->as_array()[0].as_string());
  }
  static std::string IssueCode(const Reply& outcome) {
    const json::value* issues = outcome.obj().if_contains("issue");
    if (issues == nullptr || issues->as_array().empty()) return "<no issue>";
    return std::string(issues->as_array()[0].at("code").as_string());
  }
};

TEST_P(FhirTest, CapabilityStatementListsExactlyWhatIsServed) {
  auto r = Fhir("GET", "/fhir/metadata", "");
  ASSERT_EQ(r.status, 200) << r.raw.body;
  EXPECT_TRUE(IsFhirReply(r));
  EXPECT_EQ(r.str("resourceType"), "CapabilityStatement");
  EXPECT_EQ(r.str("fhirVersion"), "4.0.1");
  std::set<std::string> types, creatable;
  for (const json::value& res : r.obj().at("rest").at(0).at("resource").as_array()) {
    const std::string type(res.at("type").as_string());
    types.insert(type);
    for (const json::value& i : res.at("interaction").as_array()) {
      if (i.at("code") == "create") creatable.insert(type);
    }
  }
  EXPECT_EQ(types, (std::set<std::string>{"Patient", "Observation", "MedicationRequest",
                                          "MedicationDispense", "MedicationStatement",
                                          "DetectedIssue", "Task", "Consent"}));
  EXPECT_EQ(creatable,
            (std::set<std::string>{"Observation", "MedicationRequest", "MedicationStatement"}));
  EXPECT_EQ(r.obj().at("rest").at(0).at("operation").at(0).at("name"), "rems-etasu");
  // Every advertised search type answers (a search without a patient is refused by name).
  for (const std::string& type : types) {
    auto s = Fhir("GET", "/fhir/" + type, "dr-a");
    EXPECT_EQ(s.status, 400) << type;
    EXPECT_EQ(s.str("resourceType"), "OperationOutcome");
  }
}

TEST_P(FhirTest, ObservationsRoundTripThroughTheEventStore) {
  EnrollReady("p-1");
  const int64_t before = Version("p-1");
  // Weight, a lab with its ULN, a pregnancy test, a PHQ-9: FHIR -> events -> FHIR.
  auto weight = Fhir("POST", "/fhir/Observation", "dr-a", WeightObservation("p-1", 64.5));
  ASSERT_EQ(weight.status, 201) << weight.raw.body;
  ASSERT_NE(weight.raw.header("location"), nullptr);
  EXPECT_NE(weight.raw.header("location")->find("/fhir/Observation/p-1."), std::string::npos);
  EXPECT_EQ(*weight.raw.header("etag"), "W/\"" + std::to_string(before + 1) + "\"");
  EXPECT_EQ(weight.obj().at("valueQuantity").at("value").to_number<double>(), 64.5);
  EXPECT_EQ(weight.obj().at("code").at("coding").at(0).at("code"), "29463-7");

  auto alt =
      Fhir("POST", "/fhir/Observation", "dr-a", R"({"resourceType":"Observation","status":"final",
    "code":{"coding":[{"system":"http://loinc.org","code":"1742-6"}]},"subject":{"reference":"Patient/p-1"},
    "effectiveDateTime":"2026-09-14T13:05:00Z",
    "valueQuantity":{"value":35,"unit":"U/L","system":"http://unitsofmeasure.org","code":"U/L"},
    "referenceRange":[{"high":{"value":45,"unit":"U/L","system":"http://unitsofmeasure.org","code":"U/L"}}]})");
  ASSERT_EQ(alt.status, 201) << alt.raw.body;
  auto tg =
      Fhir("POST", "/fhir/Observation", "dr-a", R"({"resourceType":"Observation","status":"final",
    "code":{"coding":[{"system":"http://loinc.org","code":"14927-8"}]},"subject":{"reference":"Patient/p-1"},
    "effectiveDateTime":"2026-09-14T13:05:00Z",
    "valueQuantity":{"value":1.9,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"}})");
  ASSERT_EQ(tg.status, 201) << tg.raw.body;
  auto hcg =
      Fhir("POST", "/fhir/Observation", "dr-a", R"({"resourceType":"Observation","status":"final",
    "code":{"coding":[{"system":"http://loinc.org","code":"2118-8"}]},"subject":{"reference":"Patient/p-1"},
    "effectiveDateTime":"2026-09-14T13:10:00Z",
    "valueCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":"260385009"}]},
    "extension":[{"url":"https://isoguard.example/fhir/StructureDefinition/pregnancy-test-setting","valueCode":"lab"}]})");
  ASSERT_EQ(hcg.status, 201) << hcg.raw.body;
  auto phq =
      Fhir("POST", "/fhir/Observation", "dr-a", R"({"resourceType":"Observation","status":"final",
    "code":{"coding":[{"system":"http://loinc.org","code":"44249-1"}]},"subject":{"reference":"Patient/p-1"},
    "effectiveDateTime":"2026-09-14T13:15:00Z","component":[
    {"code":{"coding":[{"system":"http://loinc.org","code":"44250-9"}]},"valueInteger":1},
    {"code":{"coding":[{"system":"http://loinc.org","code":"44255-8"}]},"valueInteger":2},
    {"code":{"coding":[{"system":"http://loinc.org","code":"44259-0"}]},"valueInteger":0},
    {"code":{"coding":[{"system":"http://loinc.org","code":"44254-1"}]},"valueInteger":1},
    {"code":{"coding":[{"system":"http://loinc.org","code":"44251-7"}]},"valueInteger":0},
    {"code":{"coding":[{"system":"http://loinc.org","code":"44258-2"}]},"valueInteger":0},
    {"code":{"coding":[{"system":"http://loinc.org","code":"44252-5"}]},"valueInteger":3},
    {"code":{"coding":[{"system":"http://loinc.org","code":"44253-3"}]},"valueInteger":0},
    {"code":{"coding":[{"system":"http://loinc.org","code":"44260-8"}]},"valueInteger":0}]})");
  ASSERT_EQ(phq.status, 201) << phq.raw.body;
  EXPECT_EQ(Version("p-1"), before + 5);

  // The events are the record format's, exactly.
  json::array events = RecordEvents("p-1");
  ASSERT_GE(events.size(), 5u);
  const size_t n = events.size();
  EXPECT_EQ(events[n - 5].at("type"), "weight");
  EXPECT_EQ(events[n - 5].at("kg").to_number<double>(), 64.5);
  EXPECT_EQ(events[n - 4].at("test"), "ALT");
  EXPECT_EQ(events[n - 4].at("uln").to_number<double>(), 45);
  EXPECT_EQ(events[n - 3].at("test"), "TG");
  EXPECT_EQ(events[n - 3].at("unit"), "mmol/L");
  EXPECT_EQ(events[n - 2].at("type"), "pregnancy_test");
  EXPECT_EQ(events[n - 2].at("result"), "negative");
  EXPECT_EQ(events[n - 2].at("specimen"), "serum");
  EXPECT_EQ(events[n - 2].at("setting"), "lab");
  EXPECT_EQ(events[n - 1].at("type"), "phq9");
  EXPECT_EQ(json::serialize(events[n - 1].at("items")), "[1,2,0,1,0,0,3,0,0]");

  // And back: each read answers the meaning that was created.
  const std::string phq_id(phq.obj().at("id").as_string());
  auto read = Fhir("GET", "/fhir/Observation/" + phq_id, "dr-a");
  ASSERT_EQ(read.status, 200) << read.raw.body;
  int64_t total = -1;
  std::vector<int64_t> items;
  for (const json::value& c : read.obj().at("component").as_array()) {
    if (c.at("code").at("coding").at(0).at("code") == "44261-6") {
      total = c.at("valueInteger").as_int64();
    } else {
      items.push_back(c.at("valueInteger").as_int64());
    }
  }
  EXPECT_EQ(total, 7);
  EXPECT_EQ(items, (std::vector<int64_t>{1, 2, 0, 1, 0, 0, 3, 0, 0}));
  auto tg_read =
      Fhir("GET", "/fhir/Observation/" + std::string(tg.obj().at("id").as_string()), "dr-a");
  EXPECT_EQ(tg_read.obj().at("code").at("coding").at(0).at("code"), "14927-8");
  EXPECT_EQ(tg_read.obj().at("valueQuantity").at("code"), "mmol/L");
  auto alt_read =
      Fhir("GET", "/fhir/Observation/" + std::string(alt.obj().at("id").as_string()), "dr-a");
  EXPECT_EQ(alt_read.obj().at("referenceRange").at(0).at("high").at("value").to_number<double>(),
            45);
  auto hcg_read =
      Fhir("GET", "/fhir/Observation/" + std::string(hcg.obj().at("id").as_string()), "dr-a");
  EXPECT_EQ(hcg_read.obj().at("valueCodeableConcept").at("coding").at(0).at("code"), "260385009");
  EXPECT_EQ(hcg_read.obj().at("extension").at(0).at("valueCode"), "lab");

  // Observations the native API recorded are served too (the enrollment's weight and labs).
  auto search = Fhir("GET", "/fhir/Observation?patient=p-1&code=http://loinc.org|29463-7", "dr-a");
  ASSERT_EQ(search.status, 200) << search.raw.body;
  EXPECT_EQ(search.str("type"), "searchset");
  EXPECT_EQ(search.obj().at("total").as_int64(), 2);
}

TEST_P(FhirTest, MedicationRequestsAndStatementsRoundTrip) {
  EnrollReady("p-1");
  auto rx = Fhir(
      "POST", "/fhir/MedicationRequest", "dr-a",
      IsotretinoinRequest(
          "p-1", "active", {40, 30}, 30, "ignored",
          R"(,{"system":"https://isoguard.example/fhir/CodeSystem/product","code":"absorica"})"));
  ASSERT_EQ(rx.status, 201) << rx.raw.body;
  json::array events = RecordEvents("p-1");
  const json::value& e = events.back();
  EXPECT_EQ(e.at("type"), "prescription");
  EXPECT_EQ(e.at("product"), "absorica");
  EXPECT_EQ(json::serialize(e.at("doses_mg")), "[40,30]");
  EXPECT_EQ(e.at("days_supply").as_int64(), 30);
  EXPECT_EQ(e.at("refills").as_int64(), 0);
  const std::string rx_id(e.at("id").as_string());
  EXPECT_EQ(rx.str("id"), "p-1." + rx_id);
  EXPECT_EQ(rx.str("status"), "active");
  EXPECT_EQ(rx.obj().at("dosageInstruction").as_array().size(), 2u);
  EXPECT_EQ(rx.obj()
                .at("dosageInstruction")
                .at(1)
                .at("doseAndRate")
                .at(0)
                .at("doseQuantity")
                .at("value")
                .to_number<double>(),
            30);
  EXPECT_EQ(
      rx.obj().at("dispenseRequest").at("expectedSupplyDuration").at("value").to_number<double>(),
      30);

  // The engine considers it: the native evaluation names it.
  auto native = Get("/v1/patients/p-1", "dr-a");
  EXPECT_EQ(native.obj().at("evaluation").at("authorization").at("prescription").as_string(),
            rx_id);

  auto med =
      Fhir("POST", "/fhir/MedicationStatement", "dr-a", R"({"resourceType":"MedicationStatement",
    "status":"active","medicationCodeableConcept":{"text":"Doxycycline 100 mg",
    "coding":[{"system":"http://www.whocc.no/atc","code":"J01AA02"}]},
    "subject":{"reference":"Patient/p-1"},"effectiveDateTime":"2026-09-14T13:40:00Z"})");
  ASSERT_EQ(med.status, 201) << med.raw.body;
  events = RecordEvents("p-1");
  EXPECT_EQ(events.back().at("type"), "medication");
  EXPECT_EQ(events.back().at("name"), "Doxycycline 100 mg");
  EXPECT_EQ(events.back().at("atc"), "J01AA02");
  EXPECT_EQ(events.back().at("action"), "start");
  EXPECT_EQ(med.obj().at("medicationCodeableConcept").at("text"), "Doxycycline 100 mg");

  // The interaction it raises is a DetectedIssue with the class's ATC evidence.
  auto issues = Fhir("GET", "/fhir/DetectedIssue?patient=p-1&code=INTERACTION", "dr-a");
  ASSERT_EQ(issues.status, 200) << issues.raw.body;
  ASSERT_EQ(issues.obj().at("total").as_int64(), 1);
  auto issue = Entries(issues)[0];
  EXPECT_EQ(issue.at("severity"), "high");
  EXPECT_EQ(issue.at("evidence").at(0).at("code").at(0).at("coding").at(0).at("code"), "J01AA");

  // Searching the MedicationRequest by RxNorm and by date.
  auto by_code = Fhir(
      "GET",
      "/fhir/MedicationRequest?patient=p-1&code=http://www.nlm.nih.gov/research/umls/rxnorm|6064",
      "dr-a");
  EXPECT_EQ(by_code.obj().at("total").as_int64(), 1);
  auto by_date =
      Fhir("GET", "/fhir/MedicationRequest?patient=Patient/p-1&date=lt2026-09-14", "dr-a");
  EXPECT_EQ(by_date.obj().at("total").as_int64(), 0);
  auto on_date = Fhir("GET", "/fhir/MedicationRequest?patient=p-1&date=2026-09-14", "dr-a");
  EXPECT_EQ(on_date.obj().at("total").as_int64(), 1);
}

TEST_P(FhirTest, DetectedIssuesTasksAndConsentsAreTheEvaluationAndTheRecord) {
  Enroll("p-2", "can_get_pregnant");
  auto rx = Post(
      "/v1/patients/p-2/prescriptions", "dr-a",
      R"({"id":"rx-9","product":"generic","doses_mg":[40],"days_supply":30,"refills":0,"at":"2026-09-14T12:20:00Z"})");
  ASSERT_EQ(rx.status, 201) << rx.raw.body;
  auto native = Get("/v1/patients/p-2", "dr-a");
  const json::object& ev = native.obj().at("evaluation").as_object();

  std::set<std::string> reasons, issue_codes;
  for (const json::value& r : ev.at("authorization").at("reasons").as_array()) {
    reasons.insert(std::string(r.at("code").as_string()));
  }
  ASSERT_FALSE(reasons.empty());
  auto issues = Fhir("GET", "/fhir/DetectedIssue?patient=p-2&_count=100", "dr-a");
  ASSERT_EQ(issues.status, 200) << issues.raw.body;
  for (const json::object& i : Entries(issues)) {
    if (i.at("code").at("coding").at(0).at("system") ==
        "https://isoguard.example/fhir/CodeSystem/reason") {
      issue_codes.insert(std::string(i.at("code").at("coding").at(0).at("code").as_string()));
      EXPECT_EQ(i.at("implicated").at(0).at("reference"), "MedicationRequest/p-2.rx-9");
    }
  }
  EXPECT_EQ(issue_codes, reasons);

  std::set<std::string> due, tasks;
  for (const json::value& d : ev.at("due").as_array())
    due.insert(std::string(d.at("code").as_string()));
  auto task_bundle = Fhir("GET", "/fhir/Task?patient=p-2", "dr-a");
  for (const json::object& t : Entries(task_bundle)) {
    tasks.insert(std::string(t.at("code").at("coding").at(0).at("code").as_string()));
  }
  EXPECT_FALSE(due.empty());
  EXPECT_EQ(tasks, due);

  auto consents = Fhir("GET", "/fhir/Consent?patient=p-2", "dr-a");
  ASSERT_EQ(consents.obj().at("total").as_int64(), 1);
  EXPECT_EQ(Entries(consents)[0].at("category").at(0).at("coding").at(0).at("code"), "enrollment");

  auto patient = Fhir("GET", "/fhir/Patient/p-2", "dr-a");
  ASSERT_EQ(patient.status, 200) << patient.raw.body;
  EXPECT_EQ(patient.str("birthDate"), "1995-03-02");
  auto by_identifier = Fhir(
      "GET", "/fhir/Patient?identifier=https://isoguard.example/fhir/sid/patient-id|p-2", "dr-a");
  EXPECT_EQ(by_identifier.obj().at("total").as_int64(), 1);
  // A read of a derived resource by its id.
  auto task = Fhir("GET", "/fhir/Task/p-2.due-pregnancy-test", "dr-a");
  auto screening = Fhir("GET", "/fhir/Task/p-2.due-screening-test", "dr-a");
  EXPECT_TRUE(task.status == 200 || screening.status == 200) << task.raw.body;
}

TEST_P(FhirTest, SearchPagesWithNextLinks) {
  EnrollReady("p-1");
  for (int i = 0; i < 5; ++i) {
    auto r =
        Fhir("POST", "/fhir/Observation", "dr-a",
             WeightObservation("p-1", 60 + i, "2026-09-0" + std::to_string(i + 1) + "T10:00:00Z"));
    ASSERT_EQ(r.status, 201) << r.raw.body;
  }
  auto page = Fhir("GET", "/fhir/Observation?patient=p-1&code=29463-7&_count=2", "dr-a");
  ASSERT_EQ(page.status, 200) << page.raw.body;
  EXPECT_EQ(page.obj().at("total").as_int64(), 6);
  std::vector<double> seen;
  int pages = 0;
  for (;;) {
    ++pages;
    for (const json::object& o : Entries(page))
      seen.push_back(o.at("valueQuantity").at("value").to_number<double>());
    const std::string next = Link(page, "next");
    if (next.empty()) break;
    ASSERT_LT(pages, 10);
    page = Fhir("GET", PathOf(next), "dr-a");
    ASSERT_EQ(page.status, 200) << page.raw.body;
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen.size(), 6u);
  auto since =
      Fhir("GET", "/fhir/Observation?patient=p-1&code=29463-7&date=ge2026-09-03&date=le2026-09-04",
           "dr-a");
  EXPECT_EQ(since.obj().at("total").as_int64(), 2);
  auto too_many = Fhir("GET", "/fhir/Observation?patient=p-1&_count=1001", "dr-a");
  EXPECT_EQ(too_many.status, 400);
  EXPECT_EQ(Expression(too_many), "_count");
  auto unknown = Fhir("GET", "/fhir/Observation?patient=p-1&value-quantity=5", "dr-a");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_EQ(Expression(unknown), "value-quantity");
}

TEST_P(FhirTest, BadInputIsRefusedNamingTheElementAndChangesNothing) {
  EnrollReady("p-1");
  const int64_t before = Version("p-1");
  struct Case {
    std::string target, body, expression;
    int status;
  };
  const std::vector<Case> cases = {
      {"/fhir/Observation", R"({"resourceType":"Patient"})", "Observation.resourceType", 400},
      {"/fhir/Patient", R"({"resourceType":"Patient"})", "Patient", 400},
      {"/fhir/Observation",
       R"({"resourceType":"Observation","status":"final","subject":{"reference":"Patient/p-1"},"effectiveDateTime":"2026-09-14T13:00:00Z"})",
       "Observation.code", 400},
      {"/fhir/Observation",
       R"({"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p-1"},"effectiveDateTime":"2026-09-14T13:00:00Z","valueQuantity":{"value":70,"system":"http://unitsofmeasure.org","code":"/min"}})",
       "Observation.code.coding", 400},
      {"/fhir/Observation", WeightObservation("p-1", 0), "Observation.valueQuantity.value", 400},
      {"/fhir/Observation",
       R"({"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},"subject":{"reference":"Patient/p-1"},"effectiveDateTime":"2026-09-14T13:00:00Z","valueQuantity":{"value":150,"system":"http://unitsofmeasure.org","code":"[lb_av]"}})",
       "Observation.valueQuantity.code", 400},
      {"/fhir/Observation",
       R"({"resourceType":"Observation","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},"subject":{"reference":"Patient/p-1"}})",
       "Observation.status", 400},
      {"/fhir/MedicationRequest", IsotretinoinRequest("p-1", "active", {250}, 30),
       "MedicationRequest.dosageInstruction", 400},
      {"/fhir/MedicationRequest", IsotretinoinRequest("p-1", "draft", {40}, 30),
       "MedicationRequest.status", 400},
      {"/fhir/MedicationRequest",
       R"({"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"Patient/p-1"},"medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"1649480"}]}})",
       "MedicationRequest.medicationCodeableConcept.coding", 400},
      {"/fhir/MedicationStatement",
       R"({"resourceType":"MedicationStatement","status":"active","subject":{"reference":"Group/g-1"},"medicationCodeableConcept":{"text":"x"}})",
       "MedicationStatement.subject.reference", 400},
  };
  for (const Case& c : cases) {
    auto r = Fhir("POST", c.target, "dr-a", c.body);
    EXPECT_EQ(r.status, c.status) << c.body << "\n" << r.raw.body;
    EXPECT_EQ(r.str("resourceType"), "OperationOutcome") << r.raw.body;
    EXPECT_EQ(Expression(r), c.expression) << r.raw.body;
  }
  auto wrong_json = Fhir("POST", "/fhir/Observation", "dr-a", "{not json");
  EXPECT_EQ(wrong_json.status, 400);
  EXPECT_EQ(wrong_json.str("resourceType"), "OperationOutcome");
  EXPECT_EQ(Version("p-1"), before);
}

TEST_P(FhirTest, TransactionBundlesAreAllOrNothingAndBounded) {
  EnrollReady("p-1");
  const int64_t before = Version("p-1");
  auto entry = [](const std::string& resource, const std::string& type) {
    return R"({"resource":)" + resource + R"(,"request":{"method":"POST","url":")" + type +
           R"("}})";
  };
  const std::string ok_bundle =
      R"({"resourceType":"Bundle","type":"transaction","entry":[)" +
      entry(WeightObservation("p-1", 63), "Observation") + "," +
      entry(IsotretinoinRequest("p-1", "active", {40}, 30), "MedicationRequest") + "]}";
  auto r = Fhir("POST", "/fhir", "dr-a", ok_bundle);
  ASSERT_EQ(r.status, 200) << r.raw.body;
  EXPECT_EQ(r.str("type"), "transaction-response");
  ASSERT_EQ(r.obj().at("entry").as_array().size(), 2u);
  EXPECT_EQ(r.obj().at("entry").at(0).at("response").at("status"), "201 Created");
  EXPECT_EQ(r.obj().at("entry").at(1).at("resource").at("resourceType"), "MedicationRequest");
  EXPECT_EQ(Version("p-1"), before + 2);

  // One bad entry: nothing is written, and the outcome names the entry's element.
  const std::string bad_bundle = R"({"resourceType":"Bundle","type":"transaction","entry":[)" +
                                 entry(WeightObservation("p-1", 63), "Observation") + "," +
                                 entry(WeightObservation("p-1", 900), "Observation") + "]}";
  auto bad = Fhir("POST", "/fhir", "dr-a", bad_bundle);
  EXPECT_EQ(bad.status, 400) << bad.raw.body;
  EXPECT_EQ(Expression(bad), "Bundle.entry[1].resource.valueQuantity.value");
  EXPECT_EQ(Version("p-1"), before + 2);

  // Another patient in the same transaction.
  EnrollReady("p-3");
  auto mixed = Fhir("POST", "/fhir", "dr-a",
                    R"({"resourceType":"Bundle","type":"transaction","entry":[)" +
                        entry(WeightObservation("p-1", 63), "Observation") + "," +
                        entry(WeightObservation("p-3", 63), "Observation") + "]}");
  EXPECT_EQ(mixed.status, 400);
  EXPECT_EQ(Expression(mixed), "Bundle.entry[1].resource.subject");

  // A batch is not a transaction.
  auto batch =
      Fhir("POST", "/fhir", "dr-a", R"({"resourceType":"Bundle","type":"batch","entry":[]})");
  EXPECT_EQ(batch.status, 400);
  EXPECT_EQ(Expression(batch), "Bundle.type");

  // 10,000 entries: refused as too costly, nothing changes.
  std::string huge = R"({"resourceType":"Bundle","type":"transaction","entry":[)";
  const std::string one = entry(WeightObservation("p-1", 63), "Observation");
  for (int i = 0; i < 10000; ++i) huge += (i > 0 ? "," : "") + one;
  huge += "]}";
  auto too_big = Fhir("POST", "/fhir", "dr-a", huge);
  EXPECT_EQ(too_big.status, 413) << too_big.raw.body.substr(0, 300);
  EXPECT_EQ(IssueCode(too_big), "too-costly");
  EXPECT_EQ(Expression(too_big), "Bundle.entry");
  // At the limit it is taken.
  std::string at_limit = R"({"resourceType":"Bundle","type":"transaction","entry":[)";
  for (size_t i = 0; i < fhir::kMaxBundleEntries; ++i) at_limit += (i > 0 ? "," : "") + one;
  at_limit += "]}";
  const int64_t before_limit = Version("p-1");
  auto limit = w().Call("POST", "/fhir", T("dr-a"), at_limit, {}, "application/fhir+json");
  EXPECT_EQ(limit.status, 200) << limit.raw.body.substr(0, 300);
  EXPECT_EQ(Version("p-1"), before_limit + static_cast<int64_t>(fhir::kMaxBundleEntries));
}

TEST_P(FhirTest, VersionsETagsAndIfMatchFollowTheRestRules) {
  EnrollReady("p-1");
  auto patient = Fhir("GET", "/fhir/Patient/p-1", "dr-a");
  ASSERT_EQ(patient.status, 200);
  ASSERT_NE(patient.raw.header("etag"), nullptr);
  EXPECT_EQ(*patient.raw.header("etag"),
            "W/\"" + std::string(patient.obj().at("meta").at("versionId").as_string()) + "\"");
  auto not_modified = w().Call("GET", "/fhir/Patient/p-1", T("dr-a"), "",
                               {{"If-None-Match", *patient.raw.header("etag")}});
  EXPECT_EQ(not_modified.status, 304);

  const std::string current = "W/\"" + std::to_string(Version("p-1")) + "\"";
  auto stale = Fhir("POST", "/fhir/Observation", "dr-a", WeightObservation("p-1", 63),
                    {{"If-Match", "W/\"1\""}});
  EXPECT_EQ(stale.status, 412) << stale.raw.body;
  EXPECT_EQ(stale.str("resourceType"), "OperationOutcome");
  auto fresh = Fhir("POST", "/fhir/Observation", "dr-a", WeightObservation("p-1", 63),
                    {{"If-Match", current}});
  EXPECT_EQ(fresh.status, 201) << fresh.raw.body;

  // A corrected event is entered-in-error, with a new version.
  const std::string id(fresh.obj().at("id").as_string());
  const std::string event_id = id.substr(id.find('.') + 1);
  auto corrected = Post("/v1/patients/p-1/events/" + event_id + "/correction", "dr-a", "");
  ASSERT_EQ(corrected.status, 201) << corrected.raw.body;
  auto read = Fhir("GET", "/fhir/Observation/" + id, "dr-a");
  EXPECT_EQ(read.str("status"), "entered-in-error");
  EXPECT_NE(read.obj().at("meta").at("versionId"), fresh.obj().at("meta").at("versionId"));
}

TEST_P(FhirTest, AccessFollowsCareAndIsAudited) {
  EnrollReady("p-1");
  auto anonymous = Fhir("GET", "/fhir/Patient/p-1", "");
  EXPECT_EQ(anonymous.status, 401);
  EXPECT_EQ(anonymous.str("resourceType"), "OperationOutcome");
  auto other_clinic = Fhir("GET", "/fhir/Observation?patient=p-1", "dr-b");
  EXPECT_EQ(other_clinic.status, 403);
  EXPECT_EQ(IssueCode(other_clinic), "forbidden");
  auto write = Fhir("POST", "/fhir/Observation", "dr-b", WeightObservation("p-1", 63));
  EXPECT_EQ(write.status, 403);
  auto missing = Fhir("GET", "/fhir/Observation/p-1.nope", "dr-a");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(IssueCode(missing), "not-found");
  w().audit().Flush();
  auto audit = Get("/v1/audit?patient_id=p-1&limit=1000", "admin");
  ASSERT_EQ(audit.status, 200) << audit.raw.body;
  std::set<std::string> actions;
  for (const json::value& item : audit.obj().at("items").as_array()) {
    actions.insert(std::string(item.at("action").as_string()) + " " +
                   std::string(item.at("outcome").as_string()));
  }
  EXPECT_TRUE(actions.contains("GET /fhir/{resource_type} refused"));
  EXPECT_TRUE(actions.contains("POST /fhir/{resource_type} refused"));
  EXPECT_TRUE(actions.contains("GET /fhir/{resource_type}/{id} error"));
  // Refused before any token: the attempt still names the patient it asked for.
  EXPECT_TRUE(actions.contains("GET /fhir/{resource_type}/{id} refused"));  // Patient/p-1
  EXPECT_EQ(Fhir("GET", "/fhir/Observation?patient=Patient/p-1", "").status, 401);
  w().audit().Flush();
  audit = Get("/v1/audit?patient_id=p-1&limit=1000", "admin");
  size_t anonymous_searches = 0;
  for (const json::value& item : audit.obj().at("items").as_array()) {
    anonymous_searches += item.at("action") == "GET /fhir/{resource_type}" &&
                          item.at("outcome") == "refused" && item.at("actor_id") == "";
  }
  EXPECT_EQ(anonymous_searches, 1u) << audit.raw.body;
}

TEST_P(FhirTest, DispensesAreMedicationDispensesAndCompleteTheRequest) {
  EnrollReady("p-1");
  ASSERT_EQ(
      Post(
          "/v1/patients/p-1/prescriptions", "dr-a",
          R"({"id":"rx-1","product":"generic","doses_mg":[40],"days_supply":30,"refills":0,"at":"2026-09-14T12:20:00Z"})")
          .status,
      201);
  ASSERT_EQ(
      Post(
          "/v1/stock/lots", "ph-a",
          R"({"lot_id":"L-1","product":"generic","strength_mg":40,"lot_number":"MFR-1","expiry":"2028-01-31","location":"shelf","quantity_capsules":500})")
          .status,
      201);
  auto auth = w().Call("POST", "/v1/authorizations", T("ph-a"),
                       R"({"patient_id":"p-1","prescription_id":"rx-1"})");
  ASSERT_EQ(auth.status, 201) << auth.raw.body;
  auto dispense = w().Call("POST", "/v1/dispenses", T("ph-a"),
                           R"({"authorization_id":")" + auth.str("authorization_id") +
                               R"(","lot_id":"L-1","medication_guide_given":true})");
  ASSERT_EQ(dispense.status, 201) << dispense.raw.body;
  auto dispenses = Fhir("GET", "/fhir/MedicationDispense?patient=p-1", "dr-a");
  ASSERT_EQ(dispenses.status, 200) << dispenses.raw.body;
  ASSERT_EQ(dispenses.obj().at("total").as_int64(), 1);
  const json::object d = Entries(dispenses)[0];
  EXPECT_EQ(d.at("status"), "completed");
  EXPECT_EQ(d.at("authorizingPrescription").at(0).at("reference"), "MedicationRequest/p-1.rx-1");
  EXPECT_EQ(d.at("medicationCodeableConcept").at("coding").at(0).at("code"), "6064");
  auto rx = Fhir("GET", "/fhir/MedicationRequest/p-1.rx-1", "dr-a");
  EXPECT_EQ(rx.str("status"), "completed");
}

TEST_P(FhirTest, RemsEtasuAnswersEachRequirementFromTheEngine) {
  EnrollReady("p-1");
  auto rx = Post(
      "/v1/patients/p-1/prescriptions", "dr-a",
      R"({"id":"rx-1","product":"generic","doses_mg":[40],"days_supply":30,"refills":0,"at":"2026-09-14T12:20:00Z"})");
  ASSERT_EQ(rx.status, 201);
  auto params = [](const std::string& patient, const std::string& rxnorm) {
    return R"({"resourceType":"Parameters","parameter":[
      {"name":"patient","resource":{"resourceType":"Patient","id":")" +
           patient + R"("}},
      {"name":"medication","resource":{"resourceType":"Medication","code":{"coding":[
        {"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":")" +
           rxnorm + R"("}]}}}]})";
  };
  auto met = Fhir("POST", "/fhir/GuidanceResponse/$rems-etasu", "dr-a", params("p-1", "6064"));
  ASSERT_EQ(met.status, 200) << met.raw.body;
  const json::object& outer = met.obj().at("parameter").at(0).at("resource").as_object();
  EXPECT_EQ(met.obj().at("parameter").at(0).at("name"), "rems-etasu");
  EXPECT_EQ(outer.at("status"), "success");
  std::set<std::string> names;
  for (const json::value& p : outer.at("contained").at(0).at("parameter").as_array()) {
    names.insert(std::string(p.at("name").as_string()));
    EXPECT_EQ(p.at("resource").at("status"), "success") << p.at("name");
  }
  EXPECT_EQ(names, (std::set<std::string>{"Patient Enrollment", "Prescription", "Counseling",
                                          "Visit Window"}));

  // A patient who can get pregnant with nothing done: the engine's reasons, by requirement.
  Enroll("p-2", "can_get_pregnant");
  ASSERT_EQ(
      Post(
          "/v1/patients/p-2/prescriptions", "dr-a",
          R"({"id":"rx-2","product":"generic","doses_mg":[40],"days_supply":30,"refills":0,"at":"2026-09-14T12:20:00Z"})")
          .status,
      201);
  auto native = Get("/v1/patients/p-2", "dr-a");
  std::set<std::string> reasons;
  for (const json::value& r :
       native.obj().at("evaluation").at("authorization").at("reasons").as_array()) {
    reasons.insert(std::string(r.at("code").as_string()));
  }
  auto not_met = Fhir("POST", "/fhir/GuidanceResponse/$rems-etasu", "dr-a", params("p-2", "6064"));
  ASSERT_EQ(not_met.status, 200) << not_met.raw.body;
  const json::object& o2 = not_met.obj().at("parameter").at(0).at("resource").as_object();
  EXPECT_EQ(o2.at("status"), "data-required");
  std::set<std::string> from_etasu;
  std::set<std::string> unmet;
  for (const json::value& p : o2.at("contained").at(0).at("parameter").as_array()) {
    const json::object& g = p.at("resource").as_object();
    if (g.at("status") == "data-required") unmet.insert(std::string(p.at("name").as_string()));
    if (const json::value* codes = g.if_contains("reasonCode")) {
      for (const json::value& c : codes->as_array()) {
        from_etasu.insert(std::string(c.at("coding").at(0).at("code").as_string()));
      }
    }
  }
  EXPECT_EQ(from_etasu, reasons);
  EXPECT_TRUE(unmet.contains("Pregnancy Test"));
  EXPECT_TRUE(unmet.contains("Contraception"));

  auto other_drug =
      Fhir("POST", "/fhir/GuidanceResponse/$rems-etasu", "dr-a", params("p-1", "161"));
  EXPECT_EQ(other_drug.status, 400);
  EXPECT_EQ(Expression(other_drug), "Parameters.parameter[1].resource");
  auto forbidden =
      Fhir("POST", "/fhir/GuidanceResponse/$rems-etasu", "dr-b", params("p-1", "6064"));
  EXPECT_EQ(forbidden.status, 403);
}

INSTANTIATE_TEST_SUITE_P(Sqlite, FhirTest, ::testing::Values(ApiBackend{"Sqlite", false}),
                         [](const auto& param_info) { return param_info.param.name; });
INSTANTIATE_TEST_SUITE_P(Postgres, FhirTest, ::testing::Values(ApiBackend{"Postgres", true}),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace isoguard::server::testing
