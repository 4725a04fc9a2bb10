#include "fhir/fhir_knowledge.h"

#include <toml++/toml.h>

namespace isoguard::fhir {
namespace {

constexpr std::string_view kFile = "knowledge/fhir.toml";

// Reads required strings and string lists of one table, keeping the first error.
class Reader {
 public:
  Reader(const toml::table* table, std::string path, std::optional<Error>& error)
      : table_(table), path_(std::move(path)), error_(error) {
    if (table_ == nullptr) Fail("", "missing table");
  }

  std::string Str(std::string_view key) {
    if (table_ == nullptr) return {};
    auto v = (*table_)[key].value<std::string>();
    if (!v || v->empty()) {
      Fail(key, "must be a non-empty string");
      return {};
    }
    return *v;
  }
  std::string OptionalStr(std::string_view key) {
    if (table_ == nullptr || !table_->contains(key)) return {};
    return Str(key);
  }
  std::vector<std::string> List(std::string_view key, bool required = true) {
    std::vector<std::string> out;
    if (table_ == nullptr) return out;
    const toml::array* a = (*table_)[key].as_array();
    if (a == nullptr) {
      if (required) Fail(key, "must be a list of strings");
      return out;
    }
    for (const toml::node& n : *a) {
      auto s = n.value<std::string>();
      if (!s || s->empty()) {
        Fail(key, "must be a list of non-empty strings");
        return {};
      }
      out.push_back(*s);
    }
    return out;
  }
  const toml::table* table() const { return table_; }
  void Fail(std::string_view key, std::string message) {
    if (!error_) {
      std::string where = std::string(kFile) + ": " + path_;
      if (!key.empty()) where += (path_.empty() ? "" : ".") + std::string(key);
      error_ = Error::BadInput(std::move(message), where);
    }
  }

 private:
  const toml::table* table_;
  std::string path_;
  std::optional<Error>& error_;
};

const toml::table* Table(const toml::table& root, std::string_view key) {
  return root[key].as_table();
}

}  // namespace

const ObservationCode* FhirKnowledge::FindObservation(std::string_view name) const {
  for (const ObservationCode& o : observations) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

const ObservationCode* FhirKnowledge::FindObservationByLoinc(std::string_view loinc) const {
  for (const ObservationCode& o : observations) {
    if (o.loinc == loinc || (!o.loinc_mmol.empty() && o.loinc_mmol == loinc)) return &o;
    for (const std::string& a : o.accept) {
      if (a == loinc) return &o;
    }
  }
  return nullptr;
}

Result<FhirKnowledge> LoadFhirKnowledge(const std::filesystem::path& data_dir) {
  toml::table root;
  try {
    root = toml::parse_file((data_dir / "knowledge" / "fhir.toml").string());
  } catch (const toml::parse_error& e) {
    return Error::BadInput(std::string(e.description()), std::string(kFile));
  }
  std::optional<Error> error;
  FhirKnowledge k;

  Reader sys(Table(root, "systems"), "systems", error);
  FhirSystems& s = k.systems;
  s.loinc = sys.Str("loinc");
  s.snomed = sys.Str("snomed");
  s.ucum = sys.Str("ucum");
  s.atc = sys.Str("atc");
  s.rxnorm = sys.Str("rxnorm");
  s.observation_category = sys.Str("observation_category");
  s.data_absent_reason = sys.Str("data_absent_reason");
  s.consent_scope = sys.Str("consent_scope");
  s.consent_category = sys.Str("consent_category");
  s.act_code = sys.Str("act_code");
  s.isoguard_reason = sys.Str("isoguard_reason");
  s.isoguard_alert = sys.Str("isoguard_alert");
  s.isoguard_due = sys.Str("isoguard_due");
  s.isoguard_product = sys.Str("isoguard_product");
  s.isoguard_consent = sys.Str("isoguard_consent");
  s.isoguard_override = sys.Str("isoguard_override");
  s.isoguard_patient_id = sys.Str("isoguard_patient_id");
  s.isoguard_prescription_id = sys.Str("isoguard_prescription_id");
  s.test_setting_extension = sys.Str("test_setting_extension");
  s.jurisdiction_extension = sys.Str("jurisdiction_extension");
  s.category_extension = sys.Str("category_extension");
  sys.Str("source");

  const toml::table* observations = Table(root, "observations");
  if (observations == nullptr)
    return Error::BadInput("missing table", std::string(kFile) + ": observations");
  for (const auto& [name, node] : *observations) {
    const std::string key(name.str());
    Reader r(node.as_table(), "observations." + key, error);
    ObservationCode o;
    o.name = key;
    o.loinc = r.Str("loinc");
    o.loinc_mmol = r.OptionalStr("loinc_mmol");
    o.accept = r.List("accept", false);
    o.display = r.Str("display");
    o.category = r.Str("category");
    r.Str("source");
    if (r.table() != nullptr && r.table()->contains("ucum")) {
      o.units[r.Str("unit")] = r.Str("ucum");
    } else if (r.table() != nullptr) {
      const toml::table* units = (*r.table())["units"].as_table();
      if (units == nullptr || units->empty())
        r.Fail("units", "must map record units to UCUM codes");
      if (units != nullptr) {
        for (const auto& [unit, ucum] : *units) {
          auto code = ucum.value<std::string>();
          if (!code) r.Fail("units", "must map record units to UCUM codes");
          if (code) o.units[std::string(unit.str())] = *code;
        }
      }
    }
    k.observations.push_back(std::move(o));
  }

  Reader p(Table(root, "pregnancy_test"), "pregnancy_test", error);
  PregnancyTestCodes& pt = k.pregnancy_test;
  pt.urine_loinc = p.Str("urine_loinc");
  pt.urine_display = p.Str("urine_display");
  pt.serum_loinc = p.Str("serum_loinc");
  pt.serum_display = p.Str("serum_display");
  pt.negative_snomed = p.Str("negative_snomed");
  pt.negative_display = p.Str("negative_display");
  pt.positive_snomed = p.Str("positive_snomed");
  pt.positive_display = p.Str("positive_display");
  pt.invalid_data_absent_reason = p.Str("invalid_data_absent_reason");
  pt.category = p.Str("category");
  p.Str("source");

  Reader q(Table(root, "phq9"), "phq9", error);
  k.phq9.panel_loinc = q.Str("panel_loinc");
  k.phq9.panel_display = q.Str("panel_display");
  k.phq9.total_loinc = q.Str("total_loinc");
  k.phq9.total_display = q.Str("total_display");
  k.phq9.score_ucum = q.Str("score_ucum");
  k.phq9.category = q.Str("category");
  q.Str("source");
  std::vector<std::string> items = q.List("item_loinc");
  if (items.size() != 9) {
    q.Fail("item_loinc", "must list the nine PHQ-9 item codes in order");
  } else {
    for (size_t i = 0; i < 9; ++i) k.phq9.item_loinc[i] = items[i];
  }

  Reader d(Table(root, "isotretinoin"), "isotretinoin", error);
  k.isotretinoin.atc = d.Str("atc");
  k.isotretinoin.atc_display = d.Str("atc_display");
  k.isotretinoin.rxnorm = d.Str("rxnorm");
  k.isotretinoin.rxnorm_display = d.Str("rxnorm_display");
  k.isotretinoin.dose_unit_ucum = d.Str("dose_unit_ucum");
  k.isotretinoin.supply_unit_ucum = d.Str("supply_unit_ucum");
  d.Str("source");

  Reader c(Table(root, "cds_hooks"), "cds_hooks", error);
  k.cds_hooks.order_select_id = c.Str("order_select_id");
  k.cds_hooks.order_sign_id = c.Str("order_sign_id");
  k.cds_hooks.patient_view_id = c.Str("patient_view_id");
  k.cds_hooks.source_label = c.Str("source_label");
  k.cds_hooks.source_url = c.Str("source_url");
  c.Str("source");
  if (c.table() != nullptr) {
    const toml::array* reasons = (*c.table())["override_reasons"].as_array();
    if (reasons == nullptr || reasons->empty()) c.Fail("override_reasons", "must be a list");
    if (reasons != nullptr) {
      for (const toml::node& n : *reasons) {
        Reader o(n.as_table(), "cds_hooks.override_reasons[]", error);
        k.cds_hooks.override_reasons.push_back({o.Str("code"), o.Str("display")});
      }
    }
  }

  Reader rems(Table(root, "rems"), "rems", error);
  k.rems.module_uri = rems.Str("module_uri");
  k.rems.operation = rems.Str("operation");
  k.rems.output_parameters_id = rems.Str("output_parameters_id");
  k.rems.met_status = rems.Str("met_status");
  k.rems.not_met_status = rems.Str("not_met_status");
  rems.Str("source");
  if (rems.table() != nullptr) {
    const toml::array* reqs = (*rems.table())["requirements"].as_array();
    if (reqs == nullptr || reqs->empty()) rems.Fail("requirements", "must be a list of tables");
    if (reqs != nullptr) {
      for (const toml::node& n : *reqs) {
        Reader r(n.as_table(), "rems.requirements[]", error);
        EtasuRequirement req;
        req.name = r.Str("name");
        req.reasons = r.List("reasons");
        req.jurisdictions = r.List("jurisdictions");
        req.categories = r.List("categories", false);
        k.rems.requirements.push_back(std::move(req));
      }
    }
  }
  if (error) return *error;
  return k;
}

}  // namespace isoguard::fhir
