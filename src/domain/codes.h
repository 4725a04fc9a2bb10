// The vocabulary of the record format (../docs/record-format.md): every code value a record
// may carry, with its spelling. Clinical parameters attached to these codes (classes,
// strengths, thresholds) live in programs/ and knowledge/, never here.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace isoguard {

enum class Jurisdiction : uint8_t { kUS, kEU, kUK };
enum class Category : uint8_t { kCanGetPregnant, kCannotGetPregnant };

enum class EventType : uint8_t {
  kEnrollment,
  kCategoryChange,
  kWeight,
  kVisit,
  kContraception,
  kComprehension,
  kPregnancyTest,
  kRiskAcknowledgement,
  kAssessment,
  kSecondPrescriber,
  kPrescription,
  kDispense,
  kLab,
  kPhq9,
  kMedication,
  kAdverseEvent,
  kMissedDose,
  kTreatmentEnd,
  kPrescriptionCancel,
  kEnteredInError,
  kAuthorization,
  kAuthorizationReversal,
};
inline constexpr int kEventTypeCount = 22;

enum class TestResult : uint8_t { kNegative, kPositive, kInvalid };
enum class TestSetting : uint8_t { kLab, kOffice, kHome };
enum class Specimen : uint8_t { kUrine, kSerum };
enum class AssessmentKind : uint8_t { kMentalHealth, kSexualFunction };
enum class Product : uint8_t { kGeneric, kAbsorica, kAbsoricaLd };
inline constexpr int kProductCount = 3;
enum class LabTest : uint8_t { kALT, kAST, kTG, kTC, kHDL, kLDL };
inline constexpr int kLabTestCount = 6;
enum class LabUnit : uint8_t { kUnitsPerLiter, kMgPerDl, kMmolPerL };
enum class MedicationAction : uint8_t { kStart, kStop };

// Contraception method codes (clinical-rules §3). Their classes are per program, in programs/.
enum class ContraceptionMethod : uint8_t {
  kTubalSterilization,
  kPartnerVasectomy,
  kIudCopper,
  kIudHormonal,
  kImplant,
  kInjection,
  kCombinedOralContraceptive,
  kPatch,
  kVaginalRing,
  kMaleCondom,
  kDiaphragm,
  kCervicalCap,
  kVaginalSponge,
  kProgestinOnlyPill,
  kWithdrawal,
  kFertilityAwareness,
  kSpermicideAlone,
  kEmergencyContraception,
  kAbstinence,
};
inline constexpr int kContraceptionMethodCount = 19;
using MethodSet = uint32_t;  // bit i = ContraceptionMethod i
constexpr MethodSet MethodBit(ContraceptionMethod m) { return MethodSet{1} << static_cast<int>(m); }

// Test settings as a set: bit i = TestSetting i.
using SettingSet = uint8_t;
constexpr SettingSet SettingBit(TestSetting s) {
  return static_cast<SettingSet>(1u << static_cast<unsigned>(s));
}

// Spelling <-> enum. Parse returns nullopt for an unknown spelling.
std::string_view ToString(Jurisdiction v);
std::string_view ToString(Category v);
std::string_view ToString(EventType v);
std::string_view ToString(TestResult v);
std::string_view ToString(TestSetting v);
std::string_view ToString(Specimen v);
std::string_view ToString(AssessmentKind v);
std::string_view ToString(Product v);
std::string_view ToString(LabTest v);
std::string_view ToString(LabUnit v);
std::string_view ToString(MedicationAction v);
std::string_view ToString(ContraceptionMethod v);

std::optional<Jurisdiction> ParseJurisdiction(std::string_view s);
std::optional<Category> ParseCategory(std::string_view s);
std::optional<EventType> ParseEventType(std::string_view s);
std::optional<TestResult> ParseTestResult(std::string_view s);
std::optional<TestSetting> ParseTestSetting(std::string_view s);
std::optional<Specimen> ParseSpecimen(std::string_view s);
std::optional<AssessmentKind> ParseAssessmentKind(std::string_view s);
std::optional<Product> ParseProduct(std::string_view s);
std::optional<LabTest> ParseLabTest(std::string_view s);
std::optional<LabUnit> ParseLabUnit(std::string_view s);
std::optional<MedicationAction> ParseMedicationAction(std::string_view s);
std::optional<ContraceptionMethod> ParseContraceptionMethod(std::string_view s);

}  // namespace isoguard
