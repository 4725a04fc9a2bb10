// The evaluation of a patient record at a time: which program applies, whether the considered
// prescription may be dispensed now (with every unmet requirement), alerts, what is due and the
// dose. Implements "How an authorization is decided", "How alerts are raised", "When things are
// due" and the dose rules of docs/record-format.md exactly.
//
// Pure: no I/O, no clock. Thread-safe: Evaluate only reads the rulebook and the record.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "domain/record.h"
#include "rules/rulebook.h"

namespace isoguard {

struct EvaluateOptions {
  Instant at{};                             // T
  std::optional<std::string> program_id;    // --program
  std::optional<std::string> prescription;  // --prescription
};

// Codes are views of static strings or of the rulebook, which outlives every evaluation.
struct Reason {
  std::string_view code;  // "PREGNANCY_TEST_WINDOW_EXPIRED"
  std::string message;
};

struct Alert {
  std::string_view code;
  Severity severity = Severity::kInfo;
  std::string message;
  std::string_view interaction_class;  // INTERACTION only
};

struct DueItem {
  std::string_view code;
  LocalDate due_by;
  std::optional<LocalDate> not_before;
};

enum class TreatmentState : uint8_t { kNotStarted, kInTreatment, kEnded };
std::string_view ToString(TreatmentState s);

// A dispense of the current course and the pregnancy test that qualified it.
struct CourseDispense {
  std::string prescription;
  LocalDate date;
  const Event* qualifying_test = nullptr;  // can get pregnant only
};

struct Authorization {
  std::optional<std::string> prescription;
  bool authorized = false;
  std::optional<Instant> dispense_by;
  std::vector<Reason> reasons;
  const Event* pregnancy_test = nullptr;  // the test C the decision rests on, when there is one
};

struct DoseSummary {
  std::optional<double> daily_mg;
  std::optional<double> mg_per_kg_day;
  double cumulative_mg = 0;
  double cumulative_mg_per_kg = 0;
  std::array<double, 2> target_mg_per_kg{};
  std::optional<LocalDate> projected_target_date;
};

struct Evaluation {
  const Program* program = nullptr;
  Zone zone;  // the zone of day arithmetic
  Category category = Category::kCanGetPregnant;
  TreatmentState state = TreatmentState::kNotStarted;
  std::vector<CourseDispense> course_dispenses;
  Authorization authorization;
  std::vector<Alert> alerts;
  std::vector<DueItem> due;
  DoseSummary dose;
};

// Errors: kNotFound for an unknown --program or patient time zone.
Result<Evaluation> Evaluate(const Rulebook& rulebook, const Record& record,
                            const EvaluateOptions& options);

// The contract's JSON output. `patient_id` adds "patient" (batch mode).
std::string EvaluationToJson(const Evaluation& evaluation, const Record& record,
                             bool include_patient_id);

}  // namespace isoguard
