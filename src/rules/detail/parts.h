// The parts of an evaluation after the timeline is built (internal to src/rules).
#pragma once

#include <vector>

#include "core/time.h"
#include "rules/detail/timeline.h"
#include "rules/evaluate.h"

namespace isoguard::detail {

// "How an authorization is decided": the decision, every reason, dispense_by.
void AuthorizePrescription(const Timeline& t, ZoneCursor& cursor, Authorization& out);
void ComputeDose(const Timeline& t, DoseSummary& out);
void RaiseAlerts(const Timeline& t, std::vector<Alert>& out);
void ListDue(const Timeline& t, std::vector<DueItem>& out);

// Whether the first prescription lacks a TG or an ALT result in the lookback (alert and due).
bool BaselineLabsMissing(const Timeline& t);
// Weight in kg of the latest weight record, when there is one.
std::optional<double> LatestWeightKg(const Timeline& t);

}  // namespace isoguard::detail
