// "When things are due" (docs/record-format.md): the due list, from the program's parameters.
#include <algorithm>

#include "rules/detail/parts.h"

namespace isoguard::detail {
namespace {

class DueLister {
 public:
  DueLister(const Timeline& t, std::vector<DueItem>& out)
      : t_(t), p_(*t.program), d_(t.program->due), out_(out) {}

  void Run() {
    const bool ended = t_.course_dispenses.empty() && t_.latest_treatment_end != kNone;
    const bool in_treatment = !t_.course_dispenses.empty();
    // The first-prescription stage: no dispense in the current course, and either the patient
    // never ended a course or a new prescription is being considered.
    const bool first_stage = t_.course_dispenses.empty() && (!ended || t_.considered != kNone);
    const bool can = t_.CanGetPregnant();

    if (can && first_stage) ScreeningAndConfirmation();
    if (in_treatment) Monthly(can);
    if (first_stage && t_.considered != kNone && BaselineLabsMissing(t_)) {
      Add("LABS_BASELINE", t_.today);
    }
    if (in_treatment) LabsFollowUp();
    if (in_treatment || first_stage) Phq9();
    if (ended) {
      LocalDate last_dose = t_.at_pos(t_.latest_treatment_end).date;
      if (can) {
        Add("END_OF_TREATMENT_TEST", last_dose);
        Add("POST_TREATMENT_TEST", last_dose + d_.post_treatment_test_days);
        Add("CONTRACEPTION_UNTIL", last_dose + d_.contraception_after_last_dose_days);
      }
      if (t_.today - last_dose < d_.no_blood_donation_days) {
        Add("NO_BLOOD_DONATION_UNTIL", last_dose + d_.no_blood_donation_days);
      }
    } else if (in_treatment) {
      const Event& dispense = t_.at_pos(t_.previous_dispense);
      const Event& rx = t_.PrescriptionOf(dispense);
      int32_t supply = dispense.days_supply > 0 ? dispense.days_supply : rx.days_supply;
      LocalDate supply_end = t_.date_at(t_.previous_dispense) + (supply - 1);
      Add("NO_BLOOD_DONATION_UNTIL", supply_end + d_.no_blood_donation_days);
    }
    RiskAcknowledgement(can);
  }

 private:
  void Add(std::string_view code, LocalDate due_by, std::optional<LocalDate> not_before = {}) {
    out_.push_back(DueItem{code, due_by, not_before});
  }

  bool IsNegativeTest(int pos, SettingSet settings) const {
    const Event& e = t_.at_pos(pos);
    return e.type == EventType::kPregnancyTest && e.result == TestResult::kNegative &&
           (settings & SettingBit(e.setting)) != 0;
  }

  void ScreeningAndConfirmation() {
    const int pool = Timeline::After(t_.latest_dispense_any);
    const int n = static_cast<int>(t_.events.size());
    const SettingSet any = SettingBit(TestSetting::kLab) | SettingBit(TestSetting::kOffice) |
                           SettingBit(TestSetting::kHome);
    bool any_negative = false;
    for (int i = pool; i < n; ++i) any_negative = any_negative || IsNegativeTest(i, any);
    if (!any_negative) {
      Add("SCREENING_TEST", t_.today);
      return;
    }
    if (p_.tests.scheme != TestScheme::kScreeningConfirmationWindow) return;

    // The earliest screening test, and whether a confirmation test qualifies now (its own
    // screening long enough before it, its window still open, and, under the lockout, not
    // collected too soon after an earlier qualifying test whose window passed unused).
    std::optional<LocalDate> screening;
    bool confirmed = false;
    std::optional<LocalDate> missed_confirmation;
    std::vector<LocalDate> qualifying;  // earlier qualifying confirmation tests
    const int32_t gap = p_.tests.confirmation_min_days_after_screening;
    for (int c = pool; c < n; ++c) {
      if (IsNegativeTest(c, p_.tests.screening_settings) && !screening) screening = t_.date_at(c);
      if (!IsNegativeTest(c, p_.tests.confirmation_settings)) continue;
      bool has_screening = false;
      for (int s = pool; s < c && !has_screening; ++s) {
        has_screening =
            IsNegativeTest(s, p_.tests.screening_settings) && t_.date_at(c) - t_.date_at(s) >= gap;
      }
      if (!has_screening) continue;
      const LocalDate c_date = t_.date_at(c);
      bool locked_out = false;
      if (p_.tests.lockout) {
        for (LocalDate m : qualifying) {
          if (c_date - m >= p_.tests.window_days && c_date - m < p_.tests.lockout_min_days) {
            locked_out = true;
            if (!missed_confirmation || *missed_confirmation < m) missed_confirmation = m;
          }
        }
      }
      qualifying.push_back(c_date);
      if (locked_out) continue;
      if (t_.today - c_date < p_.tests.window_days) {
        confirmed = true;
      } else if (p_.tests.lockout) {
        missed_confirmation = t_.date_at(c);
      }
    }
    if (!screening || confirmed) return;
    LocalDate due = *screening + d_.confirmation_after_screening_days;
    if (missed_confirmation) due = std::max(due, *missed_confirmation + p_.tests.lockout_min_days);
    Add("CONFIRMATION_TEST", due, due);
  }

  void Monthly(bool can) {
    const LocalDate due = t_.date_at(t_.previous_dispense) + d_.monthly_interval_days;
    if (can && d_.pregnancy_test_monthly) Add("PREGNANCY_TEST", due);
    if (can && p_.monthly.comprehension_can_get_pregnant) Add("COMPREHENSION", due);
    CounselingRule rule =
        can ? p_.monthly.counseling_can_get_pregnant : p_.monthly.counseling_cannot_get_pregnant;
    if (rule == CounselingRule::kSincePreviousDispense) Add("COUNSELING_VISIT", due);
  }

  void LabsFollowUp() {
    const LocalDate first = t_.date_at(t_.course_dispenses.front());
    const LocalDate from = first + d_.labs_follow_up_after_first_dispense_days;
    bool tg = false, alt = false;
    for (size_t i = 0; i < t_.events.size(); ++i) {
      const Event& e = *t_.events[i];
      if (e.type != EventType::kLab || t_.dates[i] < from) continue;
      tg = tg || e.test == LabTest::kTG;
      alt = alt || e.test == LabTest::kALT;
    }
    if (!(tg && alt)) Add("LABS_FOLLOW_UP", first + d_.labs_follow_up_due_days);
  }

  void Phq9() {
    const int latest = t_.LatestOf(EventType::kPhq9);
    Add("PHQ9", latest == kNone ? t_.today : t_.date_at(latest) + d_.phq9_interval_days);
  }

  void RiskAcknowledgement(bool can) {
    bool required = can ? p_.forms.risk_acknowledgement_can_get_pregnant
                        : p_.forms.risk_acknowledgement_cannot_get_pregnant;
    if (!required) return;
    const int latest = t_.LatestOf(EventType::kRiskAcknowledgement);
    Add("RISK_ACKNOWLEDGEMENT",
        latest == kNone ? t_.today
                        : t_.date_at(latest).AddMonths(p_.forms.risk_acknowledgement_valid_months));
  }

  const Timeline& t_;
  const Program& p_;
  const ProgramDue& d_;
  std::vector<DueItem>& out_;
};

}  // namespace

void ListDue(const Timeline& t, std::vector<DueItem>& out) { DueLister(t, out).Run(); }

}  // namespace isoguard::detail
