// The dose rules of docs/record-format.md: daily dose, cumulative mg and mg/kg by period of
// weight, and the projected date the cumulative target is reached.
#include <algorithm>
#include <cmath>

#include "core/text.h"
#include "rules/detail/parts.h"

namespace isoguard::detail {

std::optional<double> LatestWeightKg(const Timeline& t) {
  for (auto it = t.events.rbegin(); it != t.events.rend(); ++it) {
    if ((*it)->type == EventType::kWeight) return (*it)->kg;
  }
  return std::nullopt;
}

namespace {

struct WeightPeriod {
  LocalDate from;  // in force from this local date on
  double kg;
};

// Days in [a, b] that are not missed-dose days (missed is sorted, unique).
int32_t CountedDays(LocalDate a, LocalDate b, const std::vector<LocalDate>& missed) {
  if (b < a) return 0;
  auto lo = std::lower_bound(missed.begin(), missed.end(), a);
  auto hi = std::upper_bound(missed.begin(), missed.end(), b);
  return (b - a + 1) - static_cast<int32_t>(hi - lo);
}

}  // namespace

void ComputeDose(const Timeline& t, DoseSummary& out) {
  const Knowledge& k = t.rulebook->knowledge;
  const Patient& patient = t.record->patient;
  out.target_mg_per_kg = patient.target_mg_per_kg.value_or(k.treatment.default_target_mg_per_kg);

  std::vector<WeightPeriod> weights;
  std::vector<LocalDate> missed;
  std::vector<int> ends;  // treatment_end positions
  const int n = static_cast<int>(t.events.size());
  for (int i = 0; i < n; ++i) {
    const Event& e = t.at_pos(i);
    if (e.type == EventType::kWeight) {
      // A later record on the same day replaces the earlier one for that day.
      if (!weights.empty() && weights.back().from == t.date_at(i)) {
        weights.back().kg = e.kg;
      } else {
        weights.push_back({t.date_at(i), e.kg});
      }
    } else if (e.type == EventType::kMissedDose) {
      missed.push_back(e.date);
    } else if (e.type == EventType::kTreatmentEnd) {
      ends.push_back(i);
    }
  }
  std::sort(missed.begin(), missed.end());
  missed.erase(std::unique(missed.begin(), missed.end()), missed.end());

  // Each dispense supplies its prescription's daily dose from its date for its days' supply,
  // until a later dispense takes over, a treatment_end after it stops it at last_dose, or T.
  const size_t dispense_count = t.dispenses.size();
  for (size_t j = 0; j < dispense_count; ++j) {
    const int pos = t.dispenses[j];
    const Event& dispense = t.at_pos(pos);
    const Event& rx = t.PrescriptionOf(dispense);
    const double daily_mg = rx.DailyMg();
    const int32_t supply = dispense.days_supply > 0 ? dispense.days_supply : rx.days_supply;
    const LocalDate start = t.date_at(pos);
    LocalDate end = start + (supply - 1);
    if (j + 1 < dispense_count) end = std::min(end, t.date_at(t.dispenses[j + 1]) - 1);
    for (int e : ends) {
      if (e > pos) {
        end = std::min(end, t.at_pos(e).date);
        break;
      }
    }
    end = std::min(end, t.today);
    if (end < start) continue;

    if (weights.empty()) {
      // Without any weight the mg/kg total cannot be computed; mg still counts.
      out.cumulative_mg += daily_mg * CountedDays(start, end, missed);
      continue;
    }
    // Walk the weight periods overlapping [start, end]; before the first weight record the
    // first one applies.
    size_t w = 0;
    while (w + 1 < weights.size() && weights[w + 1].from <= start) ++w;
    LocalDate a = start;
    while (a <= end) {
      LocalDate b = end;
      if (w + 1 < weights.size()) b = std::min(end, weights[w + 1].from - 1);
      int32_t days = CountedDays(a, b, missed);
      out.cumulative_mg += daily_mg * days;
      out.cumulative_mg_per_kg += daily_mg * days / weights[w].kg;
      a = b + 1;
      ++w;
      if (w >= weights.size()) w = weights.size() - 1;
    }
  }

  // The current dose: the most recent dispensed prescription, or before any dispense the
  // considered one, over the latest weight.
  const Event* current = nullptr;
  if (!t.dispenses.empty()) {
    current = &t.PrescriptionOf(t.at_pos(t.dispenses.back()));
  } else if (t.considered != kNone) {
    current = &t.at_pos(t.considered);
  }
  std::optional<double> weight = LatestWeightKg(t);
  if (current != nullptr) out.daily_mg = current->DailyMg();
  if (out.daily_mg && weight) out.mg_per_kg_day = *out.daily_mg / *weight;

  const double low = out.target_mg_per_kg[0];
  if (out.cumulative_mg_per_kg >= low && weight) {
    out.projected_target_date = t.today;
  } else if (out.daily_mg && *out.daily_mg > 0 && weight) {
    double days = RoundHalfUp((low - out.cumulative_mg_per_kg) * *weight / *out.daily_mg, 6);
    out.projected_target_date = t.today + static_cast<int32_t>(std::ceil(days));
  }
}

}  // namespace isoguard::detail
