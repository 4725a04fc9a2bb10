// The dose planner of `isoguard dose`: real capsule strengths of the product, two divided
// doses, the reachable daily total nearest the target (docs/record-format.md, "isoguard dose").
#pragma once

#include <string>
#include <vector>

#include "core/result.h"
#include "rules/rulebook.h"

namespace isoguard {

struct DosePlanRequest {
  double weight_kg = 0;
  double mg_per_kg_day = 0;
  Product product = Product::kGeneric;
  std::optional<double> target_low_mg_per_kg;  // default: the knowledge's target low
};

struct DosePlan {
  std::vector<double> doses_mg;               // larger first
  std::vector<std::vector<double>> capsules;  // strengths per dose, larger first
  double daily_mg = 0;
  double mg_per_kg_day = 0;
  bool take_with_food = true;
  double target_low_mg_per_kg = 0;
  int32_t days_to_target = 0;
};

// kBadInput for out-of-range numbers (the field names the option).
Result<DosePlan> PlanDose(const Knowledge& knowledge, const DosePlanRequest& request);
std::string DosePlanToJson(const DosePlan& plan, Product product);

}  // namespace isoguard
