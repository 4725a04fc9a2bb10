#include "domain/codes.h"

namespace isoguard {
namespace {

template <typename E, size_t N>
std::string_view Spell(const std::array<std::string_view, N>& names, E v) {
  auto i = static_cast<size_t>(v);
  return i < N ? names[i] : std::string_view("?");
}

template <typename E, size_t N>
std::optional<E> Lookup(const std::array<std::string_view, N>& names, std::string_view s) {
  if (s.empty()) return std::nullopt;
  for (size_t i = 0; i < N; ++i) {
    // Length and first letter first: most candidates fail there without a memcmp.
    if (names[i].size() == s.size() && names[i][0] == s[0] && names[i] == s) {
      return static_cast<E>(i);
    }
  }
  return std::nullopt;
}

constexpr std::array<std::string_view, 3> kJurisdictions = {"US", "EU", "UK"};
constexpr std::array<std::string_view, 2> kCategories = {"can_get_pregnant", "cannot_get_pregnant"};
constexpr std::array<std::string_view, kEventTypeCount> kEventTypes = {"enrollment",
                                                                       "category_change",
                                                                       "weight",
                                                                       "visit",
                                                                       "contraception",
                                                                       "comprehension",
                                                                       "pregnancy_test",
                                                                       "risk_acknowledgement",
                                                                       "assessment",
                                                                       "second_prescriber",
                                                                       "prescription",
                                                                       "dispense",
                                                                       "lab",
                                                                       "phq9",
                                                                       "medication",
                                                                       "adverse_event",
                                                                       "missed_dose",
                                                                       "treatment_end",
                                                                       "prescription_cancel",
                                                                       "entered_in_error",
                                                                       "authorization",
                                                                       "authorization_reversal"};
constexpr std::array<std::string_view, 3> kTestResults = {"negative", "positive", "invalid"};
constexpr std::array<std::string_view, 3> kTestSettings = {"lab", "office", "home"};
constexpr std::array<std::string_view, 2> kSpecimens = {"urine", "serum"};
constexpr std::array<std::string_view, 2> kAssessmentKinds = {"mental_health", "sexual_function"};
constexpr std::array<std::string_view, kProductCount> kProducts = {"generic", "absorica",
                                                                   "absorica_ld"};
constexpr std::array<std::string_view, kLabTestCount> kLabTests = {"ALT", "AST", "TG",
                                                                   "TC",  "HDL", "LDL"};
constexpr std::array<std::string_view, 3> kLabUnits = {"U/L", "mg/dL", "mmol/L"};
constexpr std::array<std::string_view, 2> kMedicationActions = {"start", "stop"};
constexpr std::array<std::string_view, kContraceptionMethodCount> kMethods = {
    "tubal_sterilization",
    "partner_vasectomy",
    "iud_copper",
    "iud_hormonal",
    "implant",
    "injection",
    "combined_oral_contraceptive",
    "patch",
    "vaginal_ring",
    "male_condom",
    "diaphragm",
    "cervical_cap",
    "vaginal_sponge",
    "progestin_only_pill",
    "withdrawal",
    "fertility_awareness",
    "spermicide_alone",
    "emergency_contraception",
    "abstinence"};

}  // namespace

std::string_view ToString(Jurisdiction v) { return Spell(kJurisdictions, v); }
std::string_view ToString(Category v) { return Spell(kCategories, v); }
std::string_view ToString(EventType v) { return Spell(kEventTypes, v); }
std::string_view ToString(TestResult v) { return Spell(kTestResults, v); }
std::string_view ToString(TestSetting v) { return Spell(kTestSettings, v); }
std::string_view ToString(Specimen v) { return Spell(kSpecimens, v); }
std::string_view ToString(AssessmentKind v) { return Spell(kAssessmentKinds, v); }
std::string_view ToString(Product v) { return Spell(kProducts, v); }
std::string_view ToString(LabTest v) { return Spell(kLabTests, v); }
std::string_view ToString(LabUnit v) { return Spell(kLabUnits, v); }
std::string_view ToString(MedicationAction v) { return Spell(kMedicationActions, v); }
std::string_view ToString(ContraceptionMethod v) { return Spell(kMethods, v); }

std::optional<Jurisdiction> ParseJurisdiction(std::string_view s) {
  return Lookup<Jurisdiction>(kJurisdictions, s);
}
std::optional<Category> ParseCategory(std::string_view s) {
  return Lookup<Category>(kCategories, s);
}
std::optional<EventType> ParseEventType(std::string_view s) {
  return Lookup<EventType>(kEventTypes, s);
}
std::optional<TestResult> ParseTestResult(std::string_view s) {
  return Lookup<TestResult>(kTestResults, s);
}
std::optional<TestSetting> ParseTestSetting(std::string_view s) {
  return Lookup<TestSetting>(kTestSettings, s);
}
std::optional<Specimen> ParseSpecimen(std::string_view s) {
  return Lookup<Specimen>(kSpecimens, s);
}
std::optional<AssessmentKind> ParseAssessmentKind(std::string_view s) {
  return Lookup<AssessmentKind>(kAssessmentKinds, s);
}
std::optional<Product> ParseProduct(std::string_view s) { return Lookup<Product>(kProducts, s); }
std::optional<LabTest> ParseLabTest(std::string_view s) { return Lookup<LabTest>(kLabTests, s); }
std::optional<LabUnit> ParseLabUnit(std::string_view s) { return Lookup<LabUnit>(kLabUnits, s); }
std::optional<MedicationAction> ParseMedicationAction(std::string_view s) {
  return Lookup<MedicationAction>(kMedicationActions, s);
}
std::optional<ContraceptionMethod> ParseContraceptionMethod(std::string_view s) {
  return Lookup<ContraceptionMethod>(kMethods, s);
}

}  // namespace isoguard
