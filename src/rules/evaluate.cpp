#include "rules/evaluate.h"

#include <algorithm>

#include "rules/detail/parts.h"
#include "rules/detail/timeline.h"

namespace isoguard {

std::string_view ToString(TreatmentState s) {
  switch (s) {
    case TreatmentState::kNotStarted:
      return "not_started";
    case TreatmentState::kInTreatment:
      return "in_treatment";
    case TreatmentState::kEnded:
      return "ended";
  }
  return "?";
}

namespace detail {

const Timeline::PrescriptionInfo* Timeline::FindPrescription(std::string_view id) const {
  auto it =
      std::lower_bound(prescriptions.begin(), prescriptions.end(), id,
                       [](const PrescriptionInfo& p, std::string_view x) { return p.id < x; });
  return it != prescriptions.end() && it->id == id ? &*it : nullptr;
}

const Event& Timeline::PrescriptionOf(const Event& dispense) const {
  return at_pos(FindPrescription(dispense.ref)->pos);
}

namespace {

// The program in force on T's local date in the jurisdiction's own zone; before the
// jurisdiction's first program, its earliest.
const Program* SelectProgram(const Rulebook& rulebook, Jurisdiction jurisdiction, Instant at) {
  const Program* earliest = nullptr;
  const Program* chosen = nullptr;
  for (const Program& p : rulebook.programs) {
    if (p.jurisdiction != jurisdiction) continue;
    if (earliest == nullptr || p.in_force_from < earliest->in_force_from) earliest = &p;
    ZoneCursor cursor(p.zone);
    LocalDate day = cursor.LocalDateOf(at);
    bool in_force = p.in_force_from <= day && (!p.in_force_until || day <= *p.in_force_until);
    if (in_force && (chosen == nullptr || chosen->in_force_from < p.in_force_from)) chosen = &p;
  }
  return chosen != nullptr ? chosen : earliest;
}

// Ids withdrawn by entered_in_error events at or before T. A correction withdrawn by a
// correction in force is treated as never recorded, so its own target stands again: a chain
// c3 -> c2 -> c1 -> w leaves c1 in force and w withdrawn. Corrections that withdraw one another
// in a cycle, where neither reading is grounded, withdraw nothing.
std::vector<std::string_view> WithdrawnIds(const Record& record, Instant at) {
  std::vector<const Event*> corrections;
  for (const Event& e : record.events) {
    if (e.at > at) break;
    if (e.type == EventType::kEnteredInError) corrections.push_back(&e);
  }
  std::vector<std::string_view> withdrawn;
  if (corrections.empty()) return withdrawn;
  // Each correction names one event; `target[j]` is the correction j names, if it names one.
  const size_t n = corrections.size();
  constexpr size_t kNoCorrection = static_cast<size_t>(-1);
  std::vector<std::pair<std::string_view, size_t>> by_id;
  by_id.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (!corrections[i]->id.empty()) by_id.emplace_back(corrections[i]->id, i);
  }
  std::sort(by_id.begin(), by_id.end());
  std::vector<size_t> target(n, kNoCorrection);
  std::vector<size_t> targeters(n, 0);  // corrections naming it, not yet known withdrawn
  for (size_t j = 0; j < n; ++j) {
    auto it = std::lower_bound(by_id.begin(), by_id.end(),
                               std::pair<std::string_view, size_t>(corrections[j]->ref, 0));
    if (it != by_id.end() && it->first == corrections[j]->ref) {
      target[j] = it->second;
      ++targeters[it->second];
    }
  }
  // 1: in force, -1: withdrawn, 0: not settled. A correction is in force once every correction
  // naming it is withdrawn, and withdrawn once one in force names it: settled from the
  // corrections no other names, in one pass over the chains.
  std::vector<int> state(n, 0);
  std::vector<size_t> settled;
  for (size_t i = 0; i < n; ++i) {
    if (targeters[i] == 0) {
      state[i] = 1;
      settled.push_back(i);
    }
  }
  while (!settled.empty()) {
    const size_t i = settled.back();
    settled.pop_back();
    const size_t t = target[i];
    if (t == kNoCorrection || state[t] != 0) continue;
    state[t] = -1;
    const size_t u = target[t];
    if (u != kNoCorrection && state[u] == 0 && --targeters[u] == 0) {
      state[u] = 1;
      settled.push_back(u);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (state[i] == 1) withdrawn.push_back(corrections[i]->ref);
  }
  std::sort(withdrawn.begin(), withdrawn.end());
  return withdrawn;
}

void BuildTimeline(const Rulebook& rulebook, const Record& record, const Program& program,
                   Instant at, ZoneCursor& cursor, Timeline& t) {
  t.rulebook = &rulebook;
  t.record = &record;
  t.program = &program;
  t.at = at;
  t.today = cursor.LocalDateOf(at);
  t.category = record.patient.category;

  std::vector<std::string_view> withdrawn = WithdrawnIds(record, at);
  t.events.reserve(record.events.size());
  t.dates.reserve(record.events.size());
  for (const Event& e : record.events) {
    if (e.at > at) break;
    if (e.type == EventType::kEnteredInError) continue;
    if (!withdrawn.empty() && !e.id.empty() &&
        std::binary_search(withdrawn.begin(), withdrawn.end(), std::string_view(e.id))) {
      continue;
    }
    t.events.push_back(&e);
    t.dates.push_back(cursor.LocalDateOf(e.at));
  }

  const int n = static_cast<int>(t.events.size());
  for (int i = 0; i < n; ++i) {
    const Event& e = t.at_pos(i);
    if (e.type == EventType::kPrescription) {
      t.prescriptions.push_back({e.id, i, false, false});
    }
  }
  std::sort(t.prescriptions.begin(), t.prescriptions.end(),
            [](const auto& a, const auto& b) { return a.id < b.id; });

  for (int i = 0; i < n; ++i) {
    const Event& e = t.at_pos(i);
    switch (e.type) {
      case EventType::kCategoryChange:
        t.category = e.category;
        break;
      case EventType::kEnrollment:
        if (t.first_enrollment == kNone) t.first_enrollment = i;
        break;
      case EventType::kTreatmentEnd:
        t.latest_treatment_end = i;
        break;
      case EventType::kPrescriptionCancel: {
        auto* p = const_cast<Timeline::PrescriptionInfo*>(t.FindPrescription(e.ref));
        if (p != nullptr) p->cancelled = true;
        break;
      }
      case EventType::kDispense: {
        // A dispense whose prescription was withdrawn — entered in error, or cancelled before
        // the dispense — is ignored; a prescription cancelled later keeps its dispenses. A
        // dispense timed before its own prescription (clocks apart) still counts.
        auto* p = const_cast<Timeline::PrescriptionInfo*>(t.FindPrescription(e.ref));
        if (p == nullptr || p->cancelled) break;
        p->dispensed = true;
        t.dispenses.push_back(i);
        break;
      }
      default:
        break;
    }
  }
  for (int d : t.dispenses) {
    if (d > t.first_enrollment && d > t.latest_treatment_end) t.course_dispenses.push_back(d);
  }
  if (!t.dispenses.empty()) t.latest_dispense_any = t.dispenses.back();
  if (!t.course_dispenses.empty()) t.previous_dispense = t.course_dispenses.back();
  t.first_prescription = t.course_dispenses.empty();
}

// Which prescription is considered: --prescription (if present at T and not cancelled), else
// the most recent one neither dispensed nor cancelled.
void ChoosePrescription(const EvaluateOptions& options, Timeline& t) {
  if (options.prescription) {
    const auto* p = t.FindPrescription(*options.prescription);
    if (p != nullptr && !p->cancelled) t.considered = p->pos;
    return;
  }
  for (const auto& p : t.prescriptions) {
    if (p.cancelled || p.dispensed) continue;
    if (t.considered == kNone || p.pos > t.considered) t.considered = p.pos;
  }
}

}  // namespace
}  // namespace detail

Result<Evaluation> Evaluate(const Rulebook& rulebook, const Record& record,
                            const EvaluateOptions& options) {
  const Program* program = nullptr;
  if (options.program_id) {
    program = rulebook.FindProgram(*options.program_id);
    if (program == nullptr) {
      return Error::NotFound("unknown program '" + *options.program_id + "'", "--program");
    }
  } else {
    program = detail::SelectProgram(rulebook, record.patient.jurisdiction, options.at);
    if (program == nullptr) {
      return Error::NotFound("no program is defined for jurisdiction " +
                                 std::string(ToString(record.patient.jurisdiction)),
                             "patient.jurisdiction");
    }
  }

  Evaluation ev;
  ev.program = program;
  ev.zone = program->zone;
  if (!record.patient.time_zone.empty()) {
    auto zone = Zone::Locate(record.patient.time_zone);
    if (!zone.ok()) return Error::BadInput(zone.error().message, "patient.time_zone");
    ev.zone = *zone;
  }
  ZoneCursor cursor(ev.zone);

  // Each thread reuses one timeline: its vectors keep their capacity from one evaluation to
  // the next, so a steady stream of evaluations allocates almost nothing for it.
  thread_local detail::Timeline t;
  t.Reset();
  detail::BuildTimeline(rulebook, record, *program, options.at, cursor, t);
  detail::ChoosePrescription(options, t);
  ev.category = t.category;
  if (!t.course_dispenses.empty()) {
    ev.state = TreatmentState::kInTreatment;
  } else if (t.latest_treatment_end != detail::kNone) {
    ev.state = TreatmentState::kEnded;
  }

  detail::AuthorizePrescription(t, cursor, ev.authorization);

  // Which pregnancy test qualified each dispense of the course: the latest negative test
  // after the dispense before it, of any course (a test qualifies one prescription only).
  int from = 0;
  if (!t.course_dispenses.empty()) {
    for (int d : t.dispenses) {
      if (d < t.course_dispenses.front()) from = d + 1;
    }
  }
  for (int d : t.course_dispenses) {
    CourseDispense cd;
    const Event& dispense = t.at_pos(d);
    cd.prescription = dispense.ref;
    cd.date = t.date_at(d);
    if (t.CanGetPregnant()) {
      for (int i = from; i < d; ++i) {
        const Event& e = t.at_pos(i);
        if (e.type == EventType::kPregnancyTest && e.result == TestResult::kNegative) {
          cd.qualifying_test = &e;
        }
      }
    }
    from = d + 1;
    ev.course_dispenses.push_back(std::move(cd));
  }

  detail::ComputeDose(t, ev.dose);
  detail::RaiseAlerts(t, ev.alerts);
  detail::ListDue(t, ev.due);
  return ev;
}

}  // namespace isoguard
