// The rulebook loader: the shipped programs/ and knowledge/ load and say what clinical-rules.md
// and the record contract say; broken files are rejected with an error that names the file and
// the key and says what is wrong.
#include "rules/rulebook_loader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include "core/text.h"

namespace isoguard {
namespace {

namespace fs = std::filesystem;

const std::string kSourceDir = ISOGUARD_SOURCE_DIR;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// Replaces the one occurrence of `from`; a test whose edit does not apply fails loudly rather
// than testing the unedited file.
std::string ReplaceOnce(std::string text, std::string_view from, std::string_view to) {
  size_t pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << "not found: " << from;
  if (pos == std::string::npos) return text;
  EXPECT_EQ(text.find(from, pos + 1), std::string::npos) << "ambiguous: " << from;
  text.replace(pos, from.size(), to);
  return text;
}

const Program& ProgramById(const Rulebook& book, std::string_view id) {
  const Program* p = book.FindProgram(id);
  EXPECT_NE(p, nullptr) << id;
  // A placeholder so that a missing program fails its checks instead of crashing the binary.
  static const Program& none = *new Program();
  return p == nullptr ? none : *p;
}

constexpr SettingSet kLab = SettingBit(TestSetting::kLab);
constexpr SettingSet kOffice = SettingBit(TestSetting::kOffice);
constexpr SettingSet kHome = SettingBit(TestSetting::kHome);

MethodClass ClassOf(const Program& p, ContraceptionMethod m) {
  return p.contraception.method_class[static_cast<size_t>(m)];
}

class ShippedRulebookTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    Result<Rulebook> loaded = LoadRulebook(kSourceDir);
    if (!loaded.ok()) {
      load_error_ = new std::string(loaded.error().ToString());
      return;
    }
    book_ = new Rulebook(std::move(loaded).value());
  }
  static void TearDownTestSuite() {
    delete book_;
    delete load_error_;
    book_ = nullptr;
    load_error_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(book_, nullptr) << "the shipped rulebook does not load: "
                              << (load_error_ ? *load_error_ : "");
  }

  static const Rulebook& book() { return *book_; }

  // The classes whose names or ATC prefixes match a recorded medication, as the contract
  // says: by ATC prefix, or by a name as whole words of the normalized medication name.
  static std::vector<std::string> ClassesMatching(std::string_view name,
                                                  std::string_view atc = {}) {
    std::vector<std::string> out;
    std::string normalized = NormalizeMedicationName(name);
    std::string code = NormalizeAtc(atc);
    for (const InteractionClass& c : book().knowledge.interactions) {
      bool match = false;
      for (const std::string& prefix : c.atc_prefixes) {
        if (!code.empty() && code.starts_with(prefix)) match = true;
      }
      for (const std::string& n : c.names) {
        if (ContainsWholeWords(normalized, n)) match = true;
      }
      if (match) out.push_back(c.code);
    }
    return out;
  }

 private:
  static inline Rulebook* book_ = nullptr;
  static inline std::string* load_error_ = nullptr;
};

TEST_F(ShippedRulebookTest, ProgramsAreSortedByJurisdictionThenStart) {
  std::vector<std::string> ids;
  for (const Program& p : book().programs) ids.push_back(p.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"us-ipledge-2023", "us-ipledge-2026", "eu-ppp-2018",
                                           "uk-mhra-2023", "uk-mhra-2026"}));
  EXPECT_EQ(book().FindProgram("no-such-program"), nullptr);
  EXPECT_EQ(book().FindProgram("eu-ppp-2018")->source_file, "programs/eu-ppp-2018.toml");
}

TEST_F(ShippedRulebookTest, UsIpledge2023) {
  const Program& p = ProgramById(book(), "us-ipledge-2023");
  EXPECT_EQ(p.jurisdiction, Jurisdiction::kUS);
  EXPECT_EQ(p.in_force_from, LocalDate::FromYmd(2023, 10, 3));
  ASSERT_TRUE(p.in_force_until.has_value());
  EXPECT_EQ(*p.in_force_until, LocalDate::FromYmd(2026, 8, 7));
  EXPECT_EQ(p.time_zone, "America/New_York");
  EXPECT_EQ(p.zone.name(), "America/New_York");

  EXPECT_EQ(p.supply.max_days_supply_can_get_pregnant, 30);
  EXPECT_EQ(p.supply.max_days_supply_cannot_get_pregnant, 30);
  EXPECT_EQ(p.supply.max_refills, 0);

  EXPECT_EQ(p.tests.scheme, TestScheme::kScreeningConfirmationWindow);
  EXPECT_EQ(p.tests.screening_settings, kLab | kOffice);
  EXPECT_EQ(p.tests.confirmation_settings, kLab);
  EXPECT_EQ(p.tests.during_settings, kLab);
  EXPECT_EQ(p.tests.confirmation_min_days_after_screening, 19);
  EXPECT_EQ(p.tests.window_days, 7);
  EXPECT_TRUE(p.tests.lockout);
  EXPECT_EQ(p.tests.lockout_min_days, 19);

  EXPECT_EQ(p.contraception.rule, ContraceptionRule::kTwoFormsOnePrimary);
  EXPECT_EQ(p.contraception.lead_in_days, 30);
  EXPECT_EQ(ClassOf(p, ContraceptionMethod::kIudCopper), MethodClass::kPrimary);
  EXPECT_EQ(ClassOf(p, ContraceptionMethod::kInjection), MethodClass::kPrimary);
  EXPECT_EQ(ClassOf(p, ContraceptionMethod::kMaleCondom), MethodClass::kSecondary);
  EXPECT_EQ(ClassOf(p, ContraceptionMethod::kProgestinOnlyPill), MethodClass::kNotAcceptable);
  EXPECT_EQ(ClassOf(p, ContraceptionMethod::kEmergencyContraception), MethodClass::kNotAcceptable);
  EXPECT_EQ(ClassOf(p, ContraceptionMethod::kAbstinence), MethodClass::kAbstinence);

  EXPECT_TRUE(p.monthly.comprehension_can_get_pregnant);
  EXPECT_EQ(p.monthly.counseling_can_get_pregnant, CounselingRule::kSincePreviousDispense);
  EXPECT_EQ(p.monthly.counseling_cannot_get_pregnant, CounselingRule::kSincePreviousDispense);
  EXPECT_EQ(p.windows.visit_window_days_cannot_get_pregnant, 30);
  EXPECT_FALSE(p.windows.prescription_window_days_can_get_pregnant.has_value());
  EXPECT_FALSE(p.windows.prescription_window_days_cannot_get_pregnant.has_value());

  EXPECT_FALSE(p.forms.risk_acknowledgement_can_get_pregnant);
  EXPECT_FALSE(p.forms.risk_acknowledgement_cannot_get_pregnant);
  EXPECT_TRUE(p.forms.baseline_assessments.empty());
  EXPECT_FALSE(p.forms.second_prescriber_under_age.has_value());

  EXPECT_TRUE(p.due.pregnancy_test_monthly);
  EXPECT_EQ(p.due.monthly_interval_days, 30);
  EXPECT_EQ(p.due.confirmation_after_screening_days, 19);
  EXPECT_EQ(p.due.labs_follow_up_after_first_dispense_days, 28);
  EXPECT_EQ(p.due.labs_follow_up_due_days, 56);
  EXPECT_EQ(p.due.phq9_interval_days, 30);
  EXPECT_EQ(p.due.post_treatment_test_days, 30);
  EXPECT_EQ(p.due.contraception_after_last_dose_days, 30);
  EXPECT_EQ(p.due.no_blood_donation_days, 30);
}

TEST_F(ShippedRulebookTest, UsIpledge2026DiffersFrom2023AsSpecified) {
  const Program& p = ProgramById(book(), "us-ipledge-2026");
  const Program& before = ProgramById(book(), "us-ipledge-2023");
  EXPECT_EQ(p.in_force_from, LocalDate::FromYmd(2026, 8, 8));
  EXPECT_FALSE(p.in_force_until.has_value());
  EXPECT_EQ(p.time_zone, "America/New_York");
  // The CLIA-lab requirement is gone; home tests count during treatment; no lockout.
  EXPECT_EQ(p.tests.screening_settings, kLab | kOffice);
  EXPECT_EQ(p.tests.confirmation_settings, kLab | kOffice);
  EXPECT_EQ(p.tests.during_settings, kLab | kOffice | kHome);
  EXPECT_FALSE(p.tests.lockout);
  EXPECT_EQ(p.tests.window_days, 7);
  EXPECT_EQ(p.tests.confirmation_min_days_after_screening, 19);
  EXPECT_EQ(p.monthly.counseling_cannot_get_pregnant, CounselingRule::kAtAnyTime);
  EXPECT_EQ(p.monthly.counseling_can_get_pregnant, CounselingRule::kSincePreviousDispense);
  // Kept although unconfirmed (clinical-rules §5).
  EXPECT_EQ(p.windows.visit_window_days_cannot_get_pregnant, 30);
  // The rest is as in 2023.
  EXPECT_EQ(p.supply.max_days_supply_cannot_get_pregnant, 30);
  EXPECT_EQ(p.contraception.method_class, before.contraception.method_class);
  EXPECT_EQ(p.due.labs_follow_up_due_days, before.due.labs_follow_up_due_days);
}

TEST_F(ShippedRulebookTest, EuPpp2018) {
  const Program& p = ProgramById(book(), "eu-ppp-2018");
  EXPECT_EQ(p.jurisdiction, Jurisdiction::kEU);
  EXPECT_EQ(p.in_force_from, LocalDate::FromYmd(2018, 3, 22));
  EXPECT_FALSE(p.in_force_until.has_value());
  EXPECT_EQ(p.zone.name(), "Europe/Brussels");
  EXPECT_EQ(p.supply.max_days_supply_can_get_pregnant, 30);
  EXPECT_FALSE(p.supply.max_days_supply_cannot_get_pregnant.has_value());
  EXPECT_EQ(p.supply.max_refills, 0);
  EXPECT_EQ(p.tests.scheme, TestScheme::kBeforePrescriptionDate);
  EXPECT_EQ(p.tests.during_settings, kLab | kOffice);
  EXPECT_EQ(p.tests.days_before_prescription, 3);
  EXPECT_FALSE(p.tests.lockout);
  EXPECT_EQ(p.contraception.rule, ContraceptionRule::kOneIndependentOrTwoDependentWithBarrier);
  EXPECT_EQ(ClassOf(p, ContraceptionMethod::kImplant), MethodClass::kUserIndependent);
  EXPECT_EQ(ClassOf(p, ContraceptionMethod::kInjection), MethodClass::kUserDependent);
  EXPECT_EQ(ClassOf(p, ContraceptionMethod::kProgestinOnlyPill), MethodClass::kUserDependent);
  EXPECT_EQ(ClassOf(p, ContraceptionMethod::kDiaphragm), MethodClass::kBarrier);
  EXPECT_EQ(ClassOf(p, ContraceptionMethod::kSpermicideAlone), MethodClass::kNotAcceptable);
  EXPECT_FALSE(p.monthly.comprehension_can_get_pregnant);
  EXPECT_EQ(p.monthly.counseling_can_get_pregnant, CounselingRule::kNone);
  EXPECT_EQ(p.monthly.counseling_cannot_get_pregnant, CounselingRule::kNone);
  EXPECT_FALSE(p.windows.visit_window_days_cannot_get_pregnant.has_value());
  EXPECT_EQ(p.windows.prescription_window_days_can_get_pregnant, 7);
  EXPECT_EQ(p.windows.prescription_window_days_cannot_get_pregnant, 180);
  EXPECT_TRUE(p.forms.risk_acknowledgement_can_get_pregnant);
  EXPECT_FALSE(p.forms.risk_acknowledgement_cannot_get_pregnant);
  EXPECT_EQ(p.forms.risk_acknowledgement_valid_months, 12);
  EXPECT_FALSE(p.forms.second_prescriber_under_age.has_value());
  EXPECT_EQ(p.due.monthly_interval_days, 30);
}

TEST_F(ShippedRulebookTest, UkMhraProgramsFollowEachOther) {
  const Program& p2023 = ProgramById(book(), "uk-mhra-2023");
  const Program& p2026 = ProgramById(book(), "uk-mhra-2026");
  EXPECT_EQ(p2023.zone.name(), "Europe/London");
  EXPECT_EQ(p2023.in_force_from, LocalDate::FromYmd(2023, 10, 31));
  ASSERT_TRUE(p2023.in_force_until.has_value());
  EXPECT_EQ(*p2023.in_force_until, LocalDate::FromYmd(2026, 1, 21));
  EXPECT_EQ(p2026.in_force_from, LocalDate::FromYmd(2026, 1, 22));
  for (const Program* p : {&p2023, &p2026}) {
    SCOPED_TRACE(p->id);
    EXPECT_EQ(p->jurisdiction, Jurisdiction::kUK);
    EXPECT_EQ(p->tests.scheme, TestScheme::kBeforePrescriptionDate);
    EXPECT_TRUE(p->forms.risk_acknowledgement_can_get_pregnant);
    EXPECT_TRUE(p->forms.risk_acknowledgement_cannot_get_pregnant);
    EXPECT_EQ(p->forms.baseline_assessments,
              (std::vector<AssessmentKind>{AssessmentKind::kMentalHealth,
                                           AssessmentKind::kSexualFunction}));
    EXPECT_EQ(p->windows.prescription_window_days_cannot_get_pregnant, 180);
  }
  EXPECT_EQ(p2023.forms.second_prescriber_under_age, 18);
  EXPECT_FALSE(p2026.forms.second_prescriber_under_age.has_value());
  // The US programs also follow each other day for day.
  EXPECT_EQ(*ProgramById(book(), "us-ipledge-2023").in_force_until + 1,
            ProgramById(book(), "us-ipledge-2026").in_force_from);
}

TEST_F(ShippedRulebookTest, Products) {
  const Knowledge& k = book().knowledge;
  const ProductInfo& generic = k.product(Product::kGeneric);
  EXPECT_EQ(generic.product, Product::kGeneric);
  EXPECT_EQ(generic.strengths_mg, (std::vector<double>{10, 20, 30, 40}));
  EXPECT_DOUBLE_EQ(generic.usual_min_mg_per_kg_day, 0.5);
  EXPECT_DOUBLE_EQ(generic.usual_max_mg_per_kg_day, 1.0);
  EXPECT_DOUBLE_EQ(generic.max_mg_per_kg_day, 2.0);
  EXPECT_TRUE(generic.take_with_food);

  const ProductInfo& absorica = k.product(Product::kAbsorica);
  EXPECT_EQ(absorica.strengths_mg, (std::vector<double>{10, 20, 25, 30, 35, 40}));
  EXPECT_FALSE(absorica.take_with_food);
  EXPECT_EQ(absorica.substitution_group, generic.substitution_group);

  const ProductInfo& ld = k.product(Product::kAbsoricaLd);
  EXPECT_EQ(ld.strengths_mg, (std::vector<double>{8, 16, 20, 24, 28, 32}));
  EXPECT_DOUBLE_EQ(ld.usual_min_mg_per_kg_day, 0.4);
  EXPECT_DOUBLE_EQ(ld.usual_max_mg_per_kg_day, 0.8);
  EXPECT_DOUBLE_EQ(ld.max_mg_per_kg_day, 1.6);
  EXPECT_FALSE(ld.take_with_food);
  EXPECT_NE(ld.substitution_group, generic.substitution_group);

  EXPECT_EQ(k.treatment.minimum_age_years, 12);
  EXPECT_EQ(k.treatment.second_course_min_months, 2);
  EXPECT_EQ(k.treatment.default_target_mg_per_kg, (std::array<double, 2>{120, 150}));
  EXPECT_EQ(k.treatment.baseline_labs_lookback_days, 30);
  EXPECT_EQ(k.treatment.serious_adverse_event_lookback_days, 30);
}

TEST_F(ShippedRulebookTest, LabFamilies) {
  const auto& families = book().knowledge.lab_families;
  ASSERT_EQ(families.size(), 3u);

  const LabFamily& tg = families[0];
  EXPECT_EQ(tg.tests, std::vector<LabTest>{LabTest::kTG});
  EXPECT_FALSE(tg.relative_to_uln);
  EXPECT_EQ(tg.mmol_to_mg_dl, 88.57);
  EXPECT_EQ(tg.warning_code, "TG_HIGH");
  EXPECT_EQ(tg.critical_code, "TG_CRITICAL");
  // "At or over": 500 is already a warning, 800 already critical.
  EXPECT_TRUE(tg.warning.Exceeded(500));
  EXPECT_FALSE(tg.warning.Exceeded(499.9));
  EXPECT_TRUE(tg.critical.Exceeded(800));
  EXPECT_FALSE(tg.warning_advice.empty());
  EXPECT_NE(tg.critical_advice.find("pancreatitis"), std::string::npos);

  const LabFamily& tc = families[1];
  EXPECT_EQ(tc.tests, std::vector<LabTest>{LabTest::kTC});
  EXPECT_EQ(tc.mmol_to_mg_dl, 38.67);
  EXPECT_EQ(tc.warning_code, "CHOLESTEROL_HIGH");
  EXPECT_EQ(tc.critical_code, "CHOLESTEROL_CRITICAL");
  // "Over": 300 is not yet a warning.
  EXPECT_FALSE(tc.warning.Exceeded(300));
  EXPECT_TRUE(tc.warning.Exceeded(300.1));
  EXPECT_FALSE(tc.critical.Exceeded(400));
  EXPECT_TRUE(tc.critical.Exceeded(401));

  const LabFamily& liver = families[2];
  EXPECT_EQ(liver.tests, (std::vector<LabTest>{LabTest::kALT, LabTest::kAST}));
  EXPECT_TRUE(liver.relative_to_uln);
  EXPECT_DOUBLE_EQ(liver.default_uln, 40);
  EXPECT_FALSE(liver.mmol_to_mg_dl.has_value());
  EXPECT_FALSE(liver.warning.Exceeded(3));
  EXPECT_TRUE(liver.warning.Exceeded(3.01));
  EXPECT_FALSE(liver.critical.Exceeded(5));
  EXPECT_TRUE(liver.critical.Exceeded(5.01));
  EXPECT_EQ(liver.warning_code, "LIVER_ENZYMES_HIGH");
  EXPECT_EQ(liver.critical_code, "LIVER_ENZYMES_CRITICAL");
}

TEST_F(ShippedRulebookTest, Mood) {
  const MoodKnowledge& m = book().knowledge.mood;
  EXPECT_EQ(m.moderate_min_total, 10);
  EXPECT_EQ(m.severe_min_total, 20);
  EXPECT_EQ(m.self_harm_item, 9);
}

TEST_F(ShippedRulebookTest, InteractionClassesOfTheContract) {
  const auto& classes = book().knowledge.interactions;
  std::vector<std::string> codes;
  for (const InteractionClass& c : classes) codes.push_back(c.code);
  EXPECT_EQ(codes, (std::vector<std::string>{"tetracycline", "vitamin_a", "retinoid",
                                             "progestin_only_pill", "st_johns_wort", "phenytoin",
                                             "systemic_corticosteroid", "alcohol"}));
  auto severity_of = [&](std::string_view code) {
    auto it = std::find_if(classes.begin(), classes.end(),
                           [&](const InteractionClass& c) { return c.code == code; });
    return it == classes.end() ? Severity::kInfo : it->severity;
  };
  EXPECT_EQ(severity_of("tetracycline"), Severity::kCritical);
  EXPECT_EQ(severity_of("vitamin_a"), Severity::kWarning);
  EXPECT_EQ(severity_of("retinoid"), Severity::kWarning);
  EXPECT_EQ(severity_of("progestin_only_pill"), Severity::kWarning);
  EXPECT_EQ(severity_of("st_johns_wort"), Severity::kWarning);
  EXPECT_EQ(severity_of("phenytoin"), Severity::kInfo);
  EXPECT_EQ(severity_of("systemic_corticosteroid"), Severity::kInfo);
  EXPECT_EQ(severity_of("alcohol"), Severity::kInfo);

  for (const InteractionClass& c : classes) {
    SCOPED_TRACE(c.code);
    EXPECT_FALSE(c.why.empty());
    for (const std::string& name : c.names) {
      EXPECT_EQ(name, NormalizeMedicationName(name)) << "stored names are normalized";
      EXPECT_GE(name.size(), 3u);
    }
    for (const std::string& atc : c.atc_prefixes) EXPECT_EQ(atc, NormalizeAtc(atc));
  }
}

TEST_F(ShippedRulebookTest, InteractionNamesFindTheClassAndNothingElse) {
  using V = std::vector<std::string>;
  EXPECT_EQ(ClassesMatching("Doxycycline 100 mg"), V{"tetracycline"});
  EXPECT_EQ(ClassesMatching("Solodyn ER"), V{"tetracycline"});
  EXPECT_EQ(ClassesMatching("Seysara"), V{"tetracycline"});
  EXPECT_EQ(ClassesMatching("anything", "j01aa02"), V{"tetracycline"});
  EXPECT_EQ(ClassesMatching("Vitamin A 10,000 IU"), V{"vitamin_a"});
  EXPECT_EQ(ClassesMatching("Retinyl palmitate"), V{"vitamin_a"});
  EXPECT_EQ(ClassesMatching("Soriatane (acitretin)"), V{"retinoid"});
  EXPECT_EQ(ClassesMatching("St. John's Wort 300 mg"), V{"st_johns_wort"});
  EXPECT_EQ(ClassesMatching("St John’s wort"), V{"st_johns_wort"});
  EXPECT_EQ(ClassesMatching("Micronor"), V{"progestin_only_pill"});
  EXPECT_EQ(ClassesMatching("Norethindrone 0.35 mg"), V{"progestin_only_pill"});
  EXPECT_EQ(ClassesMatching("mini-pill"), V{"progestin_only_pill"});
  EXPECT_EQ(ClassesMatching("Dilantin"), V{"phenytoin"});
  EXPECT_EQ(ClassesMatching("Prednisone 20 mg"), V{"systemic_corticosteroid"});
  EXPECT_EQ(ClassesMatching("Medrol Dosepak"), V{"systemic_corticosteroid"});
  EXPECT_EQ(ClassesMatching("Alcohol"), V{"alcohol"});
  EXPECT_EQ(ClassesMatching("red wine"), V{"alcohol"});

  // Common products that share an ingredient or a word with a class but are not in it.
  EXPECT_EQ(ClassesMatching("Multivitamin"), V{});
  EXPECT_EQ(ClassesMatching("Vitamin D3 1000 IU"), V{});
  EXPECT_EQ(ClassesMatching("Tretinoin 0.05% cream"), V{});
  EXPECT_EQ(ClassesMatching("Hydrocortisone 1% cream"), V{});
  EXPECT_EQ(ClassesMatching("Norethindrone acetate and ethinyl estradiol"), V{});
  EXPECT_EQ(ClassesMatching("Mirena (levonorgestrel IUD)"), V{});
  // The reference's class code G03AC also covers the etonogestrel implant and the
  // medroxyprogesterone injection; by name alone they are not progestin-only pills.
  EXPECT_EQ(ClassesMatching("Nexplanon"), V{});
  EXPECT_EQ(ClassesMatching("Depo-Provera"), V{});
  EXPECT_EQ(ClassesMatching("Nexplanon", "G03AC08"), V{"progestin_only_pill"});
  EXPECT_EQ(ClassesMatching("Isotretinoin 20 mg", "D10BA01"), V{});
  EXPECT_EQ(ClassesMatching("Ibuprofen 200 mg"), V{});
}

TEST(SeverityTest, Spelling) {
  EXPECT_EQ(ToString(Severity::kInfo), "info");
  EXPECT_EQ(ToString(Severity::kWarning), "warning");
  EXPECT_EQ(ToString(Severity::kCritical), "critical");
}

// ---------------------------------------------------------------------------------------------
// Bad program files: each case edits one shipped file and names the error it must give.

struct BadProgramCase {
  std::string_view name;
  std::string_view base;  // a shipped program file
  std::string_view from;  // text replaced...
  std::string_view to;    // ...by this
  std::string_view key;   // the dotted key the error must name
  std::string_view says;  // a part of the error's message
};

constexpr std::string_view kUs2023 = "us-ipledge-2023.toml";
constexpr std::string_view kEu = "eu-ppp-2018.toml";
constexpr std::string_view kUk2023 = "uk-mhra-2023.toml";

const BadProgramCase kBadPrograms[] = {
    {"MissingKey", kUs2023, "window_days = 7\n", "", "tests.window_days",
     "required key is missing"},
    {"WrongType", kUs2023, "window_days = 7\n", "window_days = \"7\"\n", "tests.window_days",
     "must be an integer, not a string"},
    {"FloatForInteger", kUs2023, "window_days = 7\n", "window_days = 7.5\n", "tests.window_days",
     "must be an integer, not a floating-point number"},
    {"NegativeWindow", kUs2023, "window_days = 7\n", "window_days = -7\n", "tests.window_days",
     "must be between 1 and"},
    {"ZeroLockoutWhileLockoutOn", kUs2023, "lockout_min_days = 19", "lockout_min_days = 0",
     "tests.lockout_min_days", "must be between 1 and"},
    {"UnknownSetting", kUs2023, "during_settings = [\"lab\"]",
     "during_settings = [\"lab\", \"clinic\"]", "tests.during_settings[1]",
     "unknown test setting 'clinic'"},
    {"SettingTwice", kUs2023, "screening_settings = [\"lab\", \"office\"]",
     "screening_settings = [\"lab\", \"lab\"]", "tests.screening_settings[1]", "twice"},
    {"NoSetting", kUs2023, "confirmation_settings = [\"lab\"]", "confirmation_settings = []",
     "tests.confirmation_settings", "must not be empty"},
    {"UnknownScheme", kUs2023, "scheme = \"screening_confirmation_window\"", "scheme = \"monthly\"",
     "tests.scheme", "unknown test scheme 'monthly'"},
    {"LockoutOutsideItsScheme", kEu, "days_before_prescription = 3\n",
     "days_before_prescription = 3\nlockout = true\n", "tests.lockout", "applies only"},
    {"UnknownKey", kUs2023, "window_days = 7\n", "window_days = 7\nwindw_days = 7\n",
     "tests.windw_days", "unknown key"},
    {"UnknownMethodCode", kUs2023, "abstinence = \"abstinence\"\n",
     "abstinence = \"abstinence\"\ncopper_iud = \"primary\"\n", "contraception.classes.copper_iud",
     "unknown contraception method code 'copper_iud'"},
    {"MethodLeftUnclassified", kUs2023, "vaginal_sponge = \"secondary\"\n", "",
     "contraception.classes.vaginal_sponge", "is not classified"},
    {"UnknownMethodClass", kUs2023, "vaginal_sponge = \"secondary\"",
     "vaginal_sponge = \"tertiary\"", "contraception.classes.vaginal_sponge",
     "unknown method class 'tertiary'"},
    {"ClassOfTheOtherRule", kUs2023, "vaginal_sponge = \"secondary\"",
     "vaginal_sponge = \"barrier\"", "contraception.classes.vaginal_sponge",
     "is not used by the rule 'two_forms_one_primary'"},
    {"UnknownContraceptionRule", kUs2023, "rule = \"two_forms_one_primary\"",
     "rule = \"three_forms\"", "contraception.rule", "unknown contraception rule 'three_forms'"},
    {"UnknownTimeZone", kUs2023, "time_zone = \"America/New_York\"",
     "time_zone = \"America/Nowhere\"", "program.time_zone", "unknown time zone 'America/Nowhere'"},
    {"BadDate", kUs2023, "in_force_from = 2023-10-03", "in_force_from = \"2023-13-03\"",
     "program.in_force_from", "is not a valid date YYYY-MM-DD"},
    {"DateOfWrongType", kUs2023, "in_force_from = 2023-10-03", "in_force_from = 20231003",
     "program.in_force_from", "must be a date YYYY-MM-DD, not an integer"},
    {"EndBeforeStart", kUs2023, "in_force_until = 2026-08-07", "in_force_until = 2023-10-02",
     "program.in_force_until", "must not be before in_force_from (2023-10-03)"},
    {"UnknownJurisdiction", kUs2023, "jurisdiction = \"US\"", "jurisdiction = \"USA\"",
     "program.jurisdiction", "unknown jurisdiction 'USA'"},
    {"MissingSource", kUs2023, "source = \"iPLEDGE REMS (monthly tests",
     "sauce = \"iPLEDGE REMS (monthly tests", "due.source", "required key is missing"},
    {"EmptySource", kUs2023, "max_refills = 0\nsource = \"", "max_refills = 0\nsource = \"\"\n#",
     "supply.source", "must not be empty"},
    {"MissingTable", kUs2023, "[monthly]", "[monthy]", "monthly", "required table is missing"},
    {"NoneMisspelt", kUs2023, "max_days_supply_cannot_get_pregnant = 30",
     "max_days_supply_cannot_get_pregnant = \"no\"", "supply.max_days_supply_cannot_get_pregnant",
     "must be an integer or \"none\""},
    {"NoMaximumMustBeSaid", kEu, "max_days_supply_cannot_get_pregnant = \"none\"\n", "",
     "supply.max_days_supply_cannot_get_pregnant", "required key is missing"},
    {"RefillsOutOfRange", kUs2023, "max_refills = 0", "max_refills = -1", "supply.max_refills",
     "must be between 0 and"},
    {"UnknownCounselingRule", kUs2023,
     "counseling_cannot_get_pregnant = \"since_previous_dispense\"",
     "counseling_cannot_get_pregnant = \"monthly\"", "monthly.counseling_cannot_get_pregnant",
     "unknown counselling rule 'monthly'"},
    {"UnknownAssessment", kUk2023,
     "baseline_assessments = [\"mental_health\", \"sexual_function\"]",
     "baseline_assessments = [\"mental_health\", \"libido\"]", "forms.baseline_assessments[1]",
     "unknown assessment kind 'libido'"},
    {"RiskFormWithoutValidity", kEu, "risk_acknowledgement_valid_months = 12\n", "",
     "forms.risk_acknowledgement_valid_months", "required key is missing"},
    {"FollowUpDueBeforeItOpens", kUs2023, "labs_follow_up_due_days = 56",
     "labs_follow_up_due_days = 20", "due.labs_follow_up_due_days", "must not be before"},
    {"UnknownTopLevelTable", kUs2023, "[due]", "[extra]\nx = 1\n\n[due]", "extra", "unknown key"},
};

class BadProgramTest : public testing::TestWithParam<BadProgramCase> {};

TEST_P(BadProgramTest, ErrorNamesFileAndKeyAndSaysWhatIsWrong) {
  const BadProgramCase& c = GetParam();
  std::string text =
      ReplaceOnce(ReadFile(fs::path(kSourceDir) / "programs" / c.base), c.from, c.to);
  Result<Program> program = ParseProgramToml(text, "programs/bad.toml");
  ASSERT_FALSE(program.ok()) << "accepted: " << c.name;
  const Error& e = program.error();
  EXPECT_EQ(e.kind, ErrorKind::kBadInput);
  EXPECT_EQ(e.field, "programs/bad.toml: " + std::string(c.key)) << e.ToString();
  EXPECT_NE(e.message.find(c.says), std::string::npos) << e.ToString();
}

INSTANTIATE_TEST_SUITE_P(RulebookLoader, BadProgramTest, testing::ValuesIn(kBadPrograms),
                         [](const testing::TestParamInfo<BadProgramCase>& param_info) {
                           return std::string(param_info.param.name);
                         });

TEST(RulebookLoaderTest, EveryShippedProgramParsesAlone) {
  for (std::string_view file : {"us-ipledge-2023.toml", "us-ipledge-2026.toml", "eu-ppp-2018.toml",
                                "uk-mhra-2023.toml", "uk-mhra-2026.toml"}) {
    std::string display = "programs/" + std::string(file);
    Result<Program> p = LoadProgramFile((fs::path(kSourceDir) / display).string(), display);
    EXPECT_TRUE(p.ok()) << (p.ok() ? "" : p.error().ToString());
  }
}

TEST(RulebookLoaderTest, SyntaxErrorNamesFileLineAndColumn) {
  std::string text = ReadFile(fs::path(kSourceDir) / "programs" / kUs2023);
  size_t pos = text.find("window_days = 7\n");
  ASSERT_NE(pos, std::string::npos);
  size_t line = 1 + static_cast<size_t>(std::count(
                        text.begin(), text.begin() + static_cast<std::ptrdiff_t>(pos), '\n'));
  text = ReplaceOnce(text, "window_days = 7\n", "window_days = = 7\n");
  Result<Program> program = ParseProgramToml(text, "programs/bad.toml");
  ASSERT_FALSE(program.ok());
  EXPECT_EQ(program.error().kind, ErrorKind::kBadInput);
  EXPECT_EQ(program.error().field, "programs/bad.toml");
  EXPECT_NE(program.error().message.find("TOML syntax error at line " + std::to_string(line) +
                                         ", column "),
            std::string::npos)
      << program.error().ToString();
}

TEST(RulebookLoaderTest, UnreadableFileIsAnErrorNotAnException) {
  Result<Program> program =
      LoadProgramFile(kSourceDir + "/programs/no-such-file.toml", "programs/no-such-file.toml");
  ASSERT_FALSE(program.ok());
  EXPECT_EQ(program.error().field, "programs/no-such-file.toml");
  EXPECT_NE(program.error().message.find("cannot open"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Whole rulebooks: a copy of the shipped data directory, edited.

class DataDirTest : public testing::Test {
 protected:
  void SetUp() override {
    const testing::TestInfo* info = testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(testing::TempDir()) /
           ("isoguard_rulebook_" + std::string(info->test_suite_name()) + "_" + info->name());
    fs::remove_all(dir_);
    for (std::string_view sub : {"programs", "knowledge"}) {
      fs::create_directories(dir_ / sub);
      for (const fs::directory_entry& entry : fs::directory_iterator(fs::path(kSourceDir) / sub)) {
        if (entry.path().extension() == ".toml") {
          fs::copy_file(entry.path(), dir_ / sub / entry.path().filename());
        }
      }
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  void Edit(const std::string& relative, std::string_view from, std::string_view to) {
    WriteFile(dir_ / relative, ReplaceOnce(ReadFile(dir_ / relative), from, to));
  }
  Error LoadError() {
    Result<Rulebook> book = LoadRulebook(dir_.string());
    EXPECT_FALSE(book.ok());
    return book.ok() ? Error{} : book.error();
  }

  fs::path dir_;
};

TEST_F(DataDirTest, CopyLoads) {
  Result<Rulebook> book = LoadRulebook(dir_.string());
  EXPECT_TRUE(book.ok()) << book.error().ToString();
}

TEST_F(DataDirTest, DuplicateProgramIdAcrossFiles) {
  fs::copy_file(dir_ / "programs/us-ipledge-2026.toml", dir_ / "programs/us-ipledge-2027.toml");
  Error e = LoadError();
  EXPECT_EQ(e.field, "programs/us-ipledge-2027.toml: program.id");
  EXPECT_NE(e.message.find("duplicate program id 'us-ipledge-2026'"), std::string::npos)
      << e.ToString();
  EXPECT_NE(e.message.find("programs/us-ipledge-2026.toml"), std::string::npos);
}

TEST_F(DataDirTest, OverlappingPrograms) {
  Edit("programs/uk-mhra-2023.toml", "in_force_until = 2026-01-21", "in_force_until = 2026-02-01");
  Error e = LoadError();
  EXPECT_EQ(e.field, "programs/uk-mhra-2026.toml: program.in_force_from");
  EXPECT_NE(e.message.find("overlaps uk-mhra-2023"), std::string::npos) << e.ToString();
}

TEST_F(DataDirTest, GapBetweenPrograms) {
  Edit("programs/uk-mhra-2023.toml", "in_force_until = 2026-01-21", "in_force_until = 2026-01-01");
  Error e = LoadError();
  EXPECT_EQ(e.field, "programs/uk-mhra-2026.toml: program.in_force_from");
  EXPECT_NE(e.message.find("gap"), std::string::npos) << e.ToString();
}

TEST_F(DataDirTest, OpenEndedProgramFollowedByAnother) {
  Edit("programs/us-ipledge-2023.toml", "in_force_until = 2026-08-07", "");
  Error e = LoadError();
  EXPECT_EQ(e.field, "programs/us-ipledge-2023.toml: program.in_force_until");
}

TEST_F(DataDirTest, JurisdictionWithoutProgram) {
  fs::remove(dir_ / "programs/eu-ppp-2018.toml");
  Error e = LoadError();
  EXPECT_NE(e.message.find("no program for the jurisdiction EU"), std::string::npos)
      << e.ToString();
}

TEST_F(DataDirTest, MissingKnowledgeFile) {
  fs::remove(dir_ / "knowledge/mood.toml");
  Error e = LoadError();
  EXPECT_EQ(e.field, "knowledge/mood.toml");
  EXPECT_NE(e.message.find("cannot open"), std::string::npos);
}

TEST_F(DataDirTest, KnowledgeSyntaxError) {
  Edit("knowledge/products.toml", "[treatment]", "[treatment");
  Error e = LoadError();
  EXPECT_EQ(e.field, "knowledge/products.toml");
  EXPECT_NE(e.message.find("TOML syntax error at line"), std::string::npos) << e.ToString();
}

TEST_F(DataDirTest, KnowledgeGroupWithoutSource) {
  Edit("knowledge/labs.toml", "source = \"Isotretinoin labels (lipid monitoring)",
       "comment = \"Isotretinoin labels (lipid monitoring)");
  Error e = LoadError();
  EXPECT_EQ(e.field, "knowledge/labs.toml: families[1].source");
  EXPECT_NE(e.message.find("required key is missing"), std::string::npos);
}

TEST_F(DataDirTest, ProductMissing) {
  Edit("knowledge/products.toml", "[products.absorica_ld]", "[products.absorica_xl]");
  Error e = LoadError();
  EXPECT_EQ(e.field, "knowledge/products.toml: products.absorica_xl");
  EXPECT_NE(e.message.find("unknown product code 'absorica_xl'"), std::string::npos);
}

TEST_F(DataDirTest, StrengthsOutOfOrder) {
  Edit("knowledge/products.toml", "strengths_mg = [10, 20, 30, 40]",
       "strengths_mg = [10, 30, 20, 40]");
  Error e = LoadError();
  EXPECT_EQ(e.field, "knowledge/products.toml: products.generic.strengths_mg");
  EXPECT_NE(e.message.find("ascending"), std::string::npos);
}

TEST_F(DataDirTest, ThresholdNeedsOneComparison) {
  Edit("knowledge/labs.toml", "warning = { at_least = 500,",
       "warning = { at_least = 500, above = 500,");
  Error e = LoadError();
  EXPECT_EQ(e.field, "knowledge/labs.toml: families[0].warning");
  EXPECT_NE(e.message.find("exactly one of at_least"), std::string::npos);
}

TEST_F(DataDirTest, LabTestInTwoFamilies) {
  Edit("knowledge/labs.toml", "tests = [\"TC\"]", "tests = [\"TC\", \"TG\"]");
  Error e = LoadError();
  EXPECT_EQ(e.field, "knowledge/labs.toml: families[1].tests");
  EXPECT_NE(e.message.find("'TG' is already in another family"), std::string::npos);
}

TEST_F(DataDirTest, Phq9BandsOutOfOrder) {
  Edit("knowledge/mood.toml", "severe_min_total = 20", "severe_min_total = 5");
  Error e = LoadError();
  EXPECT_EQ(e.field, "knowledge/mood.toml: phq9.severe_min_total");
}

TEST_F(DataDirTest, InteractionNameThatWouldMatchEverything) {
  Edit("knowledge/interactions.toml", "names = [\"alcohol\",", "names = [\"a\", \"alcohol\",");
  Error e = LoadError();
  EXPECT_EQ(e.field, "knowledge/interactions.toml: classes[7].names[0]");
  EXPECT_NE(e.message.find("too short"), std::string::npos) << e.ToString();
}

TEST_F(DataDirTest, InteractionNameInTwoClasses) {
  Edit("knowledge/interactions.toml", "names = [\"alcohol\",",
       "names = [\"Dilantin\", \"alcohol\",");
  Error e = LoadError();
  EXPECT_EQ(e.field, "knowledge/interactions.toml: classes[7].names[0]");
  EXPECT_NE(e.message.find("already a name of the class 'phenytoin'"), std::string::npos)
      << e.ToString();
}

TEST_F(DataDirTest, InteractionUnknownSeverityGrade) {
  Edit("knowledge/interactions.toml", "severity = \"contraindicated\"", "severity = \"severe\"");
  Error e = LoadError();
  EXPECT_EQ(e.field, "knowledge/interactions.toml: classes[0].severity");
  EXPECT_NE(e.message.find("unknown severity grade 'severe'"), std::string::npos);
}

TEST_F(DataDirTest, InteractionBadAtcPrefix) {
  Edit("knowledge/interactions.toml", "atc_prefixes = [\"H02AB\"]", "atc_prefixes = [\"H\"]");
  Error e = LoadError();
  EXPECT_EQ(e.field, "knowledge/interactions.toml: classes[6].atc_prefixes[0]");
  EXPECT_NE(e.message.find("not an ATC code or prefix"), std::string::npos);
}

}  // namespace
}  // namespace isoguard
