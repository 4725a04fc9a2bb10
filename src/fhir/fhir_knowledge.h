// The codes of the FHIR facade and the CDS Hooks services (knowledge/fhir.toml): LOINC codes of
// the observations isoguard reads and writes, the SNOMED CT results of pregnancy tests, the
// ATC and RxNorm codings of isotretinoin, UCUM units, the CDS Hooks service ids and the ETASU
// requirements of $rems-etasu. Nothing clinical is a literal in src/fhir's code.
//
// Loaded once at start and immutable afterwards: share it freely between threads.
#pragma once

#include <array>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"

namespace isoguard::fhir {

struct FhirSystems {
  std::string loinc, snomed, ucum, atc, rxnorm, observation_category, data_absent_reason,
      consent_scope, consent_category, act_code;
  std::string isoguard_reason, isoguard_alert, isoguard_due, isoguard_product, isoguard_consent,
      isoguard_override, isoguard_patient_id, isoguard_prescription_id, test_setting_extension,
      jurisdiction_extension, category_extension;
};

// A record `lab.test` (or "weight") and its LOINC codes.
struct ObservationCode {
  std::string name;  // "ALT", "TG", "weight"
  std::string loinc;
  std::string loinc_mmol;           // lipids in mmol/L; empty when the test has no such code
  std::vector<std::string> accept;  // further codes read as this test
  std::string display;
  std::string category;
  std::map<std::string, std::string> units;  // record unit -> UCUM code
};

struct PregnancyTestCodes {
  std::string urine_loinc, urine_display, serum_loinc, serum_display;
  std::string negative_snomed, negative_display, positive_snomed, positive_display;
  std::string invalid_data_absent_reason, category;
};

struct Phq9Codes {
  std::string panel_loinc, panel_display, total_loinc, total_display, score_ucum, category;
  std::array<std::string, 9> item_loinc;
};

struct DrugCodes {
  std::string atc, atc_display, rxnorm, rxnorm_display, dose_unit_ucum, supply_unit_ucum;
};

struct OverrideReason {
  std::string code, display;
};

struct CdsHooksCodes {
  std::string order_select_id, order_sign_id, patient_view_id, source_label, source_url;
  std::vector<OverrideReason> override_reasons;
};

struct EtasuRequirement {
  std::string name;
  std::vector<std::string> reasons;
  std::vector<std::string> jurisdictions;
  std::vector<std::string> categories;  // empty: every category
};

struct RemsCodes {
  std::string module_uri, operation, output_parameters_id, met_status, not_met_status;
  std::vector<EtasuRequirement> requirements;
};

struct FhirKnowledge {
  FhirSystems systems;
  std::vector<ObservationCode> observations;  // weight and every lab test
  PregnancyTestCodes pregnancy_test;
  Phq9Codes phq9;
  DrugCodes isotretinoin;
  CdsHooksCodes cds_hooks;
  RemsCodes rems;

  const ObservationCode* FindObservation(std::string_view name) const;
  // The observation whose LOINC code (either unit's, or an accepted one) is `loinc`.
  const ObservationCode* FindObservationByLoinc(std::string_view loinc) const;
};

// Reads `<data_dir>/knowledge/fhir.toml`. Errors (kBadInput) name the file and the key.
Result<FhirKnowledge> LoadFhirKnowledge(const std::filesystem::path& data_dir);

}  // namespace isoguard::fhir
