// The rulebook: every safety program (programs/*.toml) and the clinical knowledge
// (knowledge/*.toml) the engine applies, as plain data. Nothing clinical is a literal in the
// engine's code; it reads these structures.
//
// A Rulebook is loaded once (rulebook_loader.h) and is immutable afterwards: share it freely
// between threads.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "core/time.h"
#include "domain/codes.h"

namespace isoguard {

// How a program judges an attested set of contraception methods.
enum class ContraceptionRule : uint8_t {
  // US iPLEDGE: two forms used together, at least one primary; or abstinence.
  kTwoFormsOnePrimary,
  // EU/UK PPP: one user-independent method; or two user-dependent methods of which at least
  // one is a barrier; or abstinence.
  kOneIndependentOrTwoDependentWithBarrier,
};

// The class of a contraception method under one program.
enum class MethodClass : uint8_t {
  kNotAcceptable,
  kPrimary,          // US
  kSecondary,        // US
  kUserIndependent,  // EU/UK
  kUserDependent,    // EU/UK
  kBarrier,          // EU/UK: user-dependent and a barrier
  kAbstinence,       // acceptable alone under every program
};

// How pregnancy tests qualify prescriptions.
enum class TestScheme : uint8_t {
  // US: screening + confirmation before the first prescription, a test before each later one;
  // each test opens a dispensing window counted from its collection date.
  kScreeningConfirmationWindow,
  // EU/UK: a medically supervised test on the prescription's date or shortly before it.
  kBeforePrescriptionDate,
};

// When counselling (a visit with counseled: true) is required.
enum class CounselingRule : uint8_t {
  kNone,
  kSincePreviousDispense,  // monthly; a first prescription accepts one at any time
  kAtAnyTime,              // once (enrollment counselling)
};

struct ProgramTests {
  TestScheme scheme = TestScheme::kScreeningConfirmationWindow;
  SettingSet screening_settings = 0;     // before treatment: the screening test
  SettingSet confirmation_settings = 0;  // before treatment: the confirmation test (C)
  SettingSet during_settings = 0;        // tests qualifying later prescriptions
  int32_t confirmation_min_days_after_screening = 0;
  int32_t window_days = 0;  // day 1 = collection date; closes at the end of day N
  bool lockout = false;
  int32_t lockout_min_days = 0;
  int32_t days_before_prescription = 0;  // EU/UK: test on the prescription date or N days before
};

struct ProgramContraception {
  ContraceptionRule rule = ContraceptionRule::kTwoFormsOnePrimary;
  std::array<MethodClass, kContraceptionMethodCount> method_class{};
  int32_t lead_in_days = 0;  // sufficient methods in use at least this long at a first dispense
};

struct ProgramSupply {
  std::optional<int32_t> max_days_supply_can_get_pregnant;
  std::optional<int32_t> max_days_supply_cannot_get_pregnant;  // nullopt: no maximum
  int32_t max_refills = 0;
};

struct ProgramMonthly {
  bool comprehension_can_get_pregnant = false;
  CounselingRule counseling_can_get_pregnant = CounselingRule::kNone;
  CounselingRule counseling_cannot_get_pregnant = CounselingRule::kNone;
};

struct ProgramWindows {
  // US, cannot get pregnant: day 1 = the latest visit's date; closes at the end of day N.
  std::optional<int32_t> visit_window_days_cannot_get_pregnant;
  // EU/UK: day 1 = the prescription's date.
  std::optional<int32_t> prescription_window_days_can_get_pregnant;
  std::optional<int32_t> prescription_window_days_cannot_get_pregnant;
};

struct ProgramForms {
  bool risk_acknowledgement_can_get_pregnant = false;
  bool risk_acknowledgement_cannot_get_pregnant = false;
  int32_t risk_acknowledgement_valid_months = 12;
  std::vector<AssessmentKind> baseline_assessments;    // UK: before the first prescription
  std::optional<int32_t> second_prescriber_under_age;  // UK 2023: under 18
};

// Due-list parameters ("When things are due").
struct ProgramDue {
  bool pregnancy_test_monthly = false;  // can get pregnant, in treatment
  int32_t monthly_interval_days = 30;   // previous dispense + N
  int32_t confirmation_after_screening_days = 19;
  int32_t labs_follow_up_after_first_dispense_days = 0;  // window start (28)
  int32_t labs_follow_up_due_days = 0;                   // due by first dispense + N (56)
  int32_t phq9_interval_days = 30;
  int32_t post_treatment_test_days = 30;
  int32_t contraception_after_last_dose_days = 30;
  int32_t no_blood_donation_days = 30;
};

struct Program {
  std::string id;
  std::string title;
  Jurisdiction jurisdiction = Jurisdiction::kUS;
  LocalDate in_force_from;
  std::optional<LocalDate> in_force_until;  // inclusive
  std::string time_zone;                    // IANA name
  Zone zone;
  std::string source_file;

  ProgramSupply supply;
  ProgramTests tests;
  ProgramContraception contraception;
  ProgramMonthly monthly;
  ProgramWindows windows;
  ProgramForms forms;
  ProgramDue due;
};

// knowledge/products.toml
struct ProductInfo {
  Product product = Product::kGeneric;
  std::string name;
  std::vector<double> strengths_mg;  // ascending
  double usual_min_mg_per_kg_day = 0;
  double usual_max_mg_per_kg_day = 0;
  double max_mg_per_kg_day = 0;
  bool take_with_food = true;
  std::string substitution_group;  // products of different groups are not mg-for-mg substitutable
};

// knowledge/products.toml [treatment]
struct TreatmentKnowledge {
  int32_t minimum_age_years = 0;
  int32_t second_course_min_months = 0;
  std::array<double, 2> default_target_mg_per_kg{};  // [low, high]
  int32_t baseline_labs_lookback_days = 0;
  int32_t serious_adverse_event_lookback_days = 0;
};

enum class Comparison : uint8_t { kAtLeast, kAbove };

struct Threshold {
  double value = 0;
  Comparison compare = Comparison::kAtLeast;
  bool Exceeded(double x) const { return compare == Comparison::kAtLeast ? x >= value : x > value; }
};

// knowledge/labs.toml: one alert family (TG; TC; ALT+AST judged together).
struct LabFamily {
  std::string name;                     // "triglycerides"
  std::vector<LabTest> tests;           // TG; or ALT and AST
  bool relative_to_uln = false;         // thresholds are multiples of the ULN
  double default_uln = 0;               // U/L, when a result carries none
  std::optional<double> mmol_to_mg_dl;  // conversion factor for mmol/L results
  Threshold warning;
  Threshold critical;
  std::string warning_code;    // "TG_HIGH"
  std::string critical_code;   // "TG_CRITICAL"
  std::string warning_advice;  // what to do, shown in the alert's message
  std::string critical_advice;
};

// knowledge/mood.toml
struct MoodKnowledge {
  int32_t moderate_min_total = 0;  // PHQ9_MODERATE from this total...
  int32_t severe_min_total = 0;    // ...PHQ9_SEVERE from this total
  int32_t self_harm_item = 9;      // 1-based item whose score > 0 raises SUICIDAL_IDEATION
};

enum class Severity : uint8_t { kInfo, kWarning, kCritical };
std::string_view ToString(Severity s);

// knowledge/interactions.toml: one interacting class.
struct InteractionClass {
  std::string code;  // "tetracycline"
  std::string title;
  Severity severity = Severity::kInfo;
  std::string why;
  std::vector<std::string> atc_prefixes;  // upper-case
  std::vector<std::string> names;         // normalized (NormalizeMedicationName), whole words
};

// knowledge/safety.toml: what the service does when a safety event cannot wait.
struct CrisisResource {
  Jurisdiction jurisdiction = Jurisdiction::kUS;
  std::string service;  // "988 Suicide & Crisis Lifeline"
  std::string phone;    // "988"
  std::string how;      // a sentence the patient can act on
};

struct SeriousEffect {
  std::string code;  // "liver"
  std::string title;
  std::vector<std::string> terms;  // normalized (NormalizeMedicationName), whole words
};

struct SafetyKnowledge {
  double storage_min_celsius = 0;
  double storage_max_celsius = 0;
  std::vector<CrisisResource> crisis;  // one per jurisdiction
  std::vector<SeriousEffect> serious_effects;

  const CrisisResource* FindCrisis(Jurisdiction j) const;
  // The serious effect a reported adverse-event term names, if any.
  const SeriousEffect* MatchSeriousEffect(std::string_view term) const;
};

struct Knowledge {
  std::array<ProductInfo, kProductCount> products{};
  TreatmentKnowledge treatment;
  std::vector<LabFamily> lab_families;
  MoodKnowledge mood;
  std::vector<InteractionClass> interactions;
  SafetyKnowledge safety;

  const ProductInfo& product(Product p) const { return products[static_cast<size_t>(p)]; }
};

struct Rulebook {
  std::vector<Program> programs;  // sorted by jurisdiction, then in_force_from
  Knowledge knowledge;

  const Program* FindProgram(std::string_view id) const;
};

}  // namespace isoguard
