#include "rules/dose_planner.h"

#include <cmath>

#include "core/json_writer.h"
#include "core/text.h"
#include "domain/record_parser.h"

namespace isoguard {
namespace {

constexpr double kEpsilon = 1e-9;

struct DoseOption {
  double mg = 0;
  std::vector<double> capsules;  // one or two, larger first
};

struct Way {
  std::vector<DoseOption> doses;  // one (once daily) or two
  double total = 0;
  size_t capsule_count = 0;
};

// Ranks two ways to reach the same total: two doses before one, doses that differ least,
// then fewest capsules.
bool BetterWay(const Way& a, const Way& b) {
  if (a.doses.size() != b.doses.size()) return a.doses.size() > b.doses.size();
  auto spread = [](const Way& w) {
    return w.doses.size() == 2 ? std::fabs(w.doses[0].mg - w.doses[1].mg) : 0.0;
  };
  if (std::fabs(spread(a) - spread(b)) > kEpsilon) return spread(a) < spread(b);
  return a.capsule_count < b.capsule_count;
}

}  // namespace

Result<DosePlan> PlanDose(const Knowledge& knowledge, const DosePlanRequest& request) {
  const ProductInfo& product = knowledge.product(request.product);
  // The record format's weight limit applies to the planner as well.
  const double max_weight_kg = RecordLimits{}.max_kg;
  if (!(request.weight_kg > 0 && request.weight_kg <= max_weight_kg)) {
    return Error::BadInput("must be in (0, " + FormatNumber(max_weight_kg) + "] kg, got " +
                               FormatNumber(request.weight_kg),
                           "--weight-kg");
  }
  if (!(request.mg_per_kg_day > 0 && request.mg_per_kg_day <= product.max_mg_per_kg_day)) {
    return Error::BadInput("must be in (0, " + FormatNumber(product.max_mg_per_kg_day) +
                               "] mg/kg/day (the maximum for " + product.name + "), got " +
                               FormatNumber(request.mg_per_kg_day),
                           "--mg-per-kg");
  }
  double low =
      request.target_low_mg_per_kg.value_or(knowledge.treatment.default_target_mg_per_kg[0]);
  if (!(low > 0 && low <= 1000)) {
    return Error::BadInput("must be in (0, 1000] mg/kg, got " + FormatNumber(low),
                           "--target-mg-per-kg");
  }

  const std::vector<double>& strengths = product.strengths_mg;
  // Each dose is one or two capsules; for each amount keep the way with fewest capsules.
  std::vector<DoseOption> options;
  auto add_option = [&options](DoseOption o) {
    for (DoseOption& existing : options) {
      if (std::fabs(existing.mg - o.mg) < kEpsilon) {
        if (o.capsules.size() < existing.capsules.size()) existing = std::move(o);
        return;
      }
    }
    options.push_back(std::move(o));
  };
  for (size_t i = 0; i < strengths.size(); ++i) {
    add_option({strengths[i], {strengths[i]}});
    for (size_t j = 0; j <= i; ++j) {
      add_option({strengths[i] + strengths[j], {strengths[i], strengths[j]}});
    }
  }

  const double target = request.weight_kg * request.mg_per_kg_day;
  std::vector<Way> ways;
  for (const DoseOption& a : options) {
    for (const DoseOption& b : options) {
      if (b.mg > a.mg + kEpsilon) continue;  // larger dose first
      ways.push_back({{a, b}, a.mg + b.mg, a.capsules.size() + b.capsules.size()});
    }
  }
  // A single capsule once a day is a candidate only for small targets.
  if (!strengths.empty() && target < 2 * strengths.front() - kEpsilon) {
    for (double s : strengths) ways.push_back({{DoseOption{s, {s}}}, s, 1});
  }

  const Way* best = nullptr;
  for (const Way& w : ways) {
    if (best == nullptr) {
      best = &w;
      continue;
    }
    double dw = std::fabs(w.total - target), db = std::fabs(best->total - target);
    if (dw < db - kEpsilon) {
      best = &w;
    } else if (std::fabs(dw - db) <= kEpsilon) {
      if (w.total < best->total - kEpsilon) {
        best = &w;  // ties: the lower total
      } else if (std::fabs(w.total - best->total) <= kEpsilon && BetterWay(w, *best)) {
        best = &w;
      }
    }
  }

  DosePlan plan;
  for (const DoseOption& d : best->doses) {
    plan.doses_mg.push_back(d.mg);
    plan.capsules.push_back(d.capsules);
  }
  plan.daily_mg = best->total;
  plan.mg_per_kg_day = plan.daily_mg / request.weight_kg;
  plan.take_with_food = product.take_with_food;
  plan.target_low_mg_per_kg = low;
  plan.days_to_target =
      static_cast<int32_t>(std::ceil(RoundHalfUp(low * request.weight_kg / plan.daily_mg, 6)));
  return plan;
}

std::string DosePlanToJson(const DosePlan& plan, Product product) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  w.Key("product").String(ToString(product));
  w.Key("doses_mg").BeginArray();
  for (double d : plan.doses_mg) w.Number(d);
  w.EndArray();
  w.Key("capsules").BeginArray();
  for (const auto& dose : plan.capsules) {
    w.BeginArray();
    for (double c : dose) w.Number(c);
    w.EndArray();
  }
  w.EndArray();
  w.Key("daily_mg").Number(plan.daily_mg);
  w.Key("mg_per_kg_day").Number(RoundHalfUp(plan.mg_per_kg_day, 2));
  w.Key("take_with_food").Bool(plan.take_with_food);
  w.Key("target_mg_per_kg").Number(plan.target_low_mg_per_kg);
  w.Key("days_to_target").Integer(plan.days_to_target);
  w.EndObject();
  return out;
}

}  // namespace isoguard
