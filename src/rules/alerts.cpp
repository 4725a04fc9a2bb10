// "How alerts are raised" (docs/record-format.md). Alerts never change the decision.
#include <algorithm>

#include "core/text.h"
#include "rules/detail/parts.h"
#include "rules/interactions.h"

namespace isoguard::detail {

std::vector<std::pair<const InteractionClass*, const Event*>> ActiveInteractionClasses(
    const Knowledge& knowledge, const std::vector<const Event*>& events);

bool BaselineLabsMissing(const Timeline& t) {
  const LocalDate since = t.today - t.rulebook->knowledge.treatment.baseline_labs_lookback_days;
  bool tg = false, alt = false;
  for (size_t i = 0; i < t.events.size(); ++i) {
    const Event& e = *t.events[i];
    if (e.type != EventType::kLab || t.dates[i] < since) continue;
    tg = tg || e.test == LabTest::kTG;
    alt = alt || e.test == LabTest::kALT;
  }
  return !(tg && alt);
}

namespace {

class AlertRaiser {
 public:
  AlertRaiser(const Timeline& t, std::vector<Alert>& out)
      : t_(t), k_(t.rulebook->knowledge), out_(out) {}

  void Run() {
    Labs();
    Mood();
    Pregnancy();
    Interactions();
    Age();
    BaselineLabs();
    DoseRange();
    SecondCourse();
    ProductSwitch();
    SeriousAdverseEvent();
    // Critical first, then warnings, then information; the procedure's order within each.
    std::stable_sort(out_.begin(), out_.end(), [](const Alert& a, const Alert& b) {
      return static_cast<int>(a.severity) > static_cast<int>(b.severity);
    });
  }

 private:
  void Raise(std::string_view code, Severity severity, std::string message,
             std::string_view cls = {}) {
    out_.push_back(Alert{code, severity, std::move(message), cls});
  }

  void Labs() {
    // Only the latest result of each test counts.
    std::array<int, kLabTestCount> latest;
    latest.fill(kNone);
    for (int i = 0; i < static_cast<int>(t_.events.size()); ++i) {
      const Event& e = t_.at_pos(i);
      if (e.type == EventType::kLab) latest[static_cast<size_t>(e.test)] = i;
    }
    for (const LabFamily& family : k_.lab_families) {
      // The family is judged on its highest value (in mg/dL, or as a multiple of the ULN).
      double worst = -1;
      int worst_pos = kNone;
      for (LabTest test : family.tests) {
        int pos = latest[static_cast<size_t>(test)];
        if (pos == kNone) continue;
        const Event& e = t_.at_pos(pos);
        double v = e.value;
        if (family.relative_to_uln) {
          v = e.value / (e.uln > 0 ? e.uln : family.default_uln);
        } else if (e.unit == LabUnit::kMmolPerL && family.mmol_to_mg_dl) {
          v = e.value * *family.mmol_to_mg_dl;
        }
        if (v > worst) {
          worst = v;
          worst_pos = pos;
        }
      }
      if (worst_pos == kNone) continue;
      const bool critical = family.critical.Exceeded(worst);
      if (!critical && !family.warning.Exceeded(worst)) continue;
      const Event& e = t_.at_pos(worst_pos);
      std::string what = std::string(ToString(e.test)) + " " + FormatNumber(e.value) + " " +
                         std::string(ToString(e.unit)) + " on " + t_.date_at(worst_pos).ToString();
      if (family.relative_to_uln) {
        what += " (" + FormatNumber(RoundHalfUp(worst, 2)) + " x ULN " +
                FormatNumber(e.uln > 0 ? e.uln : family.default_uln) + ")";
      } else if (e.unit == LabUnit::kMmolPerL) {
        what += " (" + FormatNumber(RoundHalfUp(worst, 1)) + " mg/dL)";
      }
      if (critical) {
        Raise(family.critical_code, Severity::kCritical,
              "Critical " + family.name + ": " + what + "; " + family.critical_advice);
      } else {
        Raise(family.warning_code, Severity::kWarning,
              "High " + family.name + ": " + what + "; " + family.warning_advice);
      }
    }
  }

  void Mood() {
    const int latest = t_.LatestOf(EventType::kPhq9);
    if (latest == kNone) return;
    const Event& e = t_.at_pos(latest);
    int total = 0;
    for (uint8_t item : e.phq9_items) total += item;
    const std::string when = " (PHQ-9 on " + t_.date_at(latest).ToString() + ")";
    if (total >= k_.mood.severe_min_total) {
      Raise("PHQ9_SEVERE", Severity::kCritical,
            "Severe depressive symptoms: PHQ-9 total " + std::to_string(total) + when +
                "; assess before continuing isotretinoin.");
    } else if (total >= k_.mood.moderate_min_total) {
      Raise("PHQ9_MODERATE", Severity::kWarning,
            "Moderate depressive symptoms: PHQ-9 total " + std::to_string(total) + when +
                "; review mood and consider referral.");
    }
    int item = e.phq9_items[static_cast<size_t>(k_.mood.self_harm_item - 1)];
    if (item > 0) {
      Raise("SUICIDAL_IDEATION", Severity::kCritical,
            "Thoughts of self-harm reported (item " + std::to_string(k_.mood.self_harm_item) +
                " scored " + std::to_string(item) + when + "); same-day clinical follow-up.");
    }
  }

  void Pregnancy() {
    for (int i = static_cast<int>(t_.events.size()) - 1; i >= 0; --i) {
      const Event& e = t_.at_pos(i);
      if (e.type != EventType::kPregnancyTest || e.result == TestResult::kInvalid) continue;
      if (e.result == TestResult::kPositive) {
        Raise("PREGNANCY", Severity::kCritical,
              "Positive pregnancy test collected " + t_.date_at(i).ToString() +
                  ": stop isotretinoin and refer for evaluation and counselling.");
      }
      return;
    }
  }

  void Interactions() {
    for (const auto& [cls, med] : ActiveInteractionClasses(k_, t_.events)) {
      Raise("INTERACTION", cls->severity,
            med->name + " (" + cls->title + ") with isotretinoin: " + cls->why + ".", cls->code);
    }
  }

  void Age() {
    int age = t_.record->patient.birth_date.YearsUntil(t_.today);
    if (age < k_.treatment.minimum_age_years) {
      Raise("UNDER_MINIMUM_AGE", Severity::kWarning,
            "The patient is " + std::to_string(age) + "; isotretinoin is indicated from age " +
                std::to_string(k_.treatment.minimum_age_years) + ".");
    }
  }

  void BaselineLabs() {
    if (t_.considered == kNone || !t_.first_prescription) return;
    if (BaselineLabsMissing(t_)) {
      Raise("BASELINE_LABS_MISSING", Severity::kWarning,
            "No triglyceride and ALT results from the last " +
                std::to_string(k_.treatment.baseline_labs_lookback_days) +
                " days: baseline fasting lipids and liver tests are needed before starting.");
    }
  }

  void DoseRange() {
    if (t_.considered == kNone) return;
    std::optional<double> weight = LatestWeightKg(t_);
    if (!weight) return;
    const Event& rx = t_.at_pos(t_.considered);
    const ProductInfo& product = k_.product(rx.product);
    double mg_per_kg = RoundHalfUp(rx.DailyMg() / *weight, 2);
    std::string what = FormatNumber(rx.DailyMg()) + " mg/day at " + FormatNumber(*weight) +
                       " kg is " + FormatNumber(mg_per_kg) + " mg/kg/day";
    if (mg_per_kg > product.max_mg_per_kg_day) {
      Raise("DOSE_OUT_OF_RANGE", Severity::kCritical,
            what + ", above the maximum of " + FormatNumber(product.max_mg_per_kg_day) + " for " +
                product.name + ".");
    } else if (mg_per_kg < product.usual_min_mg_per_kg_day ||
               mg_per_kg > product.usual_max_mg_per_kg_day) {
      Raise("DOSE_OUT_OF_RANGE", Severity::kWarning,
            what + ", outside the usual " + FormatNumber(product.usual_min_mg_per_kg_day) + "-" +
                FormatNumber(product.usual_max_mg_per_kg_day) + " for " + product.name + ".");
    }
  }

  void SecondCourse() {
    if (t_.course_dispenses.empty() || t_.latest_treatment_end == kNone) return;
    LocalDate last_dose = t_.at_pos(t_.latest_treatment_end).date;
    LocalDate first = t_.date_at(t_.course_dispenses.front());
    LocalDate allowed = last_dose.AddMonths(k_.treatment.second_course_min_months);
    if (first < allowed) {
      Raise("SECOND_COURSE_TOO_SOON", Severity::kWarning,
            "This course started " + first.ToString() + ", less than " +
                std::to_string(k_.treatment.second_course_min_months) +
                " months after the last dose of the previous course (" + last_dose.ToString() +
                ").");
    }
  }

  void ProductSwitch() {
    if (t_.considered == kNone || t_.first_prescription) return;
    const ProductInfo& now = k_.product(t_.at_pos(t_.considered).product);
    const ProductInfo& before =
        k_.product(t_.PrescriptionOf(t_.at_pos(t_.previous_dispense)).product);
    if (now.substitution_group != before.substitution_group) {
      Raise("PRODUCT_SWITCH", Severity::kWarning,
            "Switching from " + before.name + " to " + now.name +
                ": the products are not substitutable mg for mg; recalculate the dose.");
    }
  }

  void SeriousAdverseEvent() {
    const LocalDate since = t_.today - k_.treatment.serious_adverse_event_lookback_days;
    for (int i = static_cast<int>(t_.events.size()) - 1; i >= 0; --i) {
      const Event& e = t_.at_pos(i);
      if (e.type != EventType::kAdverseEvent || !e.flag || t_.date_at(i) < since) continue;
      Raise("SERIOUS_ADVERSE_EVENT", Severity::kCritical,
            "Serious adverse event reported " + t_.date_at(i).ToString() + ": " + e.name +
                "; review before dispensing.");
      return;
    }
  }

  const Timeline& t_;
  const Knowledge& k_;
  std::vector<Alert>& out_;
};

}  // namespace

void RaiseAlerts(const Timeline& t, std::vector<Alert>& out) { AlertRaiser(t, out).Run(); }

}  // namespace isoguard::detail
