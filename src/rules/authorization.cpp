// "How an authorization is decided" (docs/record-format.md): every rule is checked and every
// failure reported, in the procedure's order.
#include <algorithm>
#include <string>

#include "core/text.h"
#include "rules/detail/parts.h"

namespace isoguard::detail {
namespace {

bool InSet(SettingSet set, TestSetting s) { return (set & SettingBit(s)) != 0; }

std::string SettingList(SettingSet set) {
  std::string out;
  for (TestSetting s : {TestSetting::kLab, TestSetting::kOffice, TestSetting::kHome}) {
    if (!InSet(set, s)) continue;
    if (!out.empty()) out += " or ";
    out += ToString(s);
  }
  return out;
}

std::string MethodList(MethodSet methods) {
  std::string out;
  for (int i = 0; i < kContraceptionMethodCount; ++i) {
    if ((methods & (MethodSet{1} << i)) == 0) continue;
    if (!out.empty()) out += ", ";
    std::string name(ToString(static_cast<ContraceptionMethod>(i)));
    std::replace(name.begin(), name.end(), '_', ' ');
    out += name;
  }
  return out.empty() ? "none" : out;
}

class Authorizer {
 public:
  Authorizer(const Timeline& t, ZoneCursor& cursor, Authorization& out)
      : t_(t), p_(*t.program), cursor_(cursor), out_(out) {}

  void Run() {
    if (t_.considered == kNone) {
      Deny("NO_PRESCRIPTION",
           "There is no prescription to authorize: none has been written, or "
           "every prescription has been dispensed or cancelled.");
      return;
    }
    const Event& rx = t_.at_pos(t_.considered);
    out_.prescription = rx.id;
    const auto* info = t_.FindPrescription(rx.id);
    if (info->dispensed) {
      Deny("ALREADY_DISPENSED", "Prescription " + rx.id +
                                    " has already been dispensed; a prescription is dispensed "
                                    "once.");
      return;
    }
    rx_date_ = t_.date_at(t_.considered);

    if (t_.first_enrollment == kNone) {
      Deny("NOT_ENROLLED", "The patient is not enrolled in " + p_.title + ".");
    }
    CheckSupply(rx);
    if (t_.CanGetPregnant()) {
      CheckPregnancyTests();
      CheckContraception();
      CheckComprehension();
    }
    CheckCounseling();
    CheckVisitWindow();
    CheckPrescriptionWindow();
    CheckRiskAcknowledgement();
    CheckUkAssessments();

    out_.authorized = out_.reasons.empty();
    if (out_.authorized && dispense_by_) out_.dispense_by = dispense_by_;
  }

 private:
  void Deny(std::string_view code, std::string message) {
    out_.reasons.push_back(Reason{code, std::move(message)});
  }

  // Keeps the earliest end among the windows that apply.
  void Window(Instant end) {
    if (!dispense_by_ || end < *dispense_by_) dispense_by_ = end;
  }

  std::string EndText(Instant end) {
    return "23:59 " + cursor_.Abbreviation(end) + " on " + cursor_.LocalDateOf(end).ToString();
  }

  void CheckSupply(const Event& rx) {
    const auto& max = t_.CanGetPregnant() ? p_.supply.max_days_supply_can_get_pregnant
                                          : p_.supply.max_days_supply_cannot_get_pregnant;
    if (max && rx.days_supply > *max) {
      Deny("SUPPLY_OVER_LIMIT", "Prescription " + rx.id + " is for " +
                                    std::to_string(rx.days_supply) + " days; " + p_.title +
                                    " allows at most " + std::to_string(*max) + " days' supply.");
    }
    if (rx.refills > p_.supply.max_refills) {
      Deny("REFILLS_NOT_ALLOWED",
           "Prescription " + rx.id + " has " + std::to_string(rx.refills) + " refill" +
               (rx.refills == 1 ? "" : "s") + "; " + p_.title +
               (p_.supply.max_refills == 0
                    ? " allows no refills: a new prescription is needed each time."
                    : " allows at most " + std::to_string(p_.supply.max_refills) + "."));
    }
  }

  bool IsNegativeTest(int pos) const {
    const Event& e = t_.at_pos(pos);
    return e.type == EventType::kPregnancyTest && e.result == TestResult::kNegative;
  }

  void CheckPregnancyTests() {
    // The latest valid test decides first: a positive one ends the test rules.
    for (int i = static_cast<int>(t_.events.size()) - 1; i >= 0; --i) {
      const Event& e = t_.at_pos(i);
      if (e.type != EventType::kPregnancyTest || e.result == TestResult::kInvalid) continue;
      if (e.result == TestResult::kPositive) {
        Deny("PREGNANCY_TEST_POSITIVE", "The pregnancy test collected " + t_.date_at(i).ToString() +
                                            " is positive: isotretinoin must not be dispensed.");
        return;
      }
      break;
    }
    if (p_.tests.scheme == TestScheme::kBeforePrescriptionDate) {
      CheckTestBeforePrescriptionDate();
    } else if (t_.first_prescription) {
      CheckUsFirstPrescriptionTests();
    } else {
      CheckUsLaterPrescriptionTest();
    }
  }

  // True when the test at `pos` has a negative screening test in an accepted setting,
  // collected at least the program's minimum days before it, within [pool_begin, pos).
  bool HasScreening(int pool_begin, int pos) const {
    for (int i = pool_begin; i < pos; ++i) {
      if (!IsNegativeTest(i) || !InSet(p_.tests.screening_settings, t_.at_pos(i).setting)) continue;
      if (t_.date_at(pos) - t_.date_at(i) >= p_.tests.confirmation_min_days_after_screening) {
        return true;
      }
    }
    return false;
  }

  Instant WindowEnd(int test_pos) {
    return cursor_.EndOfDay(t_.date_at(test_pos) + (p_.tests.window_days - 1));
  }

  // US: day 1 is the test's collection date; the window closes at the end of day N.
  void CheckTestWindow(int test_pos) {
    Instant end = WindowEnd(test_pos);
    if (t_.at > end) {
      Deny("PREGNANCY_TEST_WINDOW_EXPIRED", "The pregnancy test collected " +
                                                t_.date_at(test_pos).ToString() + " expired at " +
                                                EndText(end) + "; a new test is needed.");
    } else {
      Window(end);
    }
  }

  void CheckUsFirstPrescriptionTests() {
    // Tests after the latest dispense of any earlier course: a test never qualifies two
    // dispenses.
    const int pool = Timeline::After(t_.latest_dispense_any);
    const int n = static_cast<int>(t_.events.size());
    int c = kNone;
    for (int i = pool; i < n; ++i) {
      if (IsNegativeTest(i)) {
        c = i;
        if (InSet(p_.tests.screening_settings, t_.at_pos(i).setting) && !earliest_screening_) {
          earliest_screening_ = t_.date_at(i);
        }
      }
    }
    if (c == kNone) {
      Deny("PREGNANCY_TEST_MISSING",
           "No negative pregnancy test is recorded for the first prescription: a screening test "
           "and a confirmation test are needed.");
      return;
    }
    out_.pregnancy_test = &t_.at_pos(c);
    const Event& test = t_.at_pos(c);
    const std::string c_date = t_.date_at(c).ToString();
    if (!InSet(p_.tests.confirmation_settings, test.setting)) {
      Deny("PREGNANCY_TEST_SETTING",
           "The confirmation test collected " + c_date + " was taken in a " +
               std::string(ToString(test.setting)) + " setting; before treatment " + p_.title +
               " accepts only " + SettingList(p_.tests.confirmation_settings) + " tests.");
    }

    // The lockout (US 2023) after a missed first window.
    bool locked_out = false;
    if (p_.tests.lockout) {
      for (int m = pool; m < c; ++m) {
        if (!IsNegativeTest(m) || !InSet(p_.tests.confirmation_settings, t_.at_pos(m).setting)) {
          continue;
        }
        if (!HasScreening(pool, m)) continue;
        Instant m_end = WindowEnd(m);
        if (!(test.at > m_end)) continue;
        bool dispensed_in_window = false;
        for (int d : t_.dispenses) {
          const Event& de = t_.at_pos(d);
          if (de.at >= t_.at_pos(m).at && de.at <= m_end) dispensed_in_window = true;
        }
        if (dispensed_in_window) continue;
        int days = t_.date_at(c) - t_.date_at(m);
        if (days < p_.tests.lockout_min_days) {
          locked_out = true;
          LocalDate not_before = t_.date_at(m) + p_.tests.lockout_min_days;
          if (!lockout_not_before_ || *lockout_not_before_ < not_before) {
            lockout_not_before_ = not_before;
          }
        }
      }
    }

    bool has_earlier = false;
    for (int i = pool; i < c; ++i) {
      if (IsNegativeTest(i) && InSet(p_.tests.screening_settings, t_.at_pos(i).setting)) {
        has_earlier = true;
      }
    }
    if (!has_earlier) {
      Deny("CONFIRMATION_TEST_MISSING",
           "The test collected " + c_date + " has no earlier negative screening test (" +
               SettingList(p_.tests.screening_settings) +
               "): a first prescription needs a screening test and a confirmation test at least " +
               std::to_string(p_.tests.confirmation_min_days_after_screening) + " days later.");
    } else if (!HasScreening(pool, c)) {
      if (!locked_out) {
        Deny(
            "CONFIRMATION_TOO_EARLY",
            "The confirmation test collected " + c_date + " was taken fewer than " +
                std::to_string(p_.tests.confirmation_min_days_after_screening) +
                " days after the screening test; a new confirmation test is needed on or after " +
                (*earliest_screening_ + p_.tests.confirmation_min_days_after_screening).ToString() +
                ".");
      }
    }
    if (locked_out) {
      Deny("LOCKOUT",
           "The first prescription's window was missed; the next confirmation test "
           "must be collected on or after " +
               lockout_not_before_->ToString() + " (the test collected " + c_date +
               " is too early).");
    }
    CheckTestWindow(c);
  }

  void CheckUsLaterPrescriptionTest() {
    const int n = static_cast<int>(t_.events.size());
    int c = kNone;
    for (int i = Timeline::After(t_.previous_dispense); i < n; ++i) {
      if (IsNegativeTest(i)) c = i;
    }
    if (c == kNone) {
      Deny("PREGNANCY_TEST_MISSING",
           "No negative pregnancy test has been collected since the last dispense on " +
               t_.date_at(t_.previous_dispense).ToString() +
               "; each prescription needs its own test.");
      return;
    }
    out_.pregnancy_test = &t_.at_pos(c);
    const Event& test = t_.at_pos(c);
    const std::string c_date = t_.date_at(c).ToString();
    if (!InSet(p_.tests.during_settings, test.setting)) {
      Deny("PREGNANCY_TEST_SETTING",
           "The pregnancy test collected " + c_date + " was taken in a " +
               std::string(ToString(test.setting)) + " setting; during treatment " + p_.title +
               " accepts only " + SettingList(p_.tests.during_settings) + " tests.");
    }
    CheckTestWindow(c);
  }

  void CheckTestBeforePrescriptionDate() {
    const int n = static_cast<int>(t_.events.size());
    const LocalDate earliest = rx_date_ - p_.tests.days_before_prescription;
    int qualifying = kNone;
    int but_for_setting = kNone;
    for (int i = Timeline::After(t_.previous_dispense); i < n; ++i) {
      if (!IsNegativeTest(i)) continue;
      LocalDate d = t_.date_at(i);
      if (d < earliest || d > rx_date_) continue;
      if (InSet(p_.tests.during_settings, t_.at_pos(i).setting)) {
        qualifying = i;
      } else {
        but_for_setting = i;
      }
    }
    if (qualifying != kNone) {
      out_.pregnancy_test = &t_.at_pos(qualifying);
      return;
    }
    if (but_for_setting != kNone) {
      Deny("PREGNANCY_TEST_SETTING",
           "The pregnancy test collected " + t_.date_at(but_for_setting).ToString() +
               " was taken in a " + std::string(ToString(t_.at_pos(but_for_setting).setting)) +
               " setting; " + p_.title + " needs a medically supervised test (" +
               SettingList(p_.tests.during_settings) + ").");
      return;
    }
    Deny("PREGNANCY_TEST_MISSING",
         "No negative, medically supervised pregnancy test was collected between " +
             earliest.ToString() + " and the prescription date " + rx_date_.ToString() + ".");
  }

  // Whether the attested methods meet the program, and why not.
  bool MethodsSuffice(MethodSet methods, std::string& why) const {
    const auto& classes = p_.contraception.method_class;
    int primary = 0, secondary = 0, independent = 0, dependent = 0, barrier = 0;
    for (int i = 0; i < kContraceptionMethodCount; ++i) {
      if ((methods & (MethodSet{1} << i)) == 0) continue;
      switch (classes[static_cast<size_t>(i)]) {
        case MethodClass::kAbstinence:
          return true;
        case MethodClass::kPrimary:
          ++primary;
          break;
        case MethodClass::kSecondary:
          ++secondary;
          break;
        case MethodClass::kUserIndependent:
          ++independent;
          break;
        case MethodClass::kUserDependent:
          ++dependent;
          break;
        case MethodClass::kBarrier:
          ++dependent;
          ++barrier;
          break;
        case MethodClass::kNotAcceptable:
          break;
      }
    }
    switch (p_.contraception.rule) {
      case ContraceptionRule::kTwoFormsOnePrimary:
        why = "two forms used together, at least one of them primary, or abstinence";
        return primary >= 1 && primary + secondary >= 2;
      case ContraceptionRule::kOneIndependentOrTwoDependentWithBarrier:
        why =
            "one user-independent method, or two user-dependent methods including a barrier, "
            "or abstinence";
        return independent >= 1 || (dependent >= 2 && barrier >= 1);
    }
    return false;
  }

  void CheckContraception() {
    const int n = static_cast<int>(t_.events.size());
    int latest = kNone;
    for (int i = Timeline::After(t_.previous_dispense); i < n; ++i) {
      if (t_.at_pos(i).type == EventType::kContraception) latest = i;
    }
    if (latest == kNone) {
      Deny("CONTRACEPTION_NOT_CONFIRMED",
           t_.first_prescription
               ? std::string("The patient has not confirmed the contraception methods in use.")
               : "The patient has not confirmed the contraception methods in use since the last "
                 "dispense on " +
                     t_.date_at(t_.previous_dispense).ToString() + ".");
      return;
    }
    const Event& a = t_.at_pos(latest);
    std::string why;
    if (!MethodsSuffice(a.methods, why)) {
      Deny("CONTRACEPTION_INSUFFICIENT",
           "The methods confirmed on " + t_.date_at(latest).ToString() + " (" +
               MethodList(a.methods) + ") do not meet " + p_.title + ": it requires " + why + ".");
      return;
    }
    if (t_.first_prescription && t_.today - a.date < p_.contraception.lead_in_days) {
      Deny("CONTRACEPTION_LEAD_IN", "The contraception in use since " + a.date.ToString() +
                                        " has been used for " + std::to_string(t_.today - a.date) +
                                        " days; at least " +
                                        std::to_string(p_.contraception.lead_in_days) +
                                        " days are needed before the first dispense (from " +
                                        (a.date + p_.contraception.lead_in_days).ToString() + ").");
    }
  }

  bool HasSincePrevious(EventType type, bool need_flag) const {
    const int n = static_cast<int>(t_.events.size());
    int from = t_.first_prescription ? 0 : Timeline::After(t_.previous_dispense);
    for (int i = from; i < n; ++i) {
      const Event& e = t_.at_pos(i);
      if (e.type == type && (!need_flag || e.flag)) return true;
    }
    return false;
  }

  void CheckComprehension() {
    if (!p_.monthly.comprehension_can_get_pregnant) return;
    if (!HasSincePrevious(EventType::kComprehension, true)) {
      Deny("COMPREHENSION_MISSING",
           t_.first_prescription
               ? std::string("The patient has not passed the comprehension questions.")
               : "The patient has not passed the comprehension questions since the last dispense "
                 "on " +
                     t_.date_at(t_.previous_dispense).ToString() + ".");
    }
  }

  void CheckCounseling() {
    CounselingRule rule = t_.CanGetPregnant() ? p_.monthly.counseling_can_get_pregnant
                                              : p_.monthly.counseling_cannot_get_pregnant;
    bool ok = true;
    switch (rule) {
      case CounselingRule::kNone:
        return;
      case CounselingRule::kSincePreviousDispense:
        ok = HasSincePrevious(EventType::kVisit, true);
        break;
      case CounselingRule::kAtAnyTime:
        ok = std::any_of(t_.events.begin(), t_.events.end(),
                         [](const Event* e) { return e->type == EventType::kVisit && e->flag; });
        break;
    }
    if (!ok) {
      Deny("COUNSELING_MISSING",
           rule == CounselingRule::kSincePreviousDispense && !t_.first_prescription
               ? "The prescriber has not confirmed risk counselling since the last dispense on " +
                     t_.date_at(t_.previous_dispense).ToString() + "."
               : std::string("The prescriber has not confirmed risk counselling."));
    }
  }

  void CheckVisitWindow() {
    const auto& days = p_.windows.visit_window_days_cannot_get_pregnant;
    if (!days || t_.CanGetPregnant()) return;
    const int n = static_cast<int>(t_.events.size());
    int from = t_.first_prescription ? 0 : Timeline::After(t_.previous_dispense);
    int v = kNone;
    for (int i = from; i < n; ++i) {
      if (t_.at_pos(i).type == EventType::kVisit) v = i;
    }
    if (v == kNone) {
      Deny(
          "VISIT_WINDOW_EXPIRED",
          "No prescriber visit is recorded" +
              std::string(t_.first_prescription ? ""
                                                : " since the last dispense on " +
                                                      t_.date_at(t_.previous_dispense).ToString()) +
              "; the prescription can be dispensed within " + std::to_string(*days) +
              " days of a visit.");
      return;
    }
    Instant end = cursor_.EndOfDay(t_.date_at(v) + (*days - 1));
    if (t_.at > end) {
      Deny("VISIT_WINDOW_EXPIRED", "The " + std::to_string(*days) +
                                       "-day window from the visit on " + t_.date_at(v).ToString() +
                                       " closed at " + EndText(end) + "; a new visit is needed.");
    } else {
      Window(end);
    }
  }

  void CheckPrescriptionWindow() {
    const auto& days = t_.CanGetPregnant()
                           ? p_.windows.prescription_window_days_can_get_pregnant
                           : p_.windows.prescription_window_days_cannot_get_pregnant;
    if (!days) return;
    Instant end = cursor_.EndOfDay(rx_date_ + (*days - 1));
    if (t_.at > end) {
      Deny("PRESCRIPTION_WINDOW_EXPIRED", "The prescription written " + rx_date_.ToString() +
                                              " could be dispensed until " + EndText(end) + " (" +
                                              std::to_string(*days) +
                                              " days); a new prescription is needed.");
    } else {
      Window(end);
    }
  }

  void CheckRiskAcknowledgement() {
    bool required = t_.CanGetPregnant() ? p_.forms.risk_acknowledgement_can_get_pregnant
                                        : p_.forms.risk_acknowledgement_cannot_get_pregnant;
    if (!required) return;
    LocalDate since = t_.today.AddMonths(-p_.forms.risk_acknowledgement_valid_months);
    const int n = static_cast<int>(t_.events.size());
    for (int i = 0; i < n; ++i) {
      if (t_.at_pos(i).type == EventType::kRiskAcknowledgement && t_.date_at(i) >= since) return;
    }
    Deny("RISK_ACKNOWLEDGEMENT_MISSING",
         "No acknowledgement-of-risk form signed on or after " + since.ToString() +
             " is recorded; " + p_.title + " requires one at the start and at least every " +
             std::to_string(p_.forms.risk_acknowledgement_valid_months) + " months.");
  }

  void CheckUkAssessments() {
    if (!t_.first_prescription) return;
    if (!p_.forms.baseline_assessments.empty()) {
      std::string missing;
      for (AssessmentKind kind : p_.forms.baseline_assessments) {
        bool found = std::any_of(t_.events.begin(), t_.events.end(), [kind](const Event* e) {
          return e->type == EventType::kAssessment && e->assessment == kind;
        });
        if (!found) {
          std::string name(ToString(kind));
          std::replace(name.begin(), name.end(), '_', ' ');
          missing += (missing.empty() ? "" : " and ") + name;
        }
      }
      if (!missing.empty()) {
        Deny("BASELINE_ASSESSMENT_MISSING",
             "The baseline " + missing + " assessment" +
                 (missing.find(" and ") != std::string::npos ? "s are" : " is") +
                 " missing; it is needed before the first prescription.");
      }
    }
    if (p_.forms.second_prescriber_under_age) {
      int age = t_.record->patient.birth_date.YearsUntil(t_.today);
      if (age < *p_.forms.second_prescriber_under_age &&
          std::none_of(t_.events.begin(), t_.events.end(),
                       [](const Event* e) { return e->type == EventType::kSecondPrescriber; })) {
        Deny("SECOND_PRESCRIBER_MISSING",
             "The patient is " + std::to_string(age) + " (under " +
                 std::to_string(*p_.forms.second_prescriber_under_age) +
                 "): a second, independent prescriber must agree before treatment starts.");
      }
    }
  }

  const Timeline& t_;
  const Program& p_;
  ZoneCursor& cursor_;
  Authorization& out_;
  std::optional<LocalDate> earliest_screening_;
  std::optional<LocalDate> lockout_not_before_;
  LocalDate rx_date_;
  std::optional<Instant> dispense_by_;
};

}  // namespace

void AuthorizePrescription(const Timeline& t, ZoneCursor& cursor, Authorization& out) {
  Authorizer(t, cursor, out).Run();
}

}  // namespace isoguard::detail
