// The patient record: the patient and the time-ordered list of events, as parsed from the
// record format (docs/record-format.md). Plain values; immutable once parsed.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/time.h"
#include "domain/codes.h"

namespace isoguard {

// One event. A flat struct: each type uses the fields its row of the format names, the rest
// keep their defaults. `at` is the event's time (a pregnancy test's `collected_at`).
struct Event {
  EventType type = EventType::kEnrollment;
  Instant at{};
  uint32_t index = 0;  // position in the record's "events" array, for messages
  std::string id;      // optional in records; unique within a record when present

  // enrollment.program (optional), prescription.id, dispense/prescription_cancel.prescription,
  // entered_in_error.target, authorization.prescription / authorization_reversal.authorization.
  std::string program;
  std::string ref;
  std::string ref2;  // authorization.authorization

  Category category = Category::kCanGetPregnant;  // category_change
  double kg = 0;                                  // weight
  bool flag = false;  // visit.counseled, comprehension.passed, adverse_event.serious

  MethodSet methods = 0;  // contraception
  LocalDate date;         // contraception.since, missed_dose.date, treatment_end.last_dose

  TestResult result = TestResult::kNegative;  // pregnancy_test
  TestSetting setting = TestSetting::kLab;
  Specimen specimen = Specimen::kUrine;

  AssessmentKind assessment = AssessmentKind::kMentalHealth;

  Product product = Product::kGeneric;  // prescription
  std::array<double, 4> doses_mg{};
  uint8_t dose_count = 0;
  int32_t days_supply = 0;  // prescription; dispense (0 = the prescription's)
  int32_t refills = 0;

  LabTest test = LabTest::kALT;  // lab
  double value = 0;
  LabUnit unit = LabUnit::kUnitsPerLiter;
  double uln = 0;  // 0 = not given

  std::array<uint8_t, 9> phq9_items{};  // phq9

  std::string name;             // medication.name as written; adverse_event.term
  std::string name_normalized;  // medication name, NormalizeMedicationName
  std::string atc;              // medication.atc, NormalizeAtc; empty when absent
  MedicationAction action = MedicationAction::kStart;

  Instant dispense_by{};  // authorization

  double DailyMg() const {
    double sum = 0;
    for (uint8_t i = 0; i < dose_count; ++i) sum += doses_mg[i];
    return sum;
  }
};

struct Patient {
  std::string id;
  LocalDate birth_date;
  Jurisdiction jurisdiction = Jurisdiction::kUS;
  Category category = Category::kCanGetPregnant;
  std::string time_zone;  // optional IANA override; empty when absent
  std::optional<std::array<double, 2>> target_mg_per_kg;
};

struct Record {
  Patient patient;
  std::vector<Event> events;  // ordered by `at`; ties keep the input's order
};

}  // namespace isoguard
