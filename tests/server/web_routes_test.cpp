// The two read-only routes the web app draws from: GET /v1/knowledge (thresholds, bands,
// products, serious effects, crisis lines, program windows, as loaded from knowledge/ and
// programs/) and GET /v1/dose-plan (the dose planner), over real HTTP.
#include <gtest/gtest.h>

#include <cmath>

#include "api_test_support.h"
#include "rules/dose_planner.h"

namespace isoguard::server::testing {
namespace {

class WebRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = std::make_unique<ApiWorld>(ApiBackend{"Sqlite", false});
    world_->MakeWorld();
  }
  Reply Get(const std::string& target, const std::string& who) {
    return world_->Call("GET", target, who.empty() ? "" : world_->tokens.at(who));
  }
  std::unique_ptr<ApiWorld> world_;
};

double Num(const json::value& v) { return v.to_number<double>(); }
std::string Str(const json::value& v) { return std::string(v.as_string()); }

TEST_F(WebRoutesTest, KnowledgeIsTheRulebooksOwn) {
  EXPECT_EQ(Get("/v1/knowledge", "").status, 401);
  auto r = Get("/v1/knowledge", "dr-a");
  ASSERT_EQ(r.status, 200) << r.raw.body;
  const Knowledge& k = TestRulebook().knowledge;
  const auto& o = r.obj();
  EXPECT_EQ(Num(o.at("target_mg_per_kg").at(0)), k.treatment.default_target_mg_per_kg[0]);
  EXPECT_EQ(Num(o.at("target_mg_per_kg").at(1)), k.treatment.default_target_mg_per_kg[1]);

  const auto& families = o.at("lab_families").as_array();
  ASSERT_EQ(families.size(), k.lab_families.size());
  for (size_t i = 0; i < families.size(); ++i) {
    const LabFamily& f = k.lab_families[i];
    const auto& j = families[i].as_object();
    EXPECT_EQ(Str(j.at("name")), f.name);
    EXPECT_EQ(Num(j.at("warning").at("value")), f.warning.value);
    EXPECT_EQ(Num(j.at("critical").at("value")), f.critical.value);
    EXPECT_EQ(Str(j.at("warning").at("code")), f.warning_code);
    EXPECT_EQ(j.at("critical").at("compare"),
              f.critical.compare == Comparison::kAtLeast ? "at_least" : "above");
    EXPECT_EQ(j.at("relative_to_uln"), f.relative_to_uln);
  }
  EXPECT_EQ(Num(o.at("phq9").at("severe_min_total")), k.mood.severe_min_total);
  EXPECT_EQ(Num(o.at("phq9").at("self_harm_item")), k.mood.self_harm_item);
  EXPECT_EQ(Num(o.at("storage").at("max_celsius")), k.safety.storage_max_celsius);
  EXPECT_EQ(o.at("crisis").as_array().size(), k.safety.crisis.size());
  ASSERT_EQ(o.at("serious_effects").as_array().size(), k.safety.serious_effects.size());
  EXPECT_EQ(Str(o.at("serious_effects").at(0).at("title")), k.safety.serious_effects[0].title);
  const auto& programs = o.at("programs").as_array();
  ASSERT_EQ(programs.size(), TestRulebook().programs.size());
  for (size_t i = 0; i < programs.size(); ++i) {
    const Program& p = TestRulebook().programs[i];
    EXPECT_EQ(Str(programs[i].at("id")), p.id);
    EXPECT_EQ(Num(programs[i].at("pregnancy_test_window_days")), p.tests.window_days);
    EXPECT_EQ(Num(programs[i].at("no_blood_donation_days")), p.due.no_blood_donation_days);
  }
  // Readable by every role: it holds no patient data.
  EXPECT_EQ(Get("/v1/knowledge", "ph-a").status, 200);
}

TEST_F(WebRoutesTest, DosePlanIsThePlannersAnswer) {
  auto r = Get("/v1/dose-plan?product=absorica&weight_kg=64.5&mg_per_kg_day=0.75", "dr-a");
  ASSERT_EQ(r.status, 200) << r.raw.body;
  DosePlanRequest request;
  request.product = Product::kAbsorica;
  request.weight_kg = 64.5;
  request.mg_per_kg_day = 0.75;
  auto plan = PlanDose(TestRulebook().knowledge, request);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(json::parse(r.raw.body), json::parse(DosePlanToJson(*plan, Product::kAbsorica)));
  // generic is the default product.
  auto generic = Get("/v1/dose-plan?weight_kg=60&mg_per_kg_day=0.5", "dr-a");
  ASSERT_EQ(generic.status, 200);
  EXPECT_EQ(generic.str("product"), "generic");
}

TEST_F(WebRoutesTest, DosePlanErrorsNameTheParameter) {
  struct Case {
    std::string query;
    std::string field;
  };
  for (const Case& c : std::vector<Case>{
           {"weight_kg=0&mg_per_kg_day=0.5", "weight_kg"},
           {"weight_kg=500.01&mg_per_kg_day=0.5", "weight_kg"},
           {"weight_kg=abc&mg_per_kg_day=0.5", "weight_kg"},
           {"mg_per_kg_day=0.5", "weight_kg"},
           {"weight_kg=60&mg_per_kg_day=9", "mg_per_kg_day"},
           {"weight_kg=60", "mg_per_kg_day"},
           {"product=tretinoin&weight_kg=60&mg_per_kg_day=0.5", "product"},
           {"weight_kg=" + std::string(40, '1') + "&mg_per_kg_day=0.5", "weight_kg"},
       }) {
    auto r = Get("/v1/dose-plan?" + c.query, "dr-a");
    EXPECT_EQ(r.status, 400) << c.query;
    EXPECT_EQ(r.str("field"), c.field) << c.query << " " << r.raw.body;
  }
  // At the weight limit, and one past it (above).
  EXPECT_EQ(Get("/v1/dose-plan?weight_kg=500&mg_per_kg_day=0.5", "dr-a").status, 200);
  EXPECT_EQ(Get("/v1/dose-plan?weight_kg=60&mg_per_kg_day=0.5", "").status, 401);
}

}  // namespace
}  // namespace isoguard::server::testing
