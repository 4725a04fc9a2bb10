// Interaction checks: which knowledge classes a medication belongs to, and which classes have
// an active medication in a record (started and not stopped since).
#pragma once

#include <string_view>
#include <vector>

#include "domain/record.h"
#include "rules/rulebook.h"

namespace isoguard {

// The classes a medication belongs to: by ATC prefix, or by a name or synonym of the class
// occurring as whole words in the medication's name (case-insensitive).
std::vector<const InteractionClass*> ClassifyMedication(const Knowledge& knowledge,
                                                        std::string_view name,
                                                        std::string_view atc);

// Medications active at the end of `events` (time-ordered): from a `start` until a later
// `stop` of the same normalized name or the same ATC code.
std::vector<const Event*> ActiveMedications(const std::vector<const Event*>& events);

}  // namespace isoguard
