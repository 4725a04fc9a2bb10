#include "rules/interactions.h"

#include <algorithm>

#include "core/text.h"

namespace isoguard {
namespace {

bool MatchesClass(const InteractionClass& c, std::string_view normalized_name,
                  std::string_view atc) {
  if (!atc.empty()) {
    for (const std::string& prefix : c.atc_prefixes) {
      if (atc.substr(0, prefix.size()) == prefix) return true;
    }
  }
  for (const std::string& name : c.names) {
    if (ContainsWholeWords(normalized_name, name)) return true;
  }
  return false;
}

}  // namespace

std::vector<const InteractionClass*> ClassifyMedication(const Knowledge& knowledge,
                                                        std::string_view name,
                                                        std::string_view atc) {
  std::string normalized = NormalizeMedicationName(name);
  std::string code = NormalizeAtc(atc);
  std::vector<const InteractionClass*> out;
  for (const InteractionClass& c : knowledge.interactions) {
    if (MatchesClass(c, normalized, code)) out.push_back(&c);
  }
  return out;
}

std::vector<const Event*> ActiveMedications(const std::vector<const Event*>& events) {
  std::vector<const Event*> active;
  for (const Event* e : events) {
    if (e->type != EventType::kMedication) continue;
    if (e->action == MedicationAction::kStart) {
      active.push_back(e);
      continue;
    }
    std::erase_if(active, [e](const Event* a) {
      return a->name_normalized == e->name_normalized || (!e->atc.empty() && a->atc == e->atc);
    });
  }
  return active;
}

namespace detail {
// Used by alerts.cpp: classes with at least one active medication, in knowledge order.
std::vector<std::pair<const InteractionClass*, const Event*>> ActiveInteractionClasses(
    const Knowledge& knowledge, const std::vector<const Event*>& events) {
  std::vector<std::pair<const InteractionClass*, const Event*>> out;
  std::vector<const Event*> active = ActiveMedications(events);
  if (active.empty()) return out;
  for (const InteractionClass& c : knowledge.interactions) {
    for (const Event* med : active) {
      if (MatchesClass(c, med->name_normalized, med->atc)) {
        out.emplace_back(&c, med);
        break;
      }
    }
  }
  return out;
}
}  // namespace detail

}  // namespace isoguard
