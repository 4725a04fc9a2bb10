// knowledge/fhir.toml as the FHIR facade reads it: every code it needs is there, and a file
// that lacks one is refused naming the key.
#include "fhir/fhir_knowledge.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "../store/store_test_support.h"

namespace isoguard::fhir {
namespace {

std::string ShippedFile() {
  std::ifstream in(std::string(ISOGUARD_SOURCE_DIR) + "/knowledge/fhir.toml");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Result<FhirKnowledge> LoadText(const std::string& text) {
  static store::testing::TempDir dir;
  std::filesystem::create_directories(dir.path() / "knowledge");
  std::ofstream(dir.path() / "knowledge" / "fhir.toml") << text;
  return LoadFhirKnowledge(dir.path());
}

TEST(FhirKnowledge, TheShippedFileHasEveryCode) {
  auto k = LoadFhirKnowledge(ISOGUARD_SOURCE_DIR);
  ASSERT_TRUE(k.ok()) << k.error().ToString();
  for (std::string_view test : {"weight", "ALT", "AST", "TG", "TC", "HDL", "LDL"}) {
    EXPECT_NE(k->FindObservation(test), nullptr) << test;
  }
  EXPECT_EQ(k->FindObservationByLoinc("29463-7")->name, "weight");
  EXPECT_EQ(k->FindObservationByLoinc("14927-8")->name, "TG");   // triglycerides in mmol/L
  EXPECT_EQ(k->FindObservationByLoinc("13457-7")->name, "LDL");  // an accepted LDL code
  EXPECT_EQ(k->FindObservationByLoinc("8867-4"), nullptr);
  EXPECT_EQ(k->phq9.item_loinc[8], "44260-8");
  EXPECT_EQ(k->isotretinoin.rxnorm, "6064");
  EXPECT_EQ(k->isotretinoin.atc, "D10BA01");
  EXPECT_FALSE(k->rems.requirements.empty());
  EXPECT_FALSE(k->cds_hooks.override_reasons.empty());
}

TEST(FhirKnowledge, AMissingCodeIsRefusedNamingTheKey) {
  std::string text = ShippedFile();
  const std::string line = "rxnorm = \"6064\"\n";
  ASSERT_NE(text.find(line), std::string::npos);
  text.erase(text.find(line), line.size());
  auto k = LoadText(text);
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.error().field, "knowledge/fhir.toml: isotretinoin.rxnorm");

  std::string eight_items = ShippedFile();
  const std::string item = "\"44260-8\"";
  eight_items.replace(eight_items.find(item) - 2, item.size() + 2, "");
  auto short_list = LoadText(eight_items);
  ASSERT_FALSE(short_list.ok());
  EXPECT_EQ(short_list.error().field, "knowledge/fhir.toml: phq9.item_loinc");

  auto broken = LoadText("[systems\n");
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.error().field, "knowledge/fhir.toml");
}

}  // namespace
}  // namespace isoguard::fhir
