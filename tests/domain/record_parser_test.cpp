// Tests of the record parser against the contract (record-format.md): every event type parses
// into the Event struct, and every way a record can be malformed — a wrong type, a missing
// field, an unknown code, a broken limit — is rejected as kBadInput naming the field at fault.
// Each limit is tested at the limit (accepted) and one past it (rejected).
#include "domain/record_parser.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "domain/detail/record_text.h"

namespace isoguard {
namespace {

namespace json = boost::json;

constexpr std::string_view kPatient =
    R"({"id": "p-0001", "birth_date": "2007-05-14", "jurisdiction": "US",
        "category": "can_get_pregnant"})";

// Events 0..2 of every record built by WithEvent; the event under test is events[3].
constexpr std::string_view kBackground[] = {
    R"({"type": "prescription", "id": "rx-1", "at": "2026-09-01T10:00:00-04:00",
        "product": "generic", "doses_mg": [40, 30], "days_supply": 30, "refills": 0})",
    R"({"type": "weight", "at": "2026-08-20T09:00:00-04:00", "kg": 65})",
    R"({"type": "visit", "at": "2026-08-20T09:30:00-04:00", "counseled": true})",
};

json::object Object(std::string_view text) { return json::parse(text).as_object(); }

std::string RecordText(const json::object& patient, const json::array& events) {
  json::object root;
  root["patient"] = patient;
  root["events"] = events;
  return json::serialize(root);
}

json::array Background() {
  json::array events;
  for (std::string_view e : kBackground) events.push_back(Object(e));
  return events;
}

// A record of the background events and `event` as events[3].
std::string WithEvent(const json::object& event) {
  json::array events = Background();
  events.push_back(event);
  return RecordText(Object(kPatient), events);
}
std::string WithEvent(std::string_view event) { return WithEvent(Object(event)); }

std::string WithPatient(const json::object& patient) { return RecordText(patient, Background()); }

Result<Record> Parse(std::string_view text, const ParseOptions& options = {}) {
  return ParseRecord(text, options);
}

// The event parsed from events[index] of the input.
const Event* ByIndex(const Record& record, uint32_t index) {
  for (const Event& e : record.events) {
    if (e.index == index) return &e;
  }
  return nullptr;
}

::testing::AssertionResult Parses(const Result<Record>& r) {
  if (r.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "rejected: " << r.error().ToString();
}

// The record is rejected as malformed, naming `field`, with a message containing `words`.
::testing::AssertionResult IsMalformed(const Result<Record>& r, std::string_view field,
                                       std::string_view words) {
  if (r.ok()) {
    return ::testing::AssertionFailure() << "accepted; expected an error at " << field;
  }
  const Error& e = r.error();
  if (e.kind != ErrorKind::kBadInput) {
    return ::testing::AssertionFailure() << "kind is not kBadInput: " << e.ToString();
  }
  if (e.field != field) {
    return ::testing::AssertionFailure()
           << "field '" << e.field << "', expected '" << field << "': " << e.ToString();
  }
  if (e.message.find(words) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "message '" << e.message << "' does not say '" << words << "'";
  }
  return ::testing::AssertionSuccess();
}

// ===========================================================================================
// Every event type: a valid example, and each required field missing, null, mistyped, empty.
// ===========================================================================================

enum class FieldKind { kString, kCode, kTime, kDate, kNumber, kInteger, kBool, kList };

struct RequiredField {
  const char* name;
  FieldKind kind;
};

struct EventTypeCase {
  const char* type;
  const char* event;  // a valid event of the type
  std::vector<RequiredField> required;
};

std::ostream& operator<<(std::ostream& os, const EventTypeCase& c) { return os << c.type; }

const std::vector<EventTypeCase>& EventTypeCases() {
  using K = FieldKind;
  static const auto* cases = new std::vector<EventTypeCase>{
      {"enrollment",
       R"({"type": "enrollment", "at": "2026-08-20T09:00:00-04:00",
                        "program": "us-ipledge-2026"})",
       {{"at", K::kTime}}},
      {"category_change",
       R"({"type": "category_change", "at": "2026-08-21T09:00:00-04:00",
                             "category": "cannot_get_pregnant"})",
       {{"at", K::kTime}, {"category", K::kCode}}},
      {"weight",
       R"({"type": "weight", "at": "2026-08-21T09:00:00-04:00", "kg": 58.5})",
       {{"at", K::kTime}, {"kg", K::kNumber}}},
      {"visit",
       R"({"type": "visit", "at": "2026-08-21T09:00:00-04:00", "counseled": false})",
       {{"at", K::kTime}, {"counseled", K::kBool}}},
      {"contraception",
       R"({"type": "contraception", "at": "2026-08-21T09:00:00-04:00",
                           "methods": ["implant", "male_condom"], "since": "2026-08-01"})",
       {{"at", K::kTime}, {"methods", K::kList}, {"since", K::kDate}}},
      {"comprehension",
       R"({"type": "comprehension", "at": "2026-08-21T09:00:00-04:00",
                           "passed": true})",
       {{"at", K::kTime}, {"passed", K::kBool}}},
      {"pregnancy_test",
       R"({"type": "pregnancy_test", "collected_at": "2026-08-21T09:00:00-04:00",
                            "result": "negative", "setting": "lab", "specimen": "serum"})",
       {{"collected_at", K::kTime},
        {"result", K::kCode},
        {"setting", K::kCode},
        {"specimen", K::kCode}}},
      {"risk_acknowledgement",
       R"({"type": "risk_acknowledgement", "at": "2026-08-21T09:00:00+02:00"})",
       {{"at", K::kTime}}},
      {"assessment",
       R"({"type": "assessment", "at": "2026-08-21T09:00:00+01:00",
                        "kind": "sexual_function"})",
       {{"at", K::kTime}, {"kind", K::kCode}}},
      {"second_prescriber",
       R"({"type": "second_prescriber", "at": "2026-08-21T09:00:00+01:00"})",
       {{"at", K::kTime}}},
      {"prescription",
       R"({"type": "prescription", "id": "rx-2", "at": "2026-09-02T10:00:00-04:00",
                          "product": "absorica_ld", "doses_mg": [32, 32], "days_supply": 30,
                          "refills": 0})",
       {{"at", K::kTime},
        {"id", K::kString},
        {"product", K::kCode},
        {"doses_mg", K::kList},
        {"days_supply", K::kInteger},
        {"refills", K::kInteger}}},
      {"dispense",
       R"({"type": "dispense", "at": "2026-09-03T10:00:00-04:00",
                      "prescription": "rx-1", "days_supply": 30})",
       {{"at", K::kTime}, {"prescription", K::kString}}},
      {"lab",
       R"({"type": "lab", "at": "2026-08-21T09:00:00-04:00", "test": "TG", "value": 132,
                 "unit": "mg/dL", "uln": 150})",
       {{"at", K::kTime}, {"test", K::kCode}, {"value", K::kNumber}, {"unit", K::kCode}}},
      {"phq9",
       R"({"type": "phq9", "at": "2026-08-21T09:00:00-04:00",
                  "items": [0, 1, 2, 3, 0, 1, 2, 3, 0]})",
       {{"at", K::kTime}, {"items", K::kList}}},
      {"medication",
       R"({"type": "medication", "at": "2026-08-21T09:00:00-04:00",
                        "name": "Doxycycline 100 mg", "atc": "J01AA02", "action": "start"})",
       {{"at", K::kTime}, {"name", K::kString}, {"action", K::kCode}}},
      {"adverse_event",
       R"({"type": "adverse_event", "at": "2026-08-21T09:00:00-04:00",
                           "term": "dry lips", "serious": false})",
       {{"at", K::kTime}, {"term", K::kString}, {"serious", K::kBool}}},
      {"missed_dose",
       R"({"type": "missed_dose", "at": "2026-09-06T09:00:00-04:00",
                         "date": "2026-09-05"})",
       {{"at", K::kTime}, {"date", K::kDate}}},
      {"treatment_end",
       R"({"type": "treatment_end", "at": "2027-02-01T09:00:00-05:00",
                           "last_dose": "2027-01-31"})",
       {{"at", K::kTime}, {"last_dose", K::kDate}}},
      {"prescription_cancel",
       R"({"type": "prescription_cancel",
                                 "at": "2026-09-02T09:00:00-04:00", "prescription": "rx-1"})",
       {{"at", K::kTime}, {"prescription", K::kString}}},
      {"entered_in_error",
       R"({"type": "entered_in_error", "at": "2026-09-02T09:00:00-04:00",
                              "target": "ev-9"})",
       {{"at", K::kTime}, {"target", K::kString}}},
      {"authorization",
       R"({"type": "authorization", "at": "2026-09-02T09:00:00-04:00",
                           "prescription": "rx-1", "authorization": "auth-1",
                           "dispense_by": "2026-09-08T23:59:59-04:00"})",
       {{"at", K::kTime},
        {"prescription", K::kString},
        {"authorization", K::kString},
        {"dispense_by", K::kTime}}},
      {"authorization_reversal",
       R"({"type": "authorization_reversal",
                                    "at": "2026-09-02T10:00:00-04:00",
                                    "authorization": "auth-1"})",
       {{"at", K::kTime}, {"authorization", K::kString}}},
  };
  return *cases;
}

class EventTypeTest : public ::testing::TestWithParam<EventTypeCase> {
 protected:
  json::object ValidEvent() const { return Object(GetParam().event); }
  std::string Path(std::string_view field) const { return "events[3]." + std::string(field); }
};

TEST_P(EventTypeTest, ValidEventParses) {
  auto r = Parse(WithEvent(ValidEvent()));
  ASSERT_TRUE(Parses(r));
  ASSERT_EQ(r->events.size(), 4u);
  const Event* e = ByIndex(*r, 3);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(ToString(e->type), GetParam().type);
}

TEST_P(EventTypeTest, TheCaseCoversEveryEventType) {
  // Guards the table: one case per type of the contract, each spelled as codes.h spells it.
  EXPECT_TRUE(ParseEventType(GetParam().type).has_value());
  EXPECT_EQ(EventTypeCases().size(), static_cast<size_t>(kEventTypeCount));
}

TEST_P(EventTypeTest, MissingRequiredFieldIsMalformed) {
  for (const RequiredField& field : GetParam().required) {
    SCOPED_TRACE(field.name);
    json::object e = ValidEvent();
    ASSERT_EQ(e.erase(field.name), 1u);
    EXPECT_TRUE(IsMalformed(Parse(WithEvent(e)), Path(field.name), "required field is missing"));
  }
}

TEST_P(EventTypeTest, NullRequiredFieldCountsAsAbsent) {
  for (const RequiredField& field : GetParam().required) {
    SCOPED_TRACE(field.name);
    json::object e = ValidEvent();
    e[field.name] = nullptr;
    EXPECT_TRUE(IsMalformed(Parse(WithEvent(e)), Path(field.name), "required field is missing"));
  }
}

TEST_P(EventTypeTest, WronglyTypedRequiredFieldIsMalformed) {
  for (const RequiredField& field : GetParam().required) {
    SCOPED_TRACE(field.name);
    // Each field with two values of the wrong kinds, and what the message must say.
    std::vector<std::pair<json::value, std::string>> wrong;
    switch (field.kind) {
      case FieldKind::kString:
      case FieldKind::kCode:
      case FieldKind::kTime:
      case FieldKind::kDate:
        wrong = {{json::value(42), "must be a string, got a number"},
                 {json::value(true), "must be a string, got a boolean"},
                 {json::array{"x"}, "must be a string, got an array"}};
        break;
      case FieldKind::kNumber:
      case FieldKind::kInteger:
        wrong = {{json::value("65"), "must be a number, got a string"},
                 {json::value(false), "must be a number, got a boolean"},
                 {json::object{{"kg", 65}}, "must be a number, got an object"}};
        break;
      case FieldKind::kBool:
        wrong = {{json::value("true"), "must be true or false, got a string"},
                 {json::value(1), "must be true or false, got a number"},
                 {json::array{}, "must be true or false, got an array"}};
        break;
      case FieldKind::kList:
        wrong = {{json::object{}, "got an object"},
                 {json::value("implant"), "got a string"},
                 {json::value(3), "got a number"}};
        break;
    }
    for (const auto& [value, words] : wrong) {
      SCOPED_TRACE(json::serialize(value));
      json::object e = ValidEvent();
      e[field.name] = value;
      EXPECT_TRUE(IsMalformed(Parse(WithEvent(e)), Path(field.name), words));
    }
  }
}

TEST_P(EventTypeTest, EmptyRequiredStringIsMalformed) {
  for (const RequiredField& field : GetParam().required) {
    if (field.kind != FieldKind::kString && field.kind != FieldKind::kCode &&
        field.kind != FieldKind::kTime && field.kind != FieldKind::kDate) {
      continue;
    }
    SCOPED_TRACE(field.name);
    json::object e = ValidEvent();
    e[field.name] = "";
    EXPECT_TRUE(IsMalformed(Parse(WithEvent(e)), Path(field.name), "must not be empty"));
  }
}

TEST_P(EventTypeTest, TimeWithoutAnOffsetIsMalformed) {
  for (const RequiredField& field : GetParam().required) {
    if (field.kind != FieldKind::kTime && field.kind != FieldKind::kDate) continue;
    SCOPED_TRACE(field.name);
    json::object e = ValidEvent();
    e[field.name] = "2026-09-01T10:00:00";
    EXPECT_TRUE(IsMalformed(Parse(WithEvent(e)), Path(field.name), "offset"));
  }
}

TEST_P(EventTypeTest, BadDateOrTimeIsMalformed) {
  for (const RequiredField& field : GetParam().required) {
    if (field.kind != FieldKind::kTime && field.kind != FieldKind::kDate) continue;
    SCOPED_TRACE(field.name);
    for (const char* bad : {"2026-02-29T10:00:00Z", "2026-13-01T10:00:00-04:00", "tomorrow",
                            "2026-09-01T24:00:00Z"}) {
      SCOPED_TRACE(bad);
      json::object e = ValidEvent();
      e[field.name] = bad;
      // The message quotes the text at fault (at least its date).
      EXPECT_TRUE(
          IsMalformed(Parse(WithEvent(e)), Path(field.name), std::string(bad).substr(0, 10)));
    }
  }
}

// A time field takes a time only; a date field takes a date or a time with an offset.
TEST_P(EventTypeTest, TimeFieldsRejectADateAndDateFieldsAcceptATime) {
  for (const RequiredField& field : GetParam().required) {
    if (field.kind == FieldKind::kTime) {
      SCOPED_TRACE(field.name);
      json::object e = ValidEvent();
      e[field.name] = "2026-09-01";
      EXPECT_TRUE(IsMalformed(Parse(WithEvent(e)), Path(field.name), "offset"));
    } else if (field.kind == FieldKind::kDate) {
      SCOPED_TRACE(field.name);
      json::object e = ValidEvent();
      e[field.name] = "2026-09-01T23:30:00-04:00";
      auto r = Parse(WithEvent(e));
      ASSERT_TRUE(Parses(r));
      EXPECT_EQ(ByIndex(*r, 3)->date, LocalDate::FromYmd(2026, 9, 1));  // as written, not UTC
    }
  }
}

TEST_P(EventTypeTest, UnknownFieldsAreIgnored) {
  json::object e = ValidEvent();
  e["note"] = json::object{{"free", json::array{1, "two", nullptr}}};
  e["kg_extra"] = "not checked";
  EXPECT_TRUE(Parses(Parse(WithEvent(e))));
}

TEST_P(EventTypeTest, MissingTypeIsMalformed) {
  json::object e = ValidEvent();
  e.erase("type");
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(e)), "events[3].type", "required field is missing"));
}

INSTANTIATE_TEST_SUITE_P(EveryType, EventTypeTest, ::testing::ValuesIn(EventTypeCases()),
                         [](const ::testing::TestParamInfo<EventTypeCase>& type_case) {
                           return std::string(type_case.param.type);
                         });

// ===========================================================================================
// Valid records: the fields land in the Event struct; events are ordered by time.
// ===========================================================================================

TEST(RecordParserTest, PatientFieldsLand) {
  json::object patient = Object(kPatient);
  patient["jurisdiction"] = "EU";
  patient["category"] = "cannot_get_pregnant";
  patient["time_zone"] = "Europe/Paris";
  patient["target_mg_per_kg"] = json::array{100, 130.5};
  auto r = Parse(WithPatient(patient));
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(r->patient.id, "p-0001");
  EXPECT_EQ(r->patient.birth_date, LocalDate::FromYmd(2007, 5, 14));
  EXPECT_EQ(r->patient.jurisdiction, Jurisdiction::kEU);
  EXPECT_EQ(r->patient.category, Category::kCannotGetPregnant);
  EXPECT_EQ(r->patient.time_zone, "Europe/Paris");
  ASSERT_TRUE(r->patient.target_mg_per_kg.has_value());
  EXPECT_EQ((*r->patient.target_mg_per_kg)[0], 100);
  EXPECT_EQ((*r->patient.target_mg_per_kg)[1], 130.5);
}

TEST(RecordParserTest, OptionalPatientFieldsMayBeAbsentOrNull) {
  auto absent = Parse(WithPatient(Object(kPatient)));
  ASSERT_TRUE(Parses(absent));
  EXPECT_EQ(absent->patient.time_zone, "");
  EXPECT_FALSE(absent->patient.target_mg_per_kg.has_value());

  json::object patient = Object(kPatient);
  patient["time_zone"] = nullptr;
  patient["target_mg_per_kg"] = nullptr;
  auto null = Parse(WithPatient(patient));
  ASSERT_TRUE(Parses(null));
  EXPECT_EQ(null->patient.time_zone, "");
  EXPECT_FALSE(null->patient.target_mg_per_kg.has_value());
}

TEST(RecordParserTest, EveryEventTypeLandsInTheEventStruct) {
  json::array events;
  for (const EventTypeCase& c : EventTypeCases()) events.push_back(Object(c.event));
  // The dispense and the cancel name rx-1, which must be in the record.
  events.push_back(Object(kBackground[0]));
  auto r = Parse(RecordText(Object(kPatient), events));
  ASSERT_TRUE(Parses(r));
  ASSERT_EQ(r->events.size(), kEventTypeCount + 1u);
  auto ev = [&](uint32_t i) -> const Event& {
    const Event* e = ByIndex(*r, i);
    EXPECT_NE(e, nullptr);
    return *e;
  };
  auto at = [](std::string_view text) { return ParseOffsetTime(text)->instant; };
  auto date = [](int y, unsigned m, unsigned d) { return LocalDate::FromYmd(y, m, d); };

  const Event& enrollment = ev(0);
  EXPECT_EQ(enrollment.type, EventType::kEnrollment);
  EXPECT_EQ(enrollment.at, at("2026-08-20T09:00:00-04:00"));
  EXPECT_EQ(enrollment.program, "us-ipledge-2026");

  EXPECT_EQ(ev(1).type, EventType::kCategoryChange);
  EXPECT_EQ(ev(1).category, Category::kCannotGetPregnant);

  EXPECT_EQ(ev(2).type, EventType::kWeight);
  EXPECT_EQ(ev(2).kg, 58.5);

  EXPECT_EQ(ev(3).type, EventType::kVisit);
  EXPECT_FALSE(ev(3).flag);

  const Event& contraception = ev(4);
  EXPECT_EQ(contraception.type, EventType::kContraception);
  EXPECT_EQ(contraception.methods,
            MethodBit(ContraceptionMethod::kImplant) | MethodBit(ContraceptionMethod::kMaleCondom));
  EXPECT_EQ(contraception.date, date(2026, 8, 1));

  EXPECT_EQ(ev(5).type, EventType::kComprehension);
  EXPECT_TRUE(ev(5).flag);

  const Event& test = ev(6);
  EXPECT_EQ(test.type, EventType::kPregnancyTest);
  EXPECT_EQ(test.at, at("2026-08-21T09:00:00-04:00"));  // collected_at
  EXPECT_EQ(test.result, TestResult::kNegative);
  EXPECT_EQ(test.setting, TestSetting::kLab);
  EXPECT_EQ(test.specimen, Specimen::kSerum);

  EXPECT_EQ(ev(7).type, EventType::kRiskAcknowledgement);
  EXPECT_EQ(ev(7).at, at("2026-08-21T07:00:00Z"));

  EXPECT_EQ(ev(8).type, EventType::kAssessment);
  EXPECT_EQ(ev(8).assessment, AssessmentKind::kSexualFunction);

  EXPECT_EQ(ev(9).type, EventType::kSecondPrescriber);

  const Event& rx = ev(10);
  EXPECT_EQ(rx.type, EventType::kPrescription);
  EXPECT_EQ(rx.id, "rx-2");
  EXPECT_EQ(rx.product, Product::kAbsoricaLd);
  EXPECT_EQ(rx.dose_count, 2);
  EXPECT_EQ(rx.doses_mg[0], 32);
  EXPECT_EQ(rx.doses_mg[1], 32);
  EXPECT_EQ(rx.DailyMg(), 64);
  EXPECT_EQ(rx.days_supply, 30);
  EXPECT_EQ(rx.refills, 0);

  const Event& dispense = ev(11);
  EXPECT_EQ(dispense.type, EventType::kDispense);
  EXPECT_EQ(dispense.ref, "rx-1");
  EXPECT_EQ(dispense.days_supply, 30);

  const Event& lab = ev(12);
  EXPECT_EQ(lab.type, EventType::kLab);
  EXPECT_EQ(lab.test, LabTest::kTG);
  EXPECT_EQ(lab.value, 132);
  EXPECT_EQ(lab.unit, LabUnit::kMgPerDl);
  EXPECT_EQ(lab.uln, 150);

  const Event& phq9 = ev(13);
  EXPECT_EQ(phq9.type, EventType::kPhq9);
  std::array<uint8_t, 9> items = {0, 1, 2, 3, 0, 1, 2, 3, 0};
  EXPECT_EQ(phq9.phq9_items, items);

  const Event& med = ev(14);
  EXPECT_EQ(med.type, EventType::kMedication);
  EXPECT_EQ(med.name, "Doxycycline 100 mg");
  EXPECT_EQ(med.name_normalized, "doxycycline 100 mg");
  EXPECT_EQ(med.atc, "J01AA02");
  EXPECT_EQ(med.action, MedicationAction::kStart);

  const Event& adverse = ev(15);
  EXPECT_EQ(adverse.type, EventType::kAdverseEvent);
  EXPECT_EQ(adverse.name, "dry lips");
  EXPECT_FALSE(adverse.flag);

  EXPECT_EQ(ev(16).type, EventType::kMissedDose);
  EXPECT_EQ(ev(16).date, date(2026, 9, 5));

  EXPECT_EQ(ev(17).type, EventType::kTreatmentEnd);
  EXPECT_EQ(ev(17).date, date(2027, 1, 31));

  EXPECT_EQ(ev(18).type, EventType::kPrescriptionCancel);
  EXPECT_EQ(ev(18).ref, "rx-1");

  EXPECT_EQ(ev(19).type, EventType::kEnteredInError);
  EXPECT_EQ(ev(19).ref, "ev-9");

  const Event& auth = ev(20);
  EXPECT_EQ(auth.type, EventType::kAuthorization);
  EXPECT_EQ(auth.ref, "rx-1");
  EXPECT_EQ(auth.ref2, "auth-1");
  EXPECT_EQ(auth.dispense_by, at("2026-09-08T23:59:59-04:00"));

  EXPECT_EQ(ev(21).type, EventType::kAuthorizationReversal);
  EXPECT_EQ(ev(21).ref2, "auth-1");
}

TEST(RecordParserTest, OptionalEventFieldsMayBeAbsentOrNull) {
  for (const char* value : {"", R"(, "program": null)"}) {
    auto r = Parse(WithEvent(std::string(R"({"type": "enrollment", "at": "2026-08-20T09:00:00Z")") +
                             value + "}"));
    ASSERT_TRUE(Parses(r));
    EXPECT_EQ(ByIndex(*r, 3)->program, "");
  }
  for (const char* value : {"", R"(, "days_supply": null)"}) {
    auto r = Parse(WithEvent(std::string(R"({"type": "dispense", "at": "2026-09-02T09:00:00Z",
                                            "prescription": "rx-1")") +
                             value + "}"));
    ASSERT_TRUE(Parses(r));
    EXPECT_EQ(ByIndex(*r, 3)->days_supply, 0);  // 0 = the prescription's
  }
  for (const char* value : {"", R"(, "uln": null)"}) {
    auto r = Parse(WithEvent(std::string(R"({"type": "lab", "at": "2026-09-02T09:00:00Z",
                                            "test": "ALT", "value": 22, "unit": "U/L")") +
                             value + "}"));
    ASSERT_TRUE(Parses(r));
    EXPECT_EQ(ByIndex(*r, 3)->uln, 0);  // 0 = not given
  }
  for (const char* value : {"", R"(, "atc": null)"}) {
    auto r = Parse(WithEvent(std::string(R"({"type": "medication", "at": "2026-09-02T09:00:00Z",
                                            "name": "alcohol", "action": "stop")") +
                             value + "}"));
    ASSERT_TRUE(Parses(r));
    EXPECT_EQ(ByIndex(*r, 3)->atc, "");
    EXPECT_EQ(ByIndex(*r, 3)->action, MedicationAction::kStop);
  }
}

TEST(RecordParserTest, MedicationAtcIsNormalized) {
  auto r = Parse(WithEvent(R"({"type": "medication", "at": "2026-09-02T09:00:00Z",
                              "name": "St. John's Wort", "atc": " n06ax25 ", "action": "start"})"));
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(ByIndex(*r, 3)->atc, "N06AX25");
  EXPECT_EQ(ByIndex(*r, 3)->name, "St. John's Wort");
  EXPECT_EQ(ByIndex(*r, 3)->name_normalized, "st johns wort");
}

TEST(RecordParserTest, AnyEventMayCarryAnId) {
  auto r = Parse(WithEvent(R"({"type": "weight", "id": "ev-7", "at": "2026-09-02T09:00:00Z",
                              "kg": 60})"));
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(ByIndex(*r, 3)->id, "ev-7");
  EXPECT_EQ(ByIndex(*r, 0)->id, "rx-1");
  EXPECT_EQ(ByIndex(*r, 1)->id, "");
}

TEST(RecordParserTest, EmptyMethodListIsWellFormed) {
  auto r = Parse(WithEvent(R"({"type": "contraception", "at": "2026-09-02T09:00:00Z",
                              "methods": [], "since": "2026-08-01"})"));
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(ByIndex(*r, 3)->methods, 0u);
}

TEST(RecordParserTest, RepeatedMethodCountsOnce) {
  auto r = Parse(WithEvent(R"({"type": "contraception", "at": "2026-09-02T09:00:00Z",
                              "methods": ["male_condom", "male_condom"], "since": "2026-08-01"})"));
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(ByIndex(*r, 3)->methods, MethodBit(ContraceptionMethod::kMaleCondom));
}

TEST(RecordParserTest, EveryMethodCodeParses) {
  json::array methods;
  for (int i = 0; i < kContraceptionMethodCount; ++i) {
    methods.emplace_back(ToString(static_cast<ContraceptionMethod>(i)));
  }
  json::object e = Object(R"({"type": "contraception", "at": "2026-09-02T09:00:00Z",
                             "since": "2026-08-01"})");
  e["methods"] = methods;
  auto r = Parse(WithEvent(e));
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(ByIndex(*r, 3)->methods, (MethodSet{1} << kContraceptionMethodCount) - 1);
}

TEST(RecordParserTest, LabUnitsThatFitTheirTests) {
  for (const char* lab :
       {R"({"test": "ALT", "unit": "U/L"})", R"({"test": "AST", "unit": "U/L"})",
        R"({"test": "TG", "unit": "mg/dL"})", R"({"test": "TG", "unit": "mmol/L"})",
        R"({"test": "TC", "unit": "mmol/L"})", R"({"test": "HDL", "unit": "mg/dL"})",
        R"({"test": "LDL", "unit": "mmol/L"})"}) {
    SCOPED_TRACE(lab);
    json::object e = Object(lab);
    e["type"] = "lab";
    e["at"] = "2026-09-02T09:00:00Z";
    e["value"] = 1.5;
    EXPECT_TRUE(Parses(Parse(WithEvent(e))));
  }
}

TEST(RecordParserTest, EventsAreOrderedByTimeAndTiesKeepFileOrder) {
  // events[1] and events[3] are the same instant written in two offsets; so are [2] and [4].
  std::string text = R"({"patient": )" + std::string(kPatient) + R"(, "events": [
      {"type": "weight", "at": "2026-09-03T10:00:00-04:00", "kg": 60},
      {"type": "weight", "at": "2026-09-01T14:00:00Z", "kg": 61},
      {"type": "pregnancy_test", "collected_at": "2026-09-02T10:00:00-04:00",
       "result": "negative", "setting": "lab", "specimen": "urine"},
      {"type": "weight", "at": "2026-09-01T10:00:00-04:00", "kg": 62},
      {"type": "visit", "at": "2026-09-02T16:00:00+02:00", "counseled": true},
      {"type": "weight", "at": "2026-08-31T23:00:00-04:00", "kg": 63}
  ]})";
  auto r = Parse(text);
  ASSERT_TRUE(Parses(r));
  std::vector<uint32_t> order;
  for (const Event& e : r->events) order.push_back(e.index);
  EXPECT_EQ(order, (std::vector<uint32_t>{5, 1, 3, 2, 4, 0}));
  for (size_t i = 1; i < r->events.size(); ++i) {
    EXPECT_LE(r->events[i - 1].at, r->events[i].at);
  }
}

// A pregnancy test's time is its collection: an `at` beside `collected_at` (when the result
// was recorded, say) neither replaces it nor orders the event.
TEST(RecordParserTest, PregnancyTestIsOrderedByItsCollection) {
  auto r = Parse(WithEvent(R"({"type": "pregnancy_test", "at": "2026-09-20T09:00:00Z",
                              "collected_at": "2026-08-01T09:00:00Z", "result": "positive",
                              "setting": "home", "specimen": "urine"})"));
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(r->events[0].index, 3u);
  EXPECT_EQ(r->events[0].at, ParseOffsetTime("2026-08-01T09:00:00Z")->instant);
  EXPECT_EQ(r->events[0].result, TestResult::kPositive);
  EXPECT_EQ(r->events[0].setting, TestSetting::kHome);
}

TEST(RecordParserTest, DispenseOfAKnownPrescriptionParses) {
  // The prescription may come after the dispense in the file; it only has to be in the record.
  std::string text = R"({"patient": )" + std::string(kPatient) + R"(, "events": [
      {"type": "dispense", "at": "2026-09-02T10:00:00-04:00", "prescription": "rx-9"},
      {"type": "prescription", "id": "rx-9", "at": "2026-09-01T10:00:00-04:00",
       "product": "absorica", "doses_mg": [40], "days_supply": 30, "refills": 0}
  ]})";
  auto r = Parse(text);
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(ByIndex(*r, 0)->ref, "rx-9");
  EXPECT_EQ(r->events[0].type, EventType::kPrescription);  // ordered by time
}

TEST(RecordParserTest, EmptyEventListIsWellFormed) {
  auto r = Parse(R"({"patient": )" + std::string(kPatient) + R"(, "events": []})");
  ASSERT_TRUE(Parses(r));
  EXPECT_TRUE(r->events.empty());
}

TEST(RecordParserTest, UnknownRootFieldsAreIgnored) {
  auto r = Parse(R"({"version": 3, "patient": )" + std::string(kPatient) +
                 R"(, "events": [], "extra": {"deep": [[[1]]]}})");
  EXPECT_TRUE(Parses(r));
}

TEST(RecordParserTest, ParseRecordObjectAgreesWithParseRecord) {
  std::string text = WithEvent(R"({"type": "weight", "at": "2026-09-02T09:00:00Z", "kg": 0})");
  auto from_object = ParseRecordObject(json::parse(text).as_object(), ParseOptions{});
  EXPECT_TRUE(IsMalformed(from_object, "events[3].kg", "(0, 500]"));
  auto ok = ParseRecordObject(json::parse(WithPatient(Object(kPatient))).as_object(), {});
  EXPECT_TRUE(Parses(ok));
}

// ===========================================================================================
// Malformed records: the root, the patient, codes, references.
// ===========================================================================================

TEST(RecordMalformedTest, InvalidJsonNamesTheRecord) {
  for (const char* text :
       {"", "{", "{\"patient\": }", "not json", "{} extra", "{'a': 1}", "{\"a\": 1,}"}) {
    SCOPED_TRACE(text);
    EXPECT_TRUE(IsMalformed(Parse(text), "record", "not valid JSON"));
  }
}

TEST(RecordMalformedTest, NonObjectRootNamesTheRecord) {
  EXPECT_TRUE(IsMalformed(Parse("[]"), "record", "must be a JSON object, got an array"));
  EXPECT_TRUE(IsMalformed(Parse("null"), "record", "got null"));
  EXPECT_TRUE(IsMalformed(Parse("42"), "record", "got a number"));
  EXPECT_TRUE(IsMalformed(Parse("\"record\""), "record", "got a string"));
  EXPECT_TRUE(IsMalformed(Parse("true"), "record", "got a boolean"));
}

TEST(RecordMalformedTest, MissingPatientOrEvents) {
  EXPECT_TRUE(IsMalformed(Parse(R"({"events": []})"), "patient", "required field is missing"));
  EXPECT_TRUE(IsMalformed(Parse(R"({"patient": null, "events": []})"), "patient",
                          "required field is missing"));
  EXPECT_TRUE(IsMalformed(Parse(R"({"patient": )" + std::string(kPatient) + "}"), "events",
                          "required field is missing"));
  EXPECT_TRUE(IsMalformed(Parse(R"({"patient": )" + std::string(kPatient) + R"(, "events": null})"),
                          "events", "required field is missing"));
}

TEST(RecordMalformedTest, WronglyTypedPatientOrEvents) {
  EXPECT_TRUE(IsMalformed(Parse(R"({"patient": [], "events": []})"), "patient",
                          "must be an object, got an array"));
  EXPECT_TRUE(IsMalformed(Parse(R"({"patient": "p-1", "events": []})"), "patient",
                          "must be an object, got a string"));
  EXPECT_TRUE(IsMalformed(Parse(R"({"patient": )" + std::string(kPatient) + R"(, "events": {}})"),
                          "events", "got an object"));
  EXPECT_TRUE(IsMalformed(Parse(R"({"patient": )" + std::string(kPatient) + R"(, "events": 3})"),
                          "events", "got a number"));
}

TEST(RecordMalformedTest, EventThatIsNotAnObject) {
  json::array events = Background();
  events.push_back("weight");
  EXPECT_TRUE(IsMalformed(Parse(RecordText(Object(kPatient), events)), "events[3]",
                          "must be an object, got a string"));
  events = Background();
  events.push_back(json::array{});
  EXPECT_TRUE(
      IsMalformed(Parse(RecordText(Object(kPatient), events)), "events[3]", "got an array"));
  events = Background();
  events.push_back(nullptr);
  EXPECT_TRUE(IsMalformed(Parse(RecordText(Object(kPatient), events)), "events[3]", "got null"));
}

TEST(RecordMalformedTest, MissingPatientFields) {
  for (const char* field : {"id", "birth_date", "jurisdiction", "category"}) {
    SCOPED_TRACE(field);
    json::object patient = Object(kPatient);
    patient.erase(field);
    EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), std::string("patient.") + field,
                            "required field is missing"));
    patient[field] = nullptr;
    EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), std::string("patient.") + field,
                            "required field is missing"));
    patient[field] = "";
    EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), std::string("patient.") + field,
                            "must not be empty"));
  }
}

TEST(RecordMalformedTest, WronglyTypedPatientFields) {
  for (const char* field : {"id", "birth_date", "jurisdiction", "category", "time_zone"}) {
    SCOPED_TRACE(field);
    json::object patient = Object(kPatient);
    patient[field] = 7;
    EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), std::string("patient.") + field,
                            "must be a string, got a number"));
    patient[field] = json::object{};
    EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), std::string("patient.") + field,
                            "must be a string, got an object"));
  }
}

TEST(RecordMalformedTest, BirthDateMustBeADate) {
  for (const char* bad : {"2007-05-14T00:00:00Z", "2007-02-29", "14/05/2007", "2007-5-14"}) {
    SCOPED_TRACE(bad);
    json::object patient = Object(kPatient);
    patient["birth_date"] = bad;
    EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), "patient.birth_date", bad));
  }
}

TEST(RecordMalformedTest, UnknownPatientCodes) {
  json::object patient = Object(kPatient);
  patient["jurisdiction"] = "FR";
  EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), "patient.jurisdiction",
                          "unknown jurisdiction 'FR'"));
  patient["jurisdiction"] = "us";  // codes are case-sensitive
  EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), "patient.jurisdiction", "unknown"));

  patient = Object(kPatient);
  patient["category"] = "pregnant";
  EXPECT_TRUE(
      IsMalformed(Parse(WithPatient(patient)), "patient.category", "unknown category 'pregnant'"));
}

TEST(RecordMalformedTest, UnknownTimeZone) {
  json::object patient = Object(kPatient);
  patient["time_zone"] = "Europe/Atlantis";
  EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), "patient.time_zone", "Europe/Atlantis"));
  patient["time_zone"] = "Eastern Time";
  EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), "patient.time_zone", "time zone"));
}

TEST(RecordMalformedTest, BrokenTargetMgPerKg) {
  for (const char* bad : {"[0, 150]", "[150, 120]", "[120]", "\"x\"", "[]", "[100, 120, 150]",
                          "[-10, 150]", "{\"low\": 120, \"high\": 150}", "120"}) {
    SCOPED_TRACE(bad);
    json::object patient = Object(kPatient);
    patient["target_mg_per_kg"] = json::parse(bad);
    EXPECT_TRUE(
        IsMalformed(Parse(WithPatient(patient)), "patient.target_mg_per_kg", "[low, high]"));
  }
  json::object patient = Object(kPatient);
  patient["target_mg_per_kg"] = json::parse(R"(["120", 150])");
  EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), "patient.target_mg_per_kg[0]",
                          "must be a number, got a string"));
  patient["target_mg_per_kg"] = json::parse(R"([120, null])");
  EXPECT_TRUE(
      IsMalformed(Parse(WithPatient(patient)), "patient.target_mg_per_kg[1]", "must be a number"));
}

TEST(RecordMalformedTest, TargetMgPerKgAtItsLimits) {
  json::object patient = Object(kPatient);
  patient["target_mg_per_kg"] = json::parse("[120, 120]");  // low == high
  EXPECT_TRUE(Parses(Parse(WithPatient(patient))));
  patient["target_mg_per_kg"] = json::parse("[0.01, 300]");
  EXPECT_TRUE(Parses(Parse(WithPatient(patient))));
  patient["target_mg_per_kg"] = json::parse("[120.01, 120]");
  EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), "patient.target_mg_per_kg", "low <= high"));
}

TEST(RecordMalformedTest, UnknownEventType) {
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": "weigh", "at": "2026-09-02T09:00:00Z"})")),
                          "events[3].type", "unknown event type 'weigh'"));
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": "Weight", "at": "2026-09-02T09:00:00Z"})")),
                          "events[3].type", "unknown event type"));
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": 3, "at": "2026-09-02T09:00:00Z"})")),
                          "events[3].type", "must be a string, got a number"));
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": "", "at": "2026-09-02T09:00:00Z"})")),
                          "events[3].type", "must not be empty"));
}

// Each code-valued field with a value outside its code list.
TEST(RecordMalformedTest, UnknownCodeValues) {
  struct Case {
    const char* event;
    const char* field;
    const char* words;
  };
  const Case cases[] = {
      {R"({"type": "category_change", "at": "2026-09-02T09:00:00Z", "category": "unknown"})",
       "category", "unknown category 'unknown'"},
      {R"({"type": "pregnancy_test", "collected_at": "2026-09-02T09:00:00Z", "result": "negatve",
          "setting": "lab", "specimen": "urine"})",
       "result", "unknown test result 'negatve'"},
      {R"({"type": "pregnancy_test", "collected_at": "2026-09-02T09:00:00Z", "result": "negative",
          "setting": "clinic", "specimen": "urine"})",
       "setting", "unknown test setting 'clinic'"},
      {R"({"type": "pregnancy_test", "collected_at": "2026-09-02T09:00:00Z", "result": "negative",
          "setting": "lab", "specimen": "blood"})",
       "specimen", "unknown specimen 'blood'"},
      {R"({"type": "assessment", "at": "2026-09-02T09:00:00Z", "kind": "mood"})", "kind",
       "unknown assessment kind 'mood'"},
      {R"({"type": "prescription", "id": "rx-2", "at": "2026-09-02T09:00:00Z",
          "product": "accutane", "doses_mg": [40], "days_supply": 30, "refills": 0})",
       "product", "unknown product 'accutane'"},
      {R"({"type": "lab", "at": "2026-09-02T09:00:00Z", "test": "GGT", "value": 30,
          "unit": "U/L"})",
       "test", "unknown lab test 'GGT'"},
      {R"({"type": "lab", "at": "2026-09-02T09:00:00Z", "test": "TG", "value": 30,
          "unit": "mg/dl"})",
       "unit", "unknown unit 'mg/dl'"},
      {R"({"type": "medication", "at": "2026-09-02T09:00:00Z", "name": "doxycycline",
          "action": "pause"})",
       "action", "unknown medication action 'pause'"},
      {R"({"type": "contraception", "at": "2026-09-02T09:00:00Z",
          "methods": ["implant", "pill"], "since": "2026-08-01"})",
       "methods[1]", "unknown contraception method 'pill'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    EXPECT_TRUE(
        IsMalformed(Parse(WithEvent(c.event)), std::string("events[3].") + c.field, c.words));
  }
}

TEST(RecordMalformedTest, MethodThatIsNotACode) {
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": "contraception", "at": "2026-09-02T09:00:00Z",
                                             "methods": ["implant", 3], "since": "2026-08-01"})")),
                          "events[3].methods[1]", "got a number"));
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": "contraception", "at": "2026-09-02T09:00:00Z",
                         "methods": [null], "since": "2026-08-01"})")),
                          "events[3].methods[0]", "got null"));
}

TEST(RecordMalformedTest, LabUnitMustFitItsTest) {
  struct Case {
    const char* test;
    const char* unit;
    const char* words;
  };
  const Case cases[] = {
      {"ALT", "mg/dL", "use U/L"},           {"AST", "mmol/L", "use U/L"},
      {"TG", "U/L", "use mg/dL or mmol/L"},  {"TC", "U/L", "use mg/dL or mmol/L"},
      {"HDL", "U/L", "use mg/dL or mmol/L"}, {"LDL", "U/L", "use mg/dL or mmol/L"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.test) + " " + c.unit);
    json::object e = Object(R"({"type": "lab", "at": "2026-09-02T09:00:00Z", "value": 30})");
    e["test"] = c.test;
    e["unit"] = c.unit;
    auto r = Parse(WithEvent(e));
    EXPECT_TRUE(IsMalformed(r, "events[3].unit", c.words));
    EXPECT_TRUE(IsMalformed(r, "events[3].unit", c.test));
  }
}

TEST(RecordMalformedTest, UnknownEnrollmentProgram) {
  ParseOptions options;
  options.is_known_program = [](std::string_view id) {
    return id == "us-ipledge-2026" || id == "us-ipledge-2023";
  };
  EXPECT_TRUE(Parses(Parse(WithEvent(R"({"type": "enrollment", "at": "2026-08-20T09:00:00Z",
                                        "program": "us-ipledge-2026"})"),
                           options)));
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": "enrollment", "at": "2026-08-20T09:00:00Z",
                                             "program": "us-ipledge-2099"})"),
                                options),
                          "events[3].program", "unknown program 'us-ipledge-2099'"));
  // The program is optional.
  EXPECT_TRUE(
      Parses(Parse(WithEvent(R"({"type": "enrollment", "at": "2026-08-20T09:00:00Z"})"), options)));
  // Without a program list any id is accepted.
  EXPECT_TRUE(Parses(Parse(WithEvent(R"({"type": "enrollment", "at": "2026-08-20T09:00:00Z",
                                        "program": "us-ipledge-2099"})"))));
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": "enrollment", "at": "2026-08-20T09:00:00Z",
                                             "program": 2026})"),
                                options),
                          "events[3].program", "must be a string, got a number"));
}

TEST(RecordMalformedTest, DuplicateIds) {
  // rx-1 is the background prescription's id.
  auto r = Parse(WithEvent(R"({"type": "visit", "id": "rx-1", "at": "2026-09-02T09:00:00Z",
                              "counseled": true})"));
  EXPECT_TRUE(IsMalformed(r, "events[3].id", "duplicate id 'rx-1'"));
  EXPECT_TRUE(IsMalformed(r, "events[3].id", "events[0]"));

  json::array events = Background();
  events.push_back(Object(R"({"type": "visit", "id": "ev-1", "at": "2026-09-02T09:00:00Z",
                             "counseled": true})"));
  events.push_back(Object(R"({"type": "weight", "id": "ev-2", "at": "2026-09-02T09:00:00Z",
                             "kg": 60})"));
  events.push_back(Object(R"({"type": "weight", "id": "ev-1", "at": "2026-09-01T09:00:00Z",
                             "kg": 61})"));
  EXPECT_TRUE(IsMalformed(Parse(RecordText(Object(kPatient), events)), "events[5].id",
                          "duplicate id 'ev-1'"));
}

TEST(RecordMalformedTest, IdMustBeANonEmptyString) {
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": "visit", "id": 7,
                                             "at": "2026-09-02T09:00:00Z", "counseled": true})")),
                          "events[3].id", "must be a string, got a number"));
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": "visit", "id": "",
                                             "at": "2026-09-02T09:00:00Z", "counseled": true})")),
                          "events[3].id", "must not be empty"));
  // A null id is an absent id.
  EXPECT_TRUE(Parses(Parse(WithEvent(R"({"type": "visit", "id": null,
                                        "at": "2026-09-02T09:00:00Z", "counseled": true})"))));
}

TEST(RecordMalformedTest, PrescriptionWithoutId) {
  json::object absent = Object(kBackground[0]);
  absent.erase("id");
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(absent)), "events[3].id", "required field is missing"));
  json::object null = Object(kBackground[0]);
  null["id"] = nullptr;
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(null)), "events[3].id", "required field is missing"));
}

TEST(RecordMalformedTest, DispenseOfAPrescriptionNotInTheRecord) {
  auto r = Parse(WithEvent(R"({"type": "dispense", "at": "2026-09-02T09:00:00Z",
                              "prescription": "rx-404"})"));
  EXPECT_TRUE(IsMalformed(r, "events[3].prescription", "not in the record"));
  EXPECT_TRUE(IsMalformed(r, "events[3].prescription", "rx-404"));

  // An id that exists but is not a prescription's.
  json::array events = Background();
  events.push_back(Object(R"({"type": "visit", "id": "ev-5", "at": "2026-09-02T09:00:00Z",
                             "counseled": true})"));
  events.push_back(Object(R"({"type": "dispense", "at": "2026-09-03T09:00:00Z",
                             "prescription": "ev-5"})"));
  EXPECT_TRUE(IsMalformed(Parse(RecordText(Object(kPatient), events)), "events[4].prescription",
                          "not in the record"));
}

// A cancel or a correction naming no event does nothing (it is not malformed).
TEST(RecordMalformedTest, CancelOrCorrectionOfAnUnknownIdIsWellFormed) {
  EXPECT_TRUE(Parses(Parse(WithEvent(R"({"type": "prescription_cancel",
                                        "at": "2026-09-02T09:00:00Z", "prescription": "rx-404"})"))));
  EXPECT_TRUE(Parses(Parse(WithEvent(R"({"type": "entered_in_error",
                                        "at": "2026-09-02T09:00:00Z", "target": "ev-404"})"))));
}

TEST(RecordMalformedTest, PregnancyTestNeedsCollectedAtNotAt) {
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": "pregnancy_test",
                                             "at": "2026-09-02T09:00:00Z", "result": "negative",
                                             "setting": "lab", "specimen": "urine"})")),
                          "events[3].collected_at", "required field is missing"));
}

TEST(RecordMalformedTest, ErrorsNameTheIndexInTheFileNotAfterSorting) {
  // events[4] is the earliest event; its error must still say events[4].
  json::array events = Background();
  events.push_back(Object(R"({"type": "visit", "at": "2026-09-02T09:00:00Z", "counseled": true})"));
  events.push_back(Object(R"({"type": "weight", "at": "2020-01-01T09:00:00Z", "kg": -3})"));
  EXPECT_TRUE(IsMalformed(Parse(RecordText(Object(kPatient), events)), "events[4].kg", "-3"));
}

// ===========================================================================================
// Limits: at the limit (accepted) and one past it (rejected).
// ===========================================================================================

std::string EnrollmentEvents(size_t count) {
  std::string text = R"({"patient": )" + std::string(kPatient) + R"(, "events": [)";
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) text += ',';
    text += R"({"type": "enrollment", "at": "2026-08-20T09:00:00-04:00"})";
  }
  return text + "]}";
}

TEST(RecordLimitsTest, TenThousandEvents) {
  auto at_limit = Parse(EnrollmentEvents(10000));
  ASSERT_TRUE(Parses(at_limit));
  EXPECT_EQ(at_limit->events.size(), 10000u);
  auto past = Parse(EnrollmentEvents(10001));
  EXPECT_TRUE(IsMalformed(past, "events", "10001"));
  EXPECT_TRUE(IsMalformed(past, "events", "10000"));
}

// A well-formed record of exactly `bytes` bytes, padded in an ignored root field.
std::string RecordOfSize(size_t bytes) {
  std::string head = R"({"patient": )" + std::string(kPatient) +
                     R"(, "events": [{"type": "weight", "at": "2026-09-02T09:00:00Z", "kg": 60}],)"
                     R"( "padding": ")";
  std::string tail = "\"}";
  EXPECT_GT(bytes, head.size() + tail.size());
  return head + std::string(bytes - head.size() - tail.size(), 'x') + tail;
}

TEST(RecordLimitsTest, TenMebibytes) {
  constexpr size_t kTenMiB = 10 * 1024 * 1024;
  std::string at_limit = RecordOfSize(kTenMiB);
  ASSERT_EQ(at_limit.size(), kTenMiB);
  auto r = Parse(at_limit);
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(r->events.size(), 1u);

  std::string past = RecordOfSize(kTenMiB + 1);
  ASSERT_EQ(past.size(), kTenMiB + 1);
  EXPECT_TRUE(IsMalformed(Parse(past), "record", "10485761 bytes"));
  EXPECT_TRUE(IsMalformed(Parse(past), "record", "10485760"));
}

// The size check comes before parsing: one byte too many of garbage still says "too big".
TEST(RecordLimitsTest, SizeIsCheckedBeforeTheJson) {
  std::string garbage(10 * 1024 * 1024 + 1, '[');
  EXPECT_TRUE(IsMalformed(Parse(garbage), "record", "bytes"));
}

std::string Repeat(std::string_view unit, size_t count) {
  std::string s;
  s.reserve(unit.size() * count);
  for (size_t i = 0; i < count; ++i) s += unit;
  return s;
}

// Strings of the contract's fields: at most 1,000 characters (not bytes).
TEST(RecordLimitsTest, StringsOfAThousandCharacters) {
  struct Case {
    const char* event;
    const char* field;
  };
  const Case cases[] = {
      {R"({"type": "medication", "at": "2026-09-02T09:00:00Z", "action": "start"})", "name"},
      {R"({"type": "medication", "at": "2026-09-02T09:00:00Z", "name": "x", "action": "start"})",
       "atc"},
      {R"({"type": "adverse_event", "at": "2026-09-02T09:00:00Z", "serious": true})", "term"},
      {R"({"type": "weight", "at": "2026-09-02T09:00:00Z", "kg": 60})", "id"},
      {R"({"type": "enrollment", "at": "2026-09-02T09:00:00Z"})", "program"},
      {R"({"type": "entered_in_error", "at": "2026-09-02T09:00:00Z"})", "target"},
      {R"({"type": "prescription_cancel", "at": "2026-09-02T09:00:00Z"})", "prescription"},
      {R"({"type": "authorization_reversal", "at": "2026-09-02T09:00:00Z"})", "authorization"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    // ASCII, two-byte (é) and four-byte (an emoji) characters.
    for (std::string_view unit : {"a", "\u00e9", "\U0001F600"}) {
      SCOPED_TRACE(unit);
      json::object e = Object(c.event);
      e[c.field] = Repeat(unit, 1000);
      EXPECT_TRUE(Parses(Parse(WithEvent(e))));
      e[c.field] = Repeat(unit, 1001);
      EXPECT_TRUE(IsMalformed(Parse(WithEvent(e)), std::string("events[3].") + c.field,
                              "longer than 1000 characters"));
    }
  }
}

TEST(RecordLimitsTest, MultiByteStringKeepsItsText) {
  std::string name = Repeat("\u00e9", 1000);  // 1,000 characters, 2,000 bytes
  json::object e = Object(R"({"type": "medication", "at": "2026-09-02T09:00:00Z",
                             "action": "start"})");
  e["name"] = name;
  auto r = Parse(WithEvent(e));
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(ByIndex(*r, 3)->name, name);
}

TEST(RecordLimitsTest, PatientStringsOfAThousandCharacters) {
  json::object patient = Object(kPatient);
  patient["id"] = Repeat("p", 1000);
  EXPECT_TRUE(Parses(Parse(WithPatient(patient))));
  patient["id"] = Repeat("\u00e9", 1000);
  EXPECT_TRUE(Parses(Parse(WithPatient(patient))));
  patient["id"] = Repeat("p", 1001);
  EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), "patient.id", "longer than 1000"));
  patient["id"] = Repeat("\u00e9", 1001);
  EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), "patient.id", "longer than 1000"));
}

// The string limit is for the contract's fields; unknown fields only count towards the size.
TEST(RecordLimitsTest, LongUnknownStringsAreIgnored) {
  json::object e = Object(R"({"type": "weight", "at": "2026-09-02T09:00:00Z", "kg": 60})");
  e["comment"] = Repeat("z", 5000);
  EXPECT_TRUE(Parses(Parse(WithEvent(e))));
}

std::string Weight(std::string_view kg) {
  return WithEvent(R"({"type": "weight", "at": "2026-09-02T09:00:00Z", "kg": )" + std::string(kg) +
                   "}");
}

TEST(RecordLimitsTest, KgInZeroToFiveHundred) {
  for (const char* kg : {"500", "500.0", "0.01", "1e-3", "58.5", "5E2"}) {
    SCOPED_TRACE(kg);
    EXPECT_TRUE(Parses(Parse(Weight(kg))));
  }
  for (const char* kg : {"500.01", "0", "0.0", "-0.01", "-65", "1e9"}) {
    SCOPED_TRACE(kg);
    EXPECT_TRUE(IsMalformed(Parse(Weight(kg)), "events[3].kg", "(0, 500]"));
  }
}

std::string Prescription(std::string_view doses, std::string_view days_supply = "30",
                         std::string_view refills = "0") {
  return WithEvent(R"({"type": "prescription", "id": "rx-2", "at": "2026-09-02T09:00:00Z",
                       "product": "generic", "doses_mg": )" +
                   std::string(doses) + R"(, "days_supply": )" + std::string(days_supply) +
                   R"(, "refills": )" + std::string(refills) + "}");
}

TEST(RecordLimitsTest, EachDoseInZeroToTwoHundred) {
  for (const char* doses : {"[200]", "[0.5]", "[200, 200, 200, 200]", "[40, 30]", "[199.99]"}) {
    SCOPED_TRACE(doses);
    EXPECT_TRUE(Parses(Parse(Prescription(doses))));
  }
  struct Case {
    const char* doses;
    const char* field;
  };
  for (const Case& c :
       {Case{"[200.01]", "events[3].doses_mg[0]"}, Case{"[0]", "events[3].doses_mg[0]"},
        Case{"[40, 200.01]", "events[3].doses_mg[1]"}, Case{"[40, 0]", "events[3].doses_mg[1]"},
        Case{"[40, 30, -10]", "events[3].doses_mg[2]"}}) {
    SCOPED_TRACE(c.doses);
    EXPECT_TRUE(IsMalformed(Parse(Prescription(c.doses)), c.field, "(0, 200]"));
  }
  EXPECT_TRUE(IsMalformed(Parse(Prescription(R"([40, "30"])")), "events[3].doses_mg[1]",
                          "must be a number, got a string"));
  EXPECT_TRUE(IsMalformed(Parse(Prescription("[40, null]")), "events[3].doses_mg[1]",
                          "must be a number, got null"));
}

TEST(RecordLimitsTest, OneToFourDoses) {
  auto one = Parse(Prescription("[40]"));
  ASSERT_TRUE(Parses(one));
  EXPECT_EQ(ByIndex(*one, 3)->dose_count, 1);
  auto four = Parse(Prescription("[10, 20, 30, 40]"));
  ASSERT_TRUE(Parses(four));
  EXPECT_EQ(ByIndex(*four, 3)->dose_count, 4);
  EXPECT_EQ(ByIndex(*four, 3)->DailyMg(), 100);

  EXPECT_TRUE(IsMalformed(Parse(Prescription("[]")), "events[3].doses_mg", "1 to 4 doses, got 0"));
  EXPECT_TRUE(IsMalformed(Parse(Prescription("[10, 10, 10, 10, 10]")), "events[3].doses_mg",
                          "1 to 4 doses, got 5"));
}

TEST(RecordLimitsTest, PrescriptionDaysSupplyOneTo365) {
  // 31 is above every program's maximum: that is a denial, not a malformed record.
  for (const char* days : {"1", "30", "31", "90", "365", "30.0"}) {
    SCOPED_TRACE(days);
    EXPECT_TRUE(Parses(Parse(Prescription("[40]", days))));
  }
  for (const char* days : {"0", "366", "-1", "100000"}) {
    SCOPED_TRACE(days);
    EXPECT_TRUE(IsMalformed(Parse(Prescription("[40]", days)), "events[3].days_supply",
                            "between 1 and 365"));
  }
  EXPECT_TRUE(
      IsMalformed(Parse(Prescription("[40]", "30.5")), "events[3].days_supply", "whole number"));
}

std::string Dispense(std::string_view days_supply) {
  return WithEvent(R"({"type": "dispense", "at": "2026-09-02T09:00:00Z", "prescription": "rx-1",
                       "days_supply": )" +
                   std::string(days_supply) + "}");
}

TEST(RecordLimitsTest, DispenseDaysSupplyOneTo365) {
  for (const char* days : {"1", "31", "365"}) {
    SCOPED_TRACE(days);
    auto r = Parse(Dispense(days));
    ASSERT_TRUE(Parses(r));
    EXPECT_EQ(ByIndex(*r, 3)->days_supply, std::stoi(days));
  }
  for (const char* days : {"0", "366", "-5"}) {
    SCOPED_TRACE(days);
    EXPECT_TRUE(IsMalformed(Parse(Dispense(days)), "events[3].days_supply", "between 1 and 365"));
  }
  EXPECT_TRUE(IsMalformed(Parse(Dispense("\"30\"")), "events[3].days_supply",
                          "must be a number, got a string"));
  EXPECT_TRUE(IsMalformed(Parse(Dispense("7.5")), "events[3].days_supply", "whole number"));
}

TEST(RecordLimitsTest, RefillsZeroToTwelve) {
  for (const char* refills : {"0", "1", "12"}) {
    SCOPED_TRACE(refills);
    EXPECT_TRUE(Parses(Parse(Prescription("[40]", "30", refills))));
  }
  for (const char* refills : {"13", "-1"}) {
    SCOPED_TRACE(refills);
    EXPECT_TRUE(IsMalformed(Parse(Prescription("[40]", "30", refills)), "events[3].refills",
                            "between 0 and 12"));
  }
  EXPECT_TRUE(
      IsMalformed(Parse(Prescription("[40]", "30", "0.5")), "events[3].refills", "whole number"));
}

std::string Phq9(std::string_view items) {
  return WithEvent(R"({"type": "phq9", "at": "2026-09-02T09:00:00Z", "items": )" +
                   std::string(items) + "}");
}

TEST(RecordLimitsTest, Phq9NineItemsOfZeroToThree) {
  EXPECT_TRUE(Parses(Parse(Phq9("[0, 0, 0, 0, 0, 0, 0, 0, 0]"))));
  EXPECT_TRUE(Parses(Parse(Phq9("[3, 3, 3, 3, 3, 3, 3, 3, 3]"))));
  EXPECT_TRUE(Parses(Parse(Phq9("[3, 3, 3, 3, 3, 3, 3, 3, 3.0]"))));

  EXPECT_TRUE(IsMalformed(Parse(Phq9("[0, 0, 0, 0, 0, 0, 0, 0]")), "events[3].items",
                          "exactly 9 scores, got 8"));
  EXPECT_TRUE(IsMalformed(Parse(Phq9("[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]")), "events[3].items",
                          "exactly 9 scores, got 10"));
  EXPECT_TRUE(IsMalformed(Parse(Phq9("[]")), "events[3].items", "exactly 9 scores, got 0"));
  EXPECT_TRUE(IsMalformed(Parse(Phq9("[0, 0, 0, 0, 4, 0, 0, 0, 0]")), "events[3].items[4]",
                          "between 0 and 3, got 4"));
  EXPECT_TRUE(IsMalformed(Parse(Phq9("[0, 0, 0, 0, 0, 0, 0, 0, -1]")), "events[3].items[8]",
                          "between 0 and 3, got -1"));
  EXPECT_TRUE(IsMalformed(Parse(Phq9("[1.5, 0, 0, 0, 0, 0, 0, 0, 0]")), "events[3].items[0]",
                          "whole number"));
  EXPECT_TRUE(IsMalformed(Parse(Phq9(R"([0, "1", 0, 0, 0, 0, 0, 0, 0])")), "events[3].items[1]",
                          "must be a number, got a string"));
  EXPECT_TRUE(IsMalformed(Parse(Phq9("[0, 0, true, 0, 0, 0, 0, 0, 0]")), "events[3].items[2]",
                          "must be a number, got a boolean"));
}

std::string Lab(std::string_view value, std::string_view uln) {
  return WithEvent(R"({"type": "lab", "at": "2026-09-02T09:00:00Z", "test": "ALT", "unit": "U/L",
                       "value": )" +
                   std::string(value) + R"(, "uln": )" + std::string(uln) + "}");
}

TEST(RecordLimitsTest, LabValueAtLeastZero) {
  EXPECT_TRUE(Parses(Parse(Lab("0", "40"))));
  EXPECT_TRUE(Parses(Parse(Lab("0.001", "40"))));
  EXPECT_TRUE(Parses(Parse(Lab("12000", "40"))));
  EXPECT_TRUE(IsMalformed(Parse(Lab("-1", "40")), "events[3].value", ">= 0"));
  EXPECT_TRUE(IsMalformed(Parse(Lab("-0.001", "40")), "events[3].value", ">= 0"));
}

TEST(RecordLimitsTest, LabUlnAboveZero) {
  EXPECT_TRUE(Parses(Parse(Lab("22", "0.001"))));
  EXPECT_TRUE(Parses(Parse(Lab("22", "null"))));
  EXPECT_TRUE(IsMalformed(Parse(Lab("22", "0")), "events[3].uln", "> 0"));
  EXPECT_TRUE(IsMalformed(Parse(Lab("22", "-40")), "events[3].uln", "> 0"));
  EXPECT_TRUE(
      IsMalformed(Parse(Lab("22", "\"40\"")), "events[3].uln", "must be a number, got a string"));
}

TEST(RecordLimitsTest, BirthDateBetween1900And2100) {
  json::object patient = Object(kPatient);
  for (const char* date : {"1900-01-01", "2100-12-31"}) {
    SCOPED_TRACE(date);
    patient["birth_date"] = date;
    EXPECT_TRUE(Parses(Parse(WithPatient(patient))));
  }
  for (const char* date : {"1899-12-31", "2101-01-01"}) {
    SCOPED_TRACE(date);
    patient["birth_date"] = date;
    EXPECT_TRUE(IsMalformed(Parse(WithPatient(patient)), "patient.birth_date", date));
  }
}

TEST(RecordLimitsTest, EventDatesBetween1900And2100) {
  auto missed = [](std::string_view date) {
    return WithEvent(R"({"type": "missed_dose", "at": "2026-09-02T09:00:00Z", "date": ")" +
                     std::string(date) + "\"}");
  };
  EXPECT_TRUE(Parses(Parse(missed("1900-01-01"))));
  EXPECT_TRUE(Parses(Parse(missed("2100-12-31"))));
  EXPECT_TRUE(Parses(Parse(missed("2100-12-31T23:59:59-12:00"))));  // 2101 in UTC
  EXPECT_TRUE(IsMalformed(Parse(missed("1899-12-31")), "events[3].date", "1900-01-01"));
  EXPECT_TRUE(IsMalformed(Parse(missed("2101-01-01")), "events[3].date", "2100-12-31"));
  EXPECT_TRUE(IsMalformed(Parse(missed("2101-01-01T00:00:00Z")), "events[3].date", "2101"));
}

TEST(RecordLimitsTest, EventTimesBetween1900And2100) {
  auto visit = [](std::string_view at) {
    return WithEvent(R"({"type": "visit", "counseled": true, "at": ")" + std::string(at) + "\"}");
  };
  EXPECT_TRUE(Parses(Parse(visit("1900-01-01T00:00:00Z"))));
  EXPECT_TRUE(Parses(Parse(visit("2100-12-31T23:59:59Z"))));
  EXPECT_TRUE(IsMalformed(Parse(visit("1899-12-31T23:59:59Z")), "events[3].at", "1899-12-31"));
  EXPECT_TRUE(IsMalformed(Parse(visit("2101-01-01T00:00:00Z")), "events[3].at", "2101-01-01"));
}

// ===========================================================================================
// Fixtures: tests/data/malformed/*.json each say where they are malformed, in a root field
// the parser ignores: "_expect": {"field": ..., "message": ...}. The CLI test runs them too.
// ===========================================================================================

TEST(RecordFixturesTest, EveryMalformedFixtureIsRejectedWhereItSays) {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(ISOGUARD_TEST_DATA_DIR) / "data" / "malformed";
  size_t count = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().filename().string());
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    json::object expect = json::parse(text.str()).as_object().at("_expect").as_object();
    EXPECT_TRUE(IsMalformed(Parse(text.str()), expect.at("field").as_string(),
                            expect.at("message").as_string()));
    ++count;
  }
  EXPECT_GE(count, 5u);
}

// ===========================================================================================
// Reading the text: escapes, strings in parts, unknown and nested fields, repeated keys, depth,
// and the order in which errors are found. ParseRecord reads the text with a SAX parser; these
// pin down that it reads it as a Boost.JSON DOM would.
// ===========================================================================================

// Every ASCII letter and digit of `s` written as a \uXXXX escape.
std::string Escaped(std::string_view s) {
  std::string out;
  for (char c : s) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(c));
    out += std::isalnum(static_cast<unsigned char>(c)) ? std::string(buf) : std::string(1, c);
  }
  return out;
}

// A record of the background events and `event` as events[3], with `event` exactly as written
// (WithEvent goes through a DOM, which would undo escapes and repeated keys).
std::string WithRawEvent(std::string_view event) {
  std::string text = R"({"patient": )" + std::string(kPatient) + R"(, "events": [)";
  for (std::string_view e : kBackground) text += std::string(e) + ", ";
  return text + std::string(event) + "]}";
}

// The same record read from its text and from a DOM of it: both give the same answer.
::testing::AssertionResult TextAndDomAgree(std::string_view text) {
  auto from_text = Parse(text);
  boost::system::error_code ec;
  json::parse_options options;
  options.max_depth = 64;
  json::value dom = json::parse(text, ec, {}, options);
  if (ec || !dom.is_object()) {
    if (from_text.ok()) return ::testing::AssertionFailure() << "text accepted, DOM refused";
    return ::testing::AssertionSuccess();
  }
  auto from_dom = ParseRecordObject(dom.get_object(), {});
  if (from_text.ok() != from_dom.ok()) {
    return ::testing::AssertionFailure()
           << "text " << (from_text.ok() ? "ok" : from_text.error().ToString()) << ", DOM "
           << (from_dom.ok() ? "ok" : from_dom.error().ToString());
  }
  if (!from_text.ok() && (from_text.error().field != from_dom.error().field ||
                          from_text.error().message != from_dom.error().message)) {
    return ::testing::AssertionFailure()
           << "text: " << from_text.error().ToString() << "; DOM: " << from_dom.error().ToString();
  }
  if (from_text.ok() && from_text->events.size() != from_dom->events.size()) {
    return ::testing::AssertionFailure() << "different event counts";
  }
  return ::testing::AssertionSuccess();
}

TEST(RecordTextTest, EscapedKeysAndStringsReadAsWritten) {
  const std::string text =
      R"({"p\u0061tient": {"id": "p-\u00e9\"1\"", "birth_date": "2007-05-14",)"
      R"( "jurisdiction": "U\u0053", "category": "can_get_pregnant"},)"
      R"( "events": [{")" +
      Escaped("type") + R"(": "medication", "at": "2026-09-02T09:00:00Z", ")" + Escaped("name") +
      R"(": "Doxy\u0063ycline \/ 100\tmg", "action": ")" + Escaped("start") + R"("},)" +
      // Strings that begin with an escape arrive whole from the parser's buffer, which the next
      // escaped string reuses: each must be kept apart.
      R"( {"type": "medication", "at": "2026-09-03T09:00:00Z", "name": "\u0041spirin",)" +
      R"( "atc": "\u0042\u0030\u0031AC06", "action": "stop", "id": "\u0065-2"}]})";
  auto r = Parse(text);
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(r->patient.id, "p-\u00e9\"1\"");
  EXPECT_EQ(r->patient.jurisdiction, Jurisdiction::kUS);
  ASSERT_EQ(r->events.size(), 2u);
  EXPECT_EQ(r->events[0].type, EventType::kMedication);
  EXPECT_EQ(r->events[0].name, "Doxycycline / 100\tmg");
  EXPECT_EQ(r->events[0].action, MedicationAction::kStart);
  EXPECT_EQ(r->events[1].name, "Aspirin");
  EXPECT_EQ(r->events[1].atc, "B01AC06");
  EXPECT_EQ(r->events[1].id, "e-2");
  EXPECT_TRUE(TextAndDomAgree(text));
}

// Escaped strings reach the handler in parts (the text before the first escape, then the
// parser's buffer, flushed every 4 KiB); the parts make one string, checked as one.
TEST(RecordTextTest, StringsInPartsAreJoinedAndCounted) {
  auto medication = [](const std::string& name_json) {
    return WithRawEvent(R"({"type": "medication", "at": "2026-09-02T09:00:00Z", "action": "stop",
                            "name": ")" +
                        name_json + "\"}");
  };
  // 1,000 characters of 4 bytes each, written as surrogate-pair escapes: 4,000 bytes.
  const std::string emoji = "\\ud83d\\ude00";
  auto at_limit = Parse(medication("ab" + Repeat(emoji, 998)));
  ASSERT_TRUE(Parses(at_limit));
  EXPECT_EQ(ByIndex(*at_limit, 3)->name, "ab" + Repeat("\U0001F600", 998));
  // 1,100 characters, 4,400 bytes: more than the parser's buffer holds at once.
  EXPECT_TRUE(IsMalformed(Parse(medication("ab" + Repeat(emoji, 1098))), "events[3].name",
                          "longer than 1000 characters"));
  EXPECT_TRUE(IsMalformed(Parse(medication(Repeat("\\u00e9", 1001))), "events[3].name",
                          "longer than 1000 characters"));
  // An escaped code value is the code.
  auto test = Parse(WithRawEvent(R"({"type": "pregnancy_test", "collected_at":
      "2026-09-01T08:00:00Z", "result": "neg\u0061tive", "setting": "\u006fffice",
      "specimen": "urine"})"));
  ASSERT_TRUE(Parses(test));
  EXPECT_EQ(ByIndex(*test, 3)->setting, TestSetting::kOffice);
  // An unknown field of many kilobytes of escapes is skipped.
  EXPECT_TRUE(Parses(Parse(WithRawEvent(R"({"type": "weight", "at": "2026-09-02T09:00:00Z",
      "kg": 60, "note": "x)" + Repeat("\\u00e9\\n", 5000) +
                                        "\"}"))));
}

TEST(RecordTextTest, UnknownFieldsAreSkippedAtAnyDepth) {
  const std::string nested = R"({"a": [1, [2, [3, {"type": "lab", "kg": -1}]]], "b": {"c": null}})";
  const std::string text =
      R"({"x": )" + nested + R"(, "patient": {"id": "p-1", "note": )" + nested +
      R"(, "birth_date": "2007-05-14", "jurisdiction": "US",
      "category": "can_get_pregnant"}, "events": [{"type": "weight", "extra": )" +
      nested + R"(, "at": "2026-09-02T09:00:00Z", "kg": 60}], "y": )" + nested + "}";
  auto r = Parse(text);
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(r->events[0].kg, 60);
  EXPECT_TRUE(TextAndDomAgree(text));
}

// Nesting up to 64 levels is JSON the parser reads; deeper is not, as with a DOM of depth 64.
TEST(RecordTextTest, NestingDepthIsLimitedTo64) {
  auto nested = [](size_t depth) {  // the root object is level 1
    return R"({"patient": )" + std::string(kPatient) + R"(, "events": [], "deep": )" +
           std::string(depth - 1, '[') + std::string(depth - 1, ']') + "}";
  };
  EXPECT_TRUE(Parses(Parse(nested(64))));
  EXPECT_TRUE(IsMalformed(Parse(nested(65)), "record", "not valid JSON"));
  for (size_t depth : std::vector<size_t>{2, 32, 33, 63, 64, 65, 66}) {
    SCOPED_TRACE(depth);
    EXPECT_TRUE(TextAndDomAgree(nested(depth)));
  }
}

// A key repeated in one object: the last one counts, as in a Boost.JSON DOM.
TEST(RecordTextTest, RepeatedKeysKeepTheLast) {
  auto weight = [](std::string_view kg_pairs) {
    return WithRawEvent(std::string(R"({"type": "weight", "at": "2026-09-02T09:00:00Z", )") +
                        std::string(kg_pairs) + "}");
  };
  auto r = Parse(weight(R"("kg": -1, "kg": 60)"));
  ASSERT_TRUE(Parses(r));
  EXPECT_EQ(ByIndex(*r, 3)->kg, 60);
  EXPECT_TRUE(IsMalformed(Parse(weight(R"("kg": 60, "kg": -1)")), "events[3].kg", "(0, 500]"));
  EXPECT_TRUE(IsMalformed(Parse(weight(R"("kg": 60, "kg": null)")), "events[3].kg",
                          "required field is missing"));
  EXPECT_TRUE(IsMalformed(Parse(weight(R"("kg": 60, "kg": [1])")), "events[3].kg",
                          "must be a number, got an array"));

  const std::string patients =
      R"({"patient": {"id": "first"}, "events": [], "patient": )" + std::string(kPatient) + "}";
  auto last_patient = Parse(patients);
  ASSERT_TRUE(Parses(last_patient));
  EXPECT_EQ(last_patient->patient.id, "p-0001");
  const std::string events = R"({"patient": )" + std::string(kPatient) +
                             R"(, "events": [1, 2, 3], "events": [{"type": "weight",
      "at": "2026-09-02T09:00:00Z", "kg": 60}]})";
  auto last_events = Parse(events);
  ASSERT_TRUE(Parses(last_events));
  EXPECT_EQ(last_events->events.size(), 1u);
  // Repeated list fields and repeated keys of the patient, too.
  auto twice = Parse(WithRawEvent(R"({"type": "prescription", "id": "rx-2", "doses_mg": [999],
      "at": "2026-09-02T09:00:00Z", "product": "generic", "doses_mg": [10, 20], "days_supply": 30,
      "refills": 0, "id": "rx-3"})"));
  ASSERT_TRUE(Parses(twice));
  EXPECT_EQ(ByIndex(*twice, 3)->DailyMg(), 30);
  EXPECT_EQ(ByIndex(*twice, 3)->id, "rx-3");
  const std::string patient_keys =
      R"({"patient": {"id": "p-1", "birth_date": "2007-05-14", "jurisdiction": "XX",
          "category": "can_get_pregnant", "jurisdiction": "UK"}, "events": []})";
  auto uk = Parse(patient_keys);
  ASSERT_TRUE(Parses(uk));
  EXPECT_EQ(uk->patient.jurisdiction, Jurisdiction::kUK);
  for (const std::string& text : {weight(R"("kg": -1, "kg": 60)"),
                                  weight(R"("kg": 60, "kg": null)"), patients, events, patient_keys,
                                  std::string(R"({"patient": )") + std::string(kPatient) +
                                      R"(, "events": [], "patient": null})"}) {
    EXPECT_TRUE(TextAndDomAgree(text)) << text;
  }
}

// The whole text is JSON before any field is judged, and the patient before the events,
// wherever they are in the text; past the events limit, nothing else changes that.
TEST(RecordTextTest, ErrorsComeInTheOrderOfTheChecksNotOfTheText) {
  std::string many = EnrollmentEvents(10001);
  // Invalid JSON after 10,001 events: a JSON error, not the events limit.
  EXPECT_TRUE(
      IsMalformed(Parse(many.substr(0, many.size() - 1) + ", }"), "record", "not valid JSON"));
  // A broken patient after the events: the patient's error first.
  const std::string events_first =
      R"({"events": [{"type": "weight"}], "patient": {"id": "p-1", "birth_date": "1899-01-01",
          "jurisdiction": "US", "category": "can_get_pregnant"}})";
  EXPECT_TRUE(IsMalformed(Parse(events_first), "patient.birth_date", "1899"));
  // 10,001 events, then a patient that is no object: the patient's error.
  const std::string events_part = many.substr(many.find(R"("events")"));
  EXPECT_TRUE(
      IsMalformed(Parse("{" + events_part.substr(0, events_part.size() - 1) + R"(, "patient": 7})"),
                  "patient", "got a number"));
}

// Events are built in time order, but the error named is the first in the file's order, and
// within an event the first in the order its fields are checked.
TEST(RecordTextTest, FirstMalformedEventInFileOrderIsNamed) {
  json::array events;
  events.push_back(Object(R"({"type": "weight", "at": "2026-09-10T09:00:00Z", "kg": -1})"));
  events.push_back(Object(R"({"type": "weight", "at": "2026-09-01T09:00:00Z", "kg": -2})"));
  events.push_back(Object(R"({"type": "weigh", "at": "2026-08-01T09:00:00Z"})"));
  events.push_back(Object(R"({"type": "visit", "at": "not a time"})"));
  const std::string text = RecordText(Object(kPatient), events);
  EXPECT_TRUE(IsMalformed(Parse(text), "events[0].kg", "-1"));
  EXPECT_TRUE(TextAndDomAgree(text));
  events.erase(events.begin());
  EXPECT_TRUE(IsMalformed(Parse(RecordText(Object(kPatient), events)), "events[0].kg", "-2"));
  events.erase(events.begin());
  EXPECT_TRUE(IsMalformed(Parse(RecordText(Object(kPatient), events)), "events[0].type", "weigh"));
  // Within an event: the type before the id before the time.
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": 1, "id": 2, "at": 3})")), "events[3].type",
                          "got a number"));
  EXPECT_TRUE(IsMalformed(Parse(WithEvent(R"({"type": "visit", "id": 2, "at": 3})")),
                          "events[3].id", "got a number"));
}

// Events far out of order (past the insertion sort's budget) still come out in time order,
// ties in file order.
TEST(RecordTextTest, ManyEventsInReverseOrderAreSorted) {
  json::array events;
  for (int i = 0; i < 300; ++i) {
    const int day = 28 - (i / 2) % 28;  // pairs of equal times, descending
    const int month = 12 - i / 56;
    char at[32];
    std::snprintf(at, sizeof at, "2026-%02d-%02dT09:00:00Z", month, day);
    json::object e = Object(R"({"type": "weight", "kg": 60})");
    e["at"] = at;
    e["id"] = "w" + std::to_string(i);
    events.push_back(e);
  }
  auto r = Parse(RecordText(Object(kPatient), events));
  ASSERT_TRUE(Parses(r));
  ASSERT_EQ(r->events.size(), 300u);
  for (size_t i = 1; i < r->events.size(); ++i) {
    const Event& a = r->events[i - 1];
    const Event& b = r->events[i];
    ASSERT_TRUE(a.at < b.at || (a.at == b.at && a.index < b.index)) << i;
  }
}

// Times and dates in their usual spelling are read by a fast path; every spelling must give
// what ParseOffsetTime and ParseDateOrTime give, errors included.
TEST(RecordTextTest, TimesReadAsTheGeneralParserReadsThem) {
  std::vector<std::string> times;
  for (const char* date : {"1900-01-01", "1900-02-28", "1900-02-29", "1999-12-31", "2000-02-29",
                           "2024-02-29", "2026-02-29", "2026-04-31", "2026-12-31", "2100-02-28",
                           "2100-02-29", "2100-12-31", "2101-01-01", "1899-12-31", "2026-00-10",
                           "2026-13-01", "2026-01-00", "2026-1-01", "20x6-01-01"}) {
    for (const char* clock : {"T00:00:00", "T23:59:59", "T24:00:00", "T12:60:00", "T12:00:60",
                              "t12:00:00", "T12:00", "T12:00:00.5", "T1:00:00"}) {
      for (const char* offset : {"Z", "z", "+00:00", "-12:00", "+14:00", "+05:30", "-04:00",
                                 "+24:00", "+05:60", "+0530", "", "+5:30"}) {
        times.push_back(std::string(date) + clock + offset);
      }
    }
    times.push_back(date);
  }
  for (const std::string& at : times) {
    SCOPED_TRACE(at);
    json::object visit = Object(R"({"type": "visit", "counseled": true})");
    visit["at"] = at;
    auto r = Parse(WithEvent(visit));
    auto expected = ParseOffsetTime(at);
    if (expected.ok()) {
      ASSERT_TRUE(Parses(r));
      EXPECT_EQ(ByIndex(*r, 3)->at, expected->instant);
    } else {
      EXPECT_TRUE(IsMalformed(r, "events[3].at", expected.error().message));
    }
    json::object missed = Object(R"({"type": "missed_dose", "at": "2026-09-02T09:00:00Z"})");
    missed["date"] = at;
    auto m = Parse(WithEvent(missed));
    auto expected_date = ParseDateOrTime(at);
    if (expected_date.ok()) {
      ASSERT_TRUE(Parses(m));
      EXPECT_EQ(ByIndex(*m, 3)->date, *expected_date);
    } else {
      EXPECT_TRUE(IsMalformed(m, "events[3].date", expected_date.error().message));
    }
  }
  // Every day of the format's range, at an offset that moves it across midnight: records of
  // 10,000 visits, one a day.
  const LocalDate last = LocalDate::FromYmd(2100, 12, 31);
  for (LocalDate first = LocalDate::FromYmd(1900, 1, 1); first <= last; first = first + 10000) {
    std::string text = R"({"patient": )" + std::string(kPatient) + R"(, "events": [)";
    std::vector<Instant> expected;
    for (LocalDate d = first; d <= last && d - first < 10000; d = d + 1) {
      const std::string at = d.ToString() + "T23:30:00-02:00";
      auto t = ParseOffsetTime(at);
      ASSERT_TRUE(t.ok()) << at;
      expected.push_back(t->instant);
      if (d != first) text += ',';
      text += R"({"type": "visit", "counseled": true, "at": ")" + at + "\"}";
    }
    auto r = Parse(text + "]}");
    ASSERT_TRUE(Parses(r)) << first.ToString();
    ASSERT_EQ(r->events.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      ASSERT_EQ(r->events[i].at, expected[i]) << (first + static_cast<int32_t>(i)).ToString();
    }
  }
}

// What batch learns of a failure: whether the line was JSON, an object, and whose record.
TEST(RecordTextTest, FailureSaysWhereItFailedAndWhoseRecord) {
  using Stage = detail::RecordTextFailure::Stage;
  detail::RecordTextFailure failure;
  auto parse = [&failure](std::string_view text, size_t max_depth = 64) {
    return detail::ParseRecordText(text, ParseOptions{}, max_depth, &failure);
  };
  EXPECT_TRUE(IsMalformed(parse("{\"patient\": "), "record", "not valid JSON"));
  EXPECT_EQ(failure.stage, Stage::kNotJson);
  EXPECT_EQ(failure.json_error, "incomplete JSON");
  EXPECT_TRUE(IsMalformed(parse("[]"), "record", "got an array"));
  EXPECT_EQ(failure.stage, Stage::kNotAnObject);

  std::string record = WithEvent(R"({"type": "weight", "at": "2026-09-02T09:00:00Z", "kg": 0})");
  EXPECT_TRUE(IsMalformed(parse(record), "events[3].kg", "(0, 500]"));
  EXPECT_EQ(failure.stage, Stage::kMalformed);
  EXPECT_EQ(failure.patient_id, "p-0001");
  ASSERT_TRUE(Parses(parse(WithEvent(R"({"type": "weight", "at": "2026-09-02T09:00:00Z",
                                          "kg": 1})"))));
  EXPECT_EQ(failure.stage, Stage::kNone);

  // The id names the record even when the patient is what is malformed, as long as it is a
  // non-empty string of at most 4,000 bytes.
  json::object patient = Object(kPatient);
  patient["birth_date"] = "yesterday";
  patient["id"] = "p-\u00e9";
  EXPECT_FALSE(parse(WithPatient(patient)).ok());
  EXPECT_EQ(failure.patient_id, "p-\u00e9");
  for (json::value id : {json::value(""), json::value(7), json::value(nullptr),
                         json::value(Repeat("\U0001F600", 1001))}) {
    SCOPED_TRACE(json::serialize(id));
    patient["id"] = id;
    EXPECT_FALSE(parse(WithPatient(patient)).ok());
    EXPECT_EQ(failure.stage, Stage::kMalformed);
    EXPECT_FALSE(failure.patient_id.has_value());
  }
  patient["id"] = Repeat("\U0001F600", 1000);  // 4,000 bytes: too long for the record, usable
  EXPECT_TRUE(IsMalformed(parse(WithPatient(patient)), "patient.birth_date", "yesterday"));
  EXPECT_EQ(failure.patient_id, Repeat("\U0001F600", 1000));

  // The depth limit is the caller's.
  const std::string deep = R"({"patient": 1, "x": [[[[]]]]})";
  EXPECT_TRUE(IsMalformed(parse(deep, 4), "record", "not valid JSON"));
  EXPECT_TRUE(IsMalformed(parse(deep, 5), "patient", "got a number"));

  ParseOptions small;
  small.limits.max_bytes = 10;
  EXPECT_TRUE(IsMalformed(detail::ParseRecordText("{\"patient\": 1}", small, 64, &failure),
                          "record", "14 bytes"));
  EXPECT_EQ(failure.stage, Stage::kTooLarge);
}

TEST(RecordTextTest, MalformedFixturesAgreeWithTheDom) {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(ISOGUARD_TEST_DATA_DIR) / "data" / "malformed";
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().filename().string());
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_TRUE(TextAndDomAgree(text.str()));
  }
}

}  // namespace
}  // namespace isoguard
