// The evaluation's view of a record at time T: the events that count (at or before T, not
// withdrawn by an entered_in_error), their local dates in the effective zone, and the course
// structure every rule refers to. Built once per evaluation; rules read it.
//
// Positions are indexes into `events`; "since the previous dispense" is "position > the
// dispense's position" (strictly after it in the time-ordered events).
#pragma once

#include <string_view>
#include <vector>

#include "domain/record.h"
#include "rules/rulebook.h"

namespace isoguard::detail {

inline constexpr int kNone = -1;

struct Timeline {
  const Rulebook* rulebook = nullptr;
  const Record* record = nullptr;
  const Program* program = nullptr;
  Instant at{};     // T
  LocalDate today;  // T's local date in the effective zone

  std::vector<const Event*> events;  // counted events, time-ordered
  std::vector<LocalDate> dates;      // local date of each counted event

  Category category = Category::kCanGetPregnant;  // at T

  // Prescriptions by id (sorted by id) and whether each is cancelled / dispensed.
  struct PrescriptionInfo {
    std::string_view id;
    int pos = kNone;
    bool cancelled = false;
    bool dispensed = false;
  };
  std::vector<PrescriptionInfo> prescriptions;

  std::vector<int> dispenses;         // every counted dispense (its prescription counts too)
  std::vector<int> course_dispenses;  // the current course's
  int first_enrollment = kNone;
  int latest_treatment_end = kNone;
  int previous_dispense = kNone;  // the course's latest dispense
  int latest_dispense_any = kNone;

  int considered = kNone;  // the prescription considered, when there is one
  bool first_prescription = true;

  // Back to the empty state, keeping the vectors' capacity.
  void Reset() {
    events.clear();
    dates.clear();
    prescriptions.clear();
    dispenses.clear();
    course_dispenses.clear();
    first_enrollment = latest_treatment_end = previous_dispense = latest_dispense_any = kNone;
    considered = kNone;
    first_prescription = true;
  }

  const Event& at_pos(int pos) const { return *events[static_cast<size_t>(pos)]; }
  LocalDate date_at(int pos) const { return dates[static_cast<size_t>(pos)]; }
  const PrescriptionInfo* FindPrescription(std::string_view id) const;
  // The prescription event a dispense names (it always exists for a counted dispense).
  const Event& PrescriptionOf(const Event& dispense) const;
  // The position of the latest counted event of a type, or kNone.
  int LatestOf(EventType type) const {
    for (int i = static_cast<int>(events.size()) - 1; i >= 0; --i) {
      if (events[static_cast<size_t>(i)]->type == type) return i;
    }
    return kNone;
  }
  bool CanGetPregnant() const { return category == Category::kCanGetPregnant; }
  // The first position strictly after `pos` (0 when pos is kNone).
  static int After(int pos) { return pos == kNone ? 0 : pos + 1; }
};

}  // namespace isoguard::detail
