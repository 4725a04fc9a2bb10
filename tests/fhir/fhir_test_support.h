// What the FHIR and CDS Hooks tests share: the ApiWorld server (which serves /fhir and
// /cds-services beside /v1), resource builders, and the dump of every document the server
// produces for the schema validation (tests/fhir/validate.mjs): with ISOGUARD_FHIR_OUT set,
// each FHIR answer is written to $ISOGUARD_FHIR_OUT/fhir/ and each CDS Hooks answer to
// $ISOGUARD_FHIR_OUT/cds/.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "../server/api_test_support.h"

namespace isoguard::server::testing {

inline void DumpDocument(std::string_view kind, const Reply& reply) {
  const char* out = std::getenv("ISOGUARD_FHIR_OUT");
  if (out == nullptr || *out == '\0' || !reply.body.is_object()) return;
  static std::atomic<int> counter{0};
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info != nullptr ? std::string(info->test_suite_name()) + "." + info->name()
                                     : std::string("unknown");
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  const std::filesystem::path dir = std::filesystem::path(out) / std::string(kind);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / (name + "-" + std::to_string(counter++) + ".json")) << reply.raw.body;
}

inline bool IsFhirReply(const Reply& r) {
  const std::string* type = r.raw.header("content-type");
  return type != nullptr && type->starts_with("application/fhir+json");
}

class FhirWorldTest : public ::testing::TestWithParam<ApiBackend> {
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

  // A FHIR call; every FHIR answer is dumped for the schema validation.
  Reply Fhir(const std::string& method, const std::string& target, const std::string& who,
             const std::string& body = {},
             std::vector<std::pair<std::string, std::string>> headers = {}) {
    Reply r = w().Call(method, target, who.empty() ? "" : T(who), body, std::move(headers),
                       "application/fhir+json");
    if (IsFhirReply(r)) DumpDocument("fhir", r);
    return r;
  }
  // A CDS Hooks call; every 200 answer is dumped for the schema validation.
  Reply Cds(const std::string& method, const std::string& target, const std::string& who,
            const std::string& body = {}) {
    Reply r = w().Call(method, target, who.empty() ? "" : T(who), body);
    if (r.status == 200 && r.body.is_object() && !r.body.as_object().empty())
      DumpDocument("cds", r);
    return r;
  }
  Reply Post(const std::string& target, const std::string& who, const std::string& body) {
    return w().Call("POST", target, T(who), body);
  }
  Reply Get(const std::string& target, const std::string& who) {
    return w().Call("GET", target, T(who));
  }

  int64_t Version(const std::string& patient) {
    auto s = w().events().ReadState(patient);
    EXPECT_TRUE(s.ok());
    return s.ok() ? s->version : -1;
  }

  // The events of the patient's record, as the native API answers them.
  json::array RecordEvents(const std::string& patient, const std::string& who = "dr-a") {
    auto r = Get("/v1/patients/" + patient, who);
    EXPECT_EQ(r.status, 200) << r.raw.body;
    if (r.status != 200) return {};
    return r.obj().at("record").at("events").as_array();
  }

  void Enroll(const std::string& patient, const std::string& category,
              const std::string& clinician = "dr-a") {
    auto r = Post("/v1/patients", clinician,
                  R"({"patient_id":")" + patient +
                      R"(","birth_date":"1995-03-02","jurisdiction":"US","category":")" + category +
                      R"("})");
    ASSERT_EQ(r.status, 201) << r.raw.body;
  }

  // A patient who cannot get pregnant, counselled, weighed (62 kg), with baseline labs: the
  // engine authorizes a 30-day prescription of 40 mg a day at the test's now.
  void EnrollReady(const std::string& patient) {
    Enroll(patient, "cannot_get_pregnant");
    auto r = Post("/v1/patients/" + patient + "/events", "dr-a", R"({"events":[
      {"type":"visit","at":"2026-09-14T12:00:00Z","counseled":true},
      {"type":"weight","at":"2026-09-14T12:05:00Z","kg":62},
      {"type":"lab","at":"2026-09-14T12:10:00Z","test":"TG","value":120,"unit":"mg/dL"},
      {"type":"lab","at":"2026-09-14T12:10:00Z","test":"ALT","value":22,"unit":"U/L"},
      {"type":"phq9","at":"2026-09-14T12:15:00Z","items":[0,0,0,0,0,0,0,0,0]}]})");
    ASSERT_EQ(r.status, 201) << r.raw.body;
  }

  std::unique_ptr<ApiWorld> world_;
};

// ---- Resource builders (FHIR R4 JSON as an EHR sends it).

inline std::string WeightObservation(const std::string& patient, double kg,
                                     const std::string& at = "2026-09-14T13:00:00Z") {
  return R"({"resourceType":"Observation","status":"final",
    "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
    "code":{"coding":[{"system":"http://loinc.org","code":"29463-7","display":"Body weight"}]},
    "subject":{"reference":"Patient/)" +
         patient + R"("},"effectiveDateTime":")" + at + R"(",
    "valueQuantity":{"value":)" +
         std::to_string(kg) + R"(,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}})";
}

inline std::string IsotretinoinRequest(const std::string& patient, const std::string& status,
                                       const std::vector<int>& doses_mg, int days,
                                       const std::string& id = "draft-1",
                                       const std::string& product_coding = {}) {
  std::string dosage;
  for (size_t i = 0; i < doses_mg.size(); ++i) {
    if (i > 0) dosage += ",";
    dosage +=
        R"({"sequence":)" + std::to_string(i + 1) +
        R"(,"timing":{"repeat":{"frequency":1,"period":1,"periodUnit":"d"}},"doseAndRate":[{"doseQuantity":{"value":)" +
        std::to_string(doses_mg[i]) +
        R"(,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"}}]})";
  }
  return R"({"resourceType":"MedicationRequest","id":")" + id + R"(","status":")" + status +
         R"(","intent":"order",
    "medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"6064","display":"isotretinoin"})" +
         product_coding + R"(],"text":"isotretinoin"},
    "subject":{"reference":"Patient/)" +
         patient + R"("},"authoredOn":"2026-09-14T13:30:00Z",
    "dosageInstruction":[)" +
         dosage + R"(],
    "dispenseRequest":{"numberOfRepeatsAllowed":0,"expectedSupplyDuration":{"value":)" +
         std::to_string(days) +
         R"(,"unit":"days","system":"http://unitsofmeasure.org","code":"d"}}})";
}

}  // namespace isoguard::server::testing
