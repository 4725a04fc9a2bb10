// The TOML adapter of the rulebook: reads programs/*.toml and knowledge/*.toml into the plain
// structures of rulebook.h, checking every value on the way in.
//
// The loader holds no clinical values: every parameter must be written in the files, and a
// missing key is an error rather than a silent default, so that a program cannot quietly lose a
// rule. Unknown keys are errors too, because in hand-edited files they are almost always typos
// of an optional key. The numeric bounds below only catch typos (a window of -7 or 7000 days);
// they are not clinical limits.
//
// toml++ reports syntax errors by throwing toml::parse_error; it is caught here and turned into
// an Error naming the file, line and column, so no exception leaves the loader.
#include "rules/rulebook_loader.h"

#include <toml++/toml.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

#include "core/text.h"

namespace isoguard {

std::string_view ToString(Severity s) {
  switch (s) {
    case Severity::kInfo:
      return "info";
    case Severity::kWarning:
      return "warning";
    case Severity::kCritical:
      return "critical";
  }
  return "?";
}

const CrisisResource* SafetyKnowledge::FindCrisis(Jurisdiction j) const {
  for (const CrisisResource& r : crisis) {
    if (r.jurisdiction == j) return &r;
  }
  return nullptr;
}

const SeriousEffect* SafetyKnowledge::MatchSeriousEffect(std::string_view term) const {
  const std::string normalized = NormalizeMedicationName(term);
  for (const SeriousEffect& e : serious_effects) {
    for (const std::string& t : e.terms) {
      if (ContainsWholeWords(normalized, t)) return &e;
    }
  }
  return nullptr;
}

const Program* Rulebook::FindProgram(std::string_view id) const {
  for (const Program& program : programs) {
    if (program.id == id) return &program;
  }
  return nullptr;
}

namespace {

// Typo guards, not clinical limits (see the file comment).
constexpr int64_t kMaxDays = 3660;  // ten years
constexpr int64_t kMaxMonths = 120;
constexpr int64_t kMaxAgeYears = 120;
// The record contract's own limits for prescription.days_supply and prescription.refills: a
// program maximum beyond them could never be reached.
constexpr int64_t kMaxDaysSupply = 365;
constexpr int64_t kMaxRefills = 12;
// The PHQ-9 instrument itself (nine items scored 0-3), which the record contract fixes too.
constexpr int64_t kPhq9Items = 9;
constexpr int64_t kPhq9MaxTotal = 27;
// Interaction names match as whole words anywhere in a medication's name, so very short names
// ("a", "vit") would match unrelated products.
constexpr size_t kMinMedicationNameLength = 3;
// An ATC prefix shorter than a chemical subgroup ("J01AA") would sweep in whole therapeutic
// groups.
constexpr size_t kMinAtcPrefixLength = 5;

// ---------------------------------------------------------------------------------------------
// Spellings of the enums a file may name.

template <typename E>
struct Named {
  std::string_view name;
  E value;
};

constexpr auto kTestSchemes = std::to_array<Named<TestScheme>>({
    {"screening_confirmation_window", TestScheme::kScreeningConfirmationWindow},
    {"before_prescription_date", TestScheme::kBeforePrescriptionDate},
});
constexpr auto kContraceptionRules = std::to_array<Named<ContraceptionRule>>({
    {"two_forms_one_primary", ContraceptionRule::kTwoFormsOnePrimary},
    {"one_independent_or_two_dependent_with_barrier",
     ContraceptionRule::kOneIndependentOrTwoDependentWithBarrier},
});
constexpr auto kMethodClasses = std::to_array<Named<MethodClass>>({
    {"not_acceptable", MethodClass::kNotAcceptable},
    {"primary", MethodClass::kPrimary},
    {"secondary", MethodClass::kSecondary},
    {"user_independent", MethodClass::kUserIndependent},
    {"user_dependent", MethodClass::kUserDependent},
    {"barrier", MethodClass::kBarrier},
    {"abstinence", MethodClass::kAbstinence},
});
constexpr auto kCounselingRules = std::to_array<Named<CounselingRule>>({
    {"none", CounselingRule::kNone},
    {"since_previous_dispense", CounselingRule::kSincePreviousDispense},
    {"at_any_time", CounselingRule::kAtAnyTime},
});
constexpr auto kSeverities = std::to_array<Named<Severity>>({
    {"info", Severity::kInfo},
    {"warning", Severity::kWarning},
    {"critical", Severity::kCritical},
});

// The record format's codes, spelled by codes.h.
template <typename E, size_t N>
std::vector<Named<E>> CodeNames(const std::array<E, N>& values) {
  std::vector<Named<E>> out;
  out.reserve(N);
  for (E v : values) out.push_back({ToString(v), v});
  return out;
}

template <typename E, int N>
std::array<E, N> AllOf() {
  std::array<E, N> out{};
  for (int i = 0; i < N; ++i) out[static_cast<size_t>(i)] = static_cast<E>(i);
  return out;
}

const std::vector<Named<Jurisdiction>>& JurisdictionNames() {
  static const auto* names = new std::vector<Named<Jurisdiction>>(
      CodeNames(std::array{Jurisdiction::kUS, Jurisdiction::kEU, Jurisdiction::kUK}));
  return *names;
}
const std::vector<Named<TestSetting>>& SettingNames() {
  static const auto* names = new std::vector<Named<TestSetting>>(
      CodeNames(std::array{TestSetting::kLab, TestSetting::kOffice, TestSetting::kHome}));
  return *names;
}
const std::vector<Named<AssessmentKind>>& AssessmentNames() {
  static const auto* names = new std::vector<Named<AssessmentKind>>(
      CodeNames(std::array{AssessmentKind::kMentalHealth, AssessmentKind::kSexualFunction}));
  return *names;
}
const std::vector<Named<LabTest>>& LabTestNames() {
  static const auto* names =
      new std::vector<Named<LabTest>>(CodeNames(AllOf<LabTest, kLabTestCount>()));
  return *names;
}
const std::vector<Named<LabUnit>>& LabUnitNames() {
  static const auto* names = new std::vector<Named<LabUnit>>(
      CodeNames(std::array{LabUnit::kUnitsPerLiter, LabUnit::kMgPerDl, LabUnit::kMmolPerL}));
  return *names;
}
const std::vector<Named<ContraceptionMethod>>& MethodNames() {
  static const auto* names = new std::vector<Named<ContraceptionMethod>>(
      CodeNames(AllOf<ContraceptionMethod, kContraceptionMethodCount>()));
  return *names;
}
const std::vector<Named<Product>>& ProductNames() {
  static const auto* names =
      new std::vector<Named<Product>>(CodeNames(AllOf<Product, kProductCount>()));
  return *names;
}

template <typename E>
std::optional<E> Lookup(std::span<const Named<E>> names, std::string_view s) {
  for (const Named<E>& n : names) {
    if (n.name == s) return n.value;
  }
  return std::nullopt;
}

template <typename E>
std::string_view NameOf(std::span<const Named<E>> names, E value) {
  for (const Named<E>& n : names) {
    if (n.value == value) return n.name;
  }
  return "?";
}

template <typename E>
std::string NameList(std::span<const Named<E>> names) {
  std::string out;
  for (const Named<E>& n : names) {
    if (!out.empty()) out += ", ";
    out += n.name;
  }
  return out;
}

// Which method classes a contraception rule judges; a class outside its rule's vocabulary
// (a "barrier" under the US rule) would silently count as nothing.
bool ClassFitsRule(MethodClass c, ContraceptionRule rule) {
  switch (c) {
    case MethodClass::kNotAcceptable:
    case MethodClass::kAbstinence:
      return true;
    case MethodClass::kPrimary:
    case MethodClass::kSecondary:
      return rule == ContraceptionRule::kTwoFormsOnePrimary;
    case MethodClass::kUserIndependent:
    case MethodClass::kUserDependent:
    case MethodClass::kBarrier:
      return rule == ContraceptionRule::kOneIndependentOrTwoDependentWithBarrier;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Reading a TOML document with errors that name the file and the dotted key.

std::string_view TypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::none:
      return "nothing";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a floating-point number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
  }
  return "an unknown value";
}

// " (line 12)": where the offending value is, for the person editing the file.
std::string AtLine(const toml::node& node) {
  if (node.source().begin.line == 0) return {};
  return " (line " + std::to_string(node.source().begin.line) + ")";
}

std::string Quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

// One file being read. Remembers the first problem only: later ones are usually consequences
// of it, and the person fixing the file wants the cause. Readers keep going after a problem
// (returning harmless placeholder values) so that parsing code reads straight through.
class Document {
 public:
  explicit Document(std::string file) : file_(std::move(file)) {}

  bool ok() const { return !error_.has_value(); }
  void Fail(std::string_view key, std::string message) {
    if (error_) return;
    error_ =
        Error::BadInput(std::move(message), key.empty() ? file_ : file_ + ": " + std::string(key));
  }
  Error TakeError() { return std::move(*error_); }

 private:
  std::string file_;
  std::optional<Error> error_;
};

// One table of a document, with its dotted path. Tracks the keys it was asked about, so that
// Finish() can report the others as unknown.
class TableReader {
 public:
  TableReader(Document& doc, const toml::table* table, std::string path)
      : doc_(&doc), table_(table), path_(std::move(path)) {}

  const toml::table* table() const { return table_; }
  Document& doc() const { return *doc_; }

  std::string KeyPath(std::string_view key) const {
    if (key.empty()) return path_;
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  void Fail(std::string_view key, std::string message) const {
    doc_->Fail(KeyPath(key), std::move(message));
  }

  // The node of `key`, marking it as a key this table takes; nullptr when absent.
  const toml::node* Optional(std::string_view key) {
    known_.emplace_back(key);
    return table_ == nullptr ? nullptr : table_->get(key);
  }
  const toml::node* Required(std::string_view key) {
    const toml::node* node = Optional(key);
    if (node == nullptr && table_ != nullptr) Fail(key, "required key is missing");
    return node;
  }

  TableReader Table(std::string_view key) {
    const toml::node* node = Optional(key);
    if (node == nullptr) {
      if (table_ != nullptr) Fail(key, "required table is missing");
      return TableReader(*doc_, nullptr, KeyPath(key));
    }
    const toml::table* table = node->as_table();
    if (table == nullptr) {
      Fail(key, "must be a table, not " + std::string(TypeName(*node)) + AtLine(*node));
    }
    return TableReader(*doc_, table, KeyPath(key));
  }

  std::string String(std::string_view key) {
    const toml::node* node = Required(key);
    return node == nullptr ? std::string() : StringValue(*node, KeyPath(key));
  }
  std::optional<std::string> OptionalString(std::string_view key) {
    const toml::node* node = Optional(key);
    if (node == nullptr) return std::nullopt;
    return StringValue(*node, KeyPath(key));
  }

  bool Bool(std::string_view key) {
    const toml::node* node = Required(key);
    return node != nullptr && BoolValue(*node, KeyPath(key));
  }
  std::optional<bool> OptionalBool(std::string_view key) {
    const toml::node* node = Optional(key);
    if (node == nullptr) return std::nullopt;
    return BoolValue(*node, KeyPath(key));
  }

  int32_t Int(std::string_view key, int64_t min, int64_t max) {
    const toml::node* node = Required(key);
    return node == nullptr ? 0 : IntValue(*node, KeyPath(key), min, max);
  }
  std::optional<int32_t> OptionalInt(std::string_view key, int64_t min, int64_t max) {
    const toml::node* node = Optional(key);
    if (node == nullptr) return std::nullopt;
    return IntValue(*node, KeyPath(key), min, max);
  }
  // A required parameter that may be switched off: an integer, or "none" (no maximum, no such
  // window). Required so that forgetting the key is not read as "none".
  std::optional<int32_t> IntOrNone(std::string_view key, int64_t min, int64_t max) {
    const toml::node* node = Required(key);
    if (node == nullptr) return std::nullopt;
    if (const auto* s = node->as_string()) {
      if (s->get() == "none") return std::nullopt;
      Fail(key, "must be an integer or \"none\", not " + Quoted(s->get()) + AtLine(*node));
      return std::nullopt;
    }
    if (!node->is_integer()) {
      Fail(key,
           "must be an integer or \"none\", not " + std::string(TypeName(*node)) + AtLine(*node));
      return std::nullopt;
    }
    return IntValue(*node, KeyPath(key), min, max);
  }

  double PositiveNumber(std::string_view key) {
    const toml::node* node = Required(key);
    return node == nullptr ? 0 : PositiveNumberValue(*node, KeyPath(key));
  }
  std::optional<double> OptionalPositiveNumber(std::string_view key) {
    const toml::node* node = Optional(key);
    if (node == nullptr) return std::nullopt;
    return PositiveNumberValue(*node, KeyPath(key));
  }

  LocalDate Date(std::string_view key) {
    const toml::node* node = Required(key);
    return node == nullptr ? LocalDate() : DateValue(*node, KeyPath(key));
  }
  std::optional<LocalDate> OptionalDate(std::string_view key) {
    const toml::node* node = Optional(key);
    if (node == nullptr) return std::nullopt;
    return DateValue(*node, KeyPath(key));
  }

  template <typename E>
  E Enum(std::string_view key, std::span<const Named<E>> names, std::string_view what) {
    const toml::node* node = Required(key);
    if (node == nullptr) return names.front().value;
    return EnumValue(*node, KeyPath(key), names, what);
  }

  // An array; `allow_empty` says whether [] is meaningful for this key.
  const toml::array* Array(std::string_view key, bool allow_empty) {
    const toml::node* node = Required(key);
    if (node == nullptr) return nullptr;
    const toml::array* array = node->as_array();
    if (array == nullptr) {
      Fail(key, "must be an array, not " + std::string(TypeName(*node)) + AtLine(*node));
      return nullptr;
    }
    if (!allow_empty && array->empty()) {
      Fail(key, "must not be empty" + AtLine(*node));
      return nullptr;
    }
    return array;
  }

  std::vector<std::string> StringList(std::string_view key, bool allow_empty) {
    std::vector<std::string> out;
    const toml::array* array = Array(key, allow_empty);
    if (array == nullptr) return out;
    for (size_t i = 0; i < array->size(); ++i) {
      out.push_back(StringValue(*array->get(i), ElementPath(key, i)));
    }
    return out;
  }

  // A list of codes, each at most once.
  template <typename E>
  std::vector<E> EnumList(std::string_view key, std::span<const Named<E>> names,
                          std::string_view what, bool allow_empty) {
    std::vector<E> out;
    const toml::array* array = Array(key, allow_empty);
    if (array == nullptr) return out;
    for (size_t i = 0; i < array->size(); ++i) {
      const toml::node& node = *array->get(i);
      E value = EnumValue(node, ElementPath(key, i), names, what);
      if (std::find(out.begin(), out.end(), value) != out.end()) {
        doc_->Fail(ElementPath(key, i),
                   "lists " + Quoted(NameOf(names, value)) + " twice" + AtLine(node));
      }
      out.push_back(value);
    }
    return out;
  }

  std::vector<double> PositiveNumberList(std::string_view key) {
    std::vector<double> out;
    const toml::array* array = Array(key, /*allow_empty=*/false);
    if (array == nullptr) return out;
    for (size_t i = 0; i < array->size(); ++i) {
      out.push_back(PositiveNumberValue(*array->get(i), ElementPath(key, i)));
    }
    return out;
  }

  // Every group of parameters cites its public source; a note, when present, says what could
  // not be confirmed.
  void Provenance() {
    if (table_ == nullptr) return;
    String("source");
    OptionalString("note");
  }

  // Reports the first key this table was not asked about.
  void Finish() {
    if (table_ == nullptr) return;
    for (const auto& [key, node] : *table_) {
      if (std::find(known_.begin(), known_.end(), key.str()) != known_.end()) continue;
      std::string expected;
      for (const std::string& k : known_) {
        if (!expected.empty()) expected += ", ";
        expected += k;
      }
      Fail(key.str(), "unknown key" + AtLine(node) + "; this table takes: " + expected);
      return;
    }
  }

  // Marks every key of the table as taken, for tables whose keys are data (LOINC codes).
  void TakeAllKeys() {
    if (table_ == nullptr) return;
    for (const auto& entry : *table_) known_.emplace_back(entry.first.str());
  }

  std::string ElementPath(std::string_view key, size_t i) const {
    return KeyPath(key) + "[" + std::to_string(i) + "]";
  }

  std::string StringValue(const toml::node& node, const std::string& path) {
    const auto* s = node.as_string();
    if (s == nullptr) {
      doc_->Fail(path, "must be a string, not " + std::string(TypeName(node)) + AtLine(node));
      return {};
    }
    if (s->get().empty()) {
      doc_->Fail(path, "must not be empty" + AtLine(node));
      return {};
    }
    return s->get();
  }

  bool BoolValue(const toml::node& node, const std::string& path) {
    const auto* b = node.as_boolean();
    if (b == nullptr) {
      doc_->Fail(path, "must be true or false, not " + std::string(TypeName(node)) + AtLine(node));
      return false;
    }
    return b->get();
  }

  int32_t IntValue(const toml::node& node, const std::string& path, int64_t min, int64_t max) {
    const auto* i = node.as_integer();
    if (i == nullptr) {
      doc_->Fail(path, "must be an integer, not " + std::string(TypeName(node)) + AtLine(node));
      return 0;
    }
    int64_t value = i->get();
    if (value < min || value > max) {
      doc_->Fail(path, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                           ", not " + std::to_string(value) + AtLine(node));
      return 0;
    }
    return static_cast<int32_t>(value);
  }

  double PositiveNumberValue(const toml::node& node, const std::string& path) {
    double value = 0;
    if (const auto* i = node.as_integer()) {
      value = static_cast<double>(i->get());
    } else if (const auto* f = node.as_floating_point()) {
      value = f->get();
    } else {
      doc_->Fail(path, "must be a number, not " + std::string(TypeName(node)) + AtLine(node));
      return 0;
    }
    if (!std::isfinite(value) || value <= 0) {
      doc_->Fail(path, "must be a positive number, not " + FormatNumber(value) + AtLine(node));
      return 0;
    }
    return value;
  }

  // A TOML date (2023-10-03) or a string in the record format's date form ("2023-10-03").
  LocalDate DateValue(const toml::node& node, const std::string& path) {
    LocalDate date;
    if (const auto* d = node.as_date()) {
      const toml::date& ymd = d->get();
      if (ymd.year < kMinYear || ymd.year > kMaxYear) {
        doc_->Fail(path, "must be a date between " + std::to_string(kMinYear) + " and " +
                             std::to_string(kMaxYear) + AtLine(node));
        return date;
      }
      return LocalDate::FromYmd(ymd.year, ymd.month, ymd.day);
    }
    if (const auto* s = node.as_string()) {
      Result<LocalDate> parsed = ParseDate(s->get());
      if (!parsed.ok() || parsed->year() < kMinYear || parsed->year() > kMaxYear) {
        doc_->Fail(path, "is not a valid date YYYY-MM-DD between " + std::to_string(kMinYear) +
                             " and " + std::to_string(kMaxYear) + ": " + Quoted(s->get()) +
                             AtLine(node));
        return date;
      }
      return *parsed;
    }
    doc_->Fail(path,
               "must be a date YYYY-MM-DD, not " + std::string(TypeName(node)) + AtLine(node));
    return date;
  }

  template <typename E>
  E EnumValue(const toml::node& node, const std::string& path, std::span<const Named<E>> names,
              std::string_view what) {
    const auto* s = node.as_string();
    if (s == nullptr) {
      doc_->Fail(path, "must be a " + std::string(what) + " name (one of: " + NameList(names) +
                           "), not " + std::string(TypeName(node)) + AtLine(node));
      return names.front().value;
    }
    std::optional<E> value = Lookup(names, s->get());
    if (!value) {
      doc_->Fail(path, "unknown " + std::string(what) + " " + Quoted(s->get()) + AtLine(node) +
                           "; expected one of: " + NameList(names));
      return names.front().value;
    }
    return *value;
  }

 private:
  Document* doc_;
  const toml::table* table_;  // nullptr when the table is missing (already reported)
  std::string path_;
  std::vector<std::string> known_;
};

// Template arguments are not deduced through the span conversion: these pin them down.
template <typename E, size_t N>
std::span<const Named<E>> Names(const std::array<Named<E>, N>& names) {
  return std::span<const Named<E>>(names);
}
template <typename E>
std::span<const Named<E>> Names(const std::vector<Named<E>>& names) {
  return std::span<const Named<E>>(names);
}

// ---------------------------------------------------------------------------------------------
// Files.

Result<std::string> ReadTextFile(const std::filesystem::path& path,
                                 const std::string& display_name) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::BadInput("cannot open " + path.string(), display_name);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Error::BadInput("cannot read " + path.string(), display_name);
  return text.str();
}

Result<toml::table> ParseToml(std::string_view text, const std::string& display_name) {
  try {
    return toml::parse(text, display_name);
  } catch (const toml::parse_error& e) {
    const toml::source_position& at = e.source().begin;
    return Error::BadInput("TOML syntax error at line " + std::to_string(at.line) + ", column " +
                               std::to_string(at.column) + ": " + std::string(e.description()),
                           display_name);
  } catch (const std::exception& e) {
    // Only allocation failures are left; they must not escape the loader either.
    return Error::Internal(std::string("cannot parse: ") + e.what(), display_name);
  }
}

// ---------------------------------------------------------------------------------------------
// Programs.

SettingSet ReadSettings(TableReader& t, std::string_view key) {
  SettingSet set = 0;
  for (TestSetting s : t.EnumList(key, Names(SettingNames()), "test setting", false)) {
    set = static_cast<SettingSet>(set | SettingBit(s));
  }
  return set;
}

void ReadProgramHeader(TableReader& top, Program& p) {
  TableReader t = top.Table("program");
  p.id = t.String("id");
  if (!p.id.empty() && !std::all_of(p.id.begin(), p.id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
      })) {
    t.Fail("id", "must use only lower-case letters, digits, '-' and '_', not " + Quoted(p.id));
  }
  p.title = t.String("title");
  p.jurisdiction = t.Enum("jurisdiction", Names(JurisdictionNames()), "jurisdiction");
  p.in_force_from = t.Date("in_force_from");
  p.in_force_until = t.OptionalDate("in_force_until");
  if (t.doc().ok() && p.in_force_until && *p.in_force_until < p.in_force_from) {
    t.Fail("in_force_until", "must not be before in_force_from (" + p.in_force_from.ToString() +
                                 "), not " + p.in_force_until->ToString());
  }
  p.time_zone = t.String("time_zone");
  if (t.doc().ok()) {
    Result<Zone> zone = Zone::Locate(p.time_zone);
    if (zone.ok()) {
      p.zone = *zone;
    } else {
      t.Fail("time_zone", "unknown time zone " + Quoted(p.time_zone) +
                              " (not in the system's IANA tz database)");
    }
  }
  t.Provenance();
  t.Finish();
}

void ReadSupply(TableReader& top, ProgramSupply& s) {
  TableReader t = top.Table("supply");
  s.max_days_supply_can_get_pregnant =
      t.IntOrNone("max_days_supply_can_get_pregnant", 1, kMaxDaysSupply);
  s.max_days_supply_cannot_get_pregnant =
      t.IntOrNone("max_days_supply_cannot_get_pregnant", 1, kMaxDaysSupply);
  s.max_refills = t.Int("max_refills", 0, kMaxRefills);
  t.Provenance();
  t.Finish();
}

void ReadTests(TableReader& top, ProgramTests& tests) {
  TableReader t = top.Table("tests");
  tests.scheme = t.Enum("scheme", Names(kTestSchemes), "test scheme");
  tests.screening_settings = ReadSettings(t, "screening_settings");
  tests.confirmation_settings = ReadSettings(t, "confirmation_settings");
  tests.during_settings = ReadSettings(t, "during_settings");
  // Keys a scheme does not use may be left out (they read as 0, "not applicable"); when they
  // are written they are still checked.
  const bool window_scheme = tests.scheme == TestScheme::kScreeningConfirmationWindow;
  if (window_scheme) {
    tests.confirmation_min_days_after_screening =
        t.Int("confirmation_min_days_after_screening", 1, kMaxDays);
    tests.window_days = t.Int("window_days", 1, kMaxDays);
    tests.lockout = t.Bool("lockout");
    tests.days_before_prescription =
        t.OptionalInt("days_before_prescription", 0, kMaxDays).value_or(0);
  } else {
    tests.confirmation_min_days_after_screening =
        t.OptionalInt("confirmation_min_days_after_screening", 0, kMaxDays).value_or(0);
    tests.window_days = t.OptionalInt("window_days", 0, kMaxDays).value_or(0);
    tests.lockout = t.OptionalBool("lockout").value_or(false);
    if (tests.lockout) {
      t.Fail("lockout", "applies only to the scheme \"screening_confirmation_window\"");
    }
    tests.days_before_prescription = t.Int("days_before_prescription", 0, kMaxDays);
  }
  tests.lockout_min_days = tests.lockout
                               ? t.Int("lockout_min_days", 1, kMaxDays)
                               : t.OptionalInt("lockout_min_days", 0, kMaxDays).value_or(0);
  t.Provenance();
  t.Finish();
}

void ReadContraception(TableReader& top, ProgramContraception& c) {
  TableReader t = top.Table("contraception");
  c.rule = t.Enum("rule", Names(kContraceptionRules), "contraception rule");
  c.lead_in_days = t.Int("lead_in_days", 0, kMaxDays);

  TableReader classes = t.Table("classes");
  // Unknown codes first: a misspelt code would otherwise surface as "method X not classified",
  // which hides the cause.
  if (classes.table() != nullptr) {
    for (const auto& [key, node] : *classes.table()) {
      if (key == "source" || key == "note") continue;
      if (!ParseContraceptionMethod(key.str())) {
        classes.Fail(key.str(), "unknown contraception method code " + Quoted(key.str()) +
                                    AtLine(node) +
                                    "; expected one of: " + NameList(Names(MethodNames())));
      }
    }
  }
  for (const Named<ContraceptionMethod>& method : MethodNames()) {
    if (classes.table() == nullptr) break;  // already reported
    const toml::node* node = classes.Optional(method.name);
    if (node == nullptr) {
      classes.Fail(method.name, "method " + Quoted(method.name) +
                                    " is not classified: every method code needs a class (one "
                                    "of: " +
                                    NameList(Names(kMethodClasses)) + ")");
      continue;
    }
    MethodClass cls = classes.EnumValue(*node, classes.KeyPath(method.name), Names(kMethodClasses),
                                        "method class");
    if (t.doc().ok() && !ClassFitsRule(cls, c.rule)) {
      classes.Fail(method.name, "class " + Quoted(NameOf(Names(kMethodClasses), cls)) +
                                    " is not used by the rule " +
                                    Quoted(NameOf(Names(kContraceptionRules), c.rule)) +
                                    AtLine(*node));
    }
    c.method_class[static_cast<size_t>(method.value)] = cls;
  }
  classes.Provenance();
  classes.Finish();

  t.Provenance();
  t.Finish();
}

void ReadMonthly(TableReader& top, ProgramMonthly& m) {
  TableReader t = top.Table("monthly");
  m.comprehension_can_get_pregnant = t.Bool("comprehension_can_get_pregnant");
  m.counseling_can_get_pregnant =
      t.Enum("counseling_can_get_pregnant", Names(kCounselingRules), "counselling rule");
  m.counseling_cannot_get_pregnant =
      t.Enum("counseling_cannot_get_pregnant", Names(kCounselingRules), "counselling rule");
  t.Provenance();
  t.Finish();
}

void ReadWindows(TableReader& top, ProgramWindows& w) {
  TableReader t = top.Table("windows");
  w.visit_window_days_cannot_get_pregnant =
      t.IntOrNone("visit_window_days_cannot_get_pregnant", 1, kMaxDays);
  w.prescription_window_days_can_get_pregnant =
      t.IntOrNone("prescription_window_days_can_get_pregnant", 1, kMaxDays);
  w.prescription_window_days_cannot_get_pregnant =
      t.IntOrNone("prescription_window_days_cannot_get_pregnant", 1, kMaxDays);
  t.Provenance();
  t.Finish();
}

void ReadForms(TableReader& top, ProgramForms& f) {
  TableReader t = top.Table("forms");
  f.risk_acknowledgement_can_get_pregnant = t.Bool("risk_acknowledgement_can_get_pregnant");
  f.risk_acknowledgement_cannot_get_pregnant = t.Bool("risk_acknowledgement_cannot_get_pregnant");
  // The validity only matters when some patient needs the form; then it must be written.
  if (f.risk_acknowledgement_can_get_pregnant || f.risk_acknowledgement_cannot_get_pregnant) {
    f.risk_acknowledgement_valid_months = t.Int("risk_acknowledgement_valid_months", 1, kMaxMonths);
  } else if (auto months = t.OptionalInt("risk_acknowledgement_valid_months", 1, kMaxMonths)) {
    f.risk_acknowledgement_valid_months = *months;
  }
  f.baseline_assessments = t.EnumList("baseline_assessments", Names(AssessmentNames()),
                                      "assessment kind", /*allow_empty=*/true);
  f.second_prescriber_under_age = t.IntOrNone("second_prescriber_under_age", 1, kMaxAgeYears);
  t.Provenance();
  t.Finish();
}

void ReadDue(TableReader& top, ProgramDue& d) {
  TableReader t = top.Table("due");
  d.pregnancy_test_monthly = t.Bool("pregnancy_test_monthly");
  d.monthly_interval_days = t.Int("monthly_interval_days", 1, kMaxDays);
  d.confirmation_after_screening_days = t.Int("confirmation_after_screening_days", 1, kMaxDays);
  d.labs_follow_up_after_first_dispense_days =
      t.Int("labs_follow_up_after_first_dispense_days", 1, kMaxDays);
  d.labs_follow_up_due_days = t.Int("labs_follow_up_due_days", 1, kMaxDays);
  if (t.doc().ok() && d.labs_follow_up_due_days < d.labs_follow_up_after_first_dispense_days) {
    t.Fail("labs_follow_up_due_days",
           "must not be before labs_follow_up_after_first_dispense_days (" +
               std::to_string(d.labs_follow_up_after_first_dispense_days) + "), not " +
               std::to_string(d.labs_follow_up_due_days));
  }
  d.phq9_interval_days = t.Int("phq9_interval_days", 1, kMaxDays);
  // Zero is meaningful for the post-treatment spans (due on the last dose's own date).
  d.post_treatment_test_days = t.Int("post_treatment_test_days", 0, kMaxDays);
  d.contraception_after_last_dose_days = t.Int("contraception_after_last_dose_days", 0, kMaxDays);
  d.no_blood_donation_days = t.Int("no_blood_donation_days", 0, kMaxDays);
  t.Provenance();
  t.Finish();
}

Result<Program> ReadProgram(const toml::table& root, const std::string& display_name) {
  Document doc(display_name);
  TableReader top(doc, &root, "");
  Program p;
  p.source_file = display_name;
  ReadProgramHeader(top, p);
  ReadSupply(top, p.supply);
  ReadTests(top, p.tests);
  ReadContraception(top, p.contraception);
  ReadMonthly(top, p.monthly);
  ReadWindows(top, p.windows);
  ReadForms(top, p.forms);
  ReadDue(top, p.due);
  top.Finish();
  if (!doc.ok()) return doc.TakeError();
  return p;
}

// Within a jurisdiction the programs must follow one another without overlap (the program in
// force on a date must be unique) and without gap (every date after the first program must
// have one); only the latest may be open-ended. `programs` is sorted.
Status CheckProgramPeriods(const std::vector<Program>& programs) {
  for (const Named<Jurisdiction>& j : JurisdictionNames()) {
    const Program* previous = nullptr;
    for (const Program& p : programs) {
      if (p.jurisdiction != j.value) continue;
      if (previous != nullptr) {
        if (!previous->in_force_until) {
          return Error::BadInput("is missing: " + previous->id + " is followed by " + p.id + " (" +
                                     p.source_file + ") from " + p.in_force_from.ToString() +
                                     "; only the latest program of a jurisdiction may be "
                                     "open-ended",
                                 previous->source_file + ": program.in_force_until");
        }
        if (*previous->in_force_until >= p.in_force_from) {
          return Error::BadInput("overlaps " + previous->id + " (" + previous->source_file +
                                     "), in force until " + previous->in_force_until->ToString(),
                                 p.source_file + ": program.in_force_from");
        }
        if (*previous->in_force_until + 1 != p.in_force_from) {
          return Error::BadInput("leaves a gap after " + previous->id + " (" +
                                     previous->source_file + "), in force until " +
                                     previous->in_force_until->ToString() +
                                     ": it must start the next day",
                                 p.source_file + ": program.in_force_from");
        }
      }
      previous = &p;
    }
    if (previous == nullptr) {
      return Error::BadInput("no program for the jurisdiction " + std::string(j.name) +
                                 ": records of that jurisdiction could not be evaluated",
                             "programs/");
    }
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Knowledge.

void ReadProducts(TableReader& top, Knowledge& k) {
  TableReader products = top.Table("products");
  if (products.table() != nullptr) {
    for (const auto& [key, node] : *products.table()) {
      if (!ParseProduct(key.str())) {
        products.Fail(key.str(), "unknown product code " + Quoted(key.str()) + AtLine(node) +
                                     "; expected one of: " + NameList(Names(ProductNames())));
      }
    }
  }
  for (const Named<Product>& product : ProductNames()) {
    TableReader t = products.Table(product.name);
    ProductInfo& info = k.products[static_cast<size_t>(product.value)];
    info.product = product.value;
    info.name = t.String("name");
    info.strengths_mg = t.PositiveNumberList("strengths_mg");
    for (size_t i = 1; i < info.strengths_mg.size(); ++i) {
      if (info.strengths_mg[i] <= info.strengths_mg[i - 1]) {
        t.Fail("strengths_mg", "must be strictly ascending");
      }
    }
    info.usual_min_mg_per_kg_day = t.PositiveNumber("usual_min_mg_per_kg_day");
    info.usual_max_mg_per_kg_day = t.PositiveNumber("usual_max_mg_per_kg_day");
    info.max_mg_per_kg_day = t.PositiveNumber("max_mg_per_kg_day");
    if (t.doc().ok() && info.usual_max_mg_per_kg_day < info.usual_min_mg_per_kg_day) {
      t.Fail("usual_max_mg_per_kg_day", "must not be below usual_min_mg_per_kg_day");
    }
    if (t.doc().ok() && info.max_mg_per_kg_day < info.usual_max_mg_per_kg_day) {
      t.Fail("max_mg_per_kg_day", "must not be below usual_max_mg_per_kg_day");
    }
    info.take_with_food = t.Bool("take_with_food");
    info.substitution_group = t.String("substitution_group");
    t.Provenance();
    t.Finish();
  }
  products.Finish();

  TableReader t = top.Table("treatment");
  TreatmentKnowledge& tr = k.treatment;
  tr.minimum_age_years = t.Int("minimum_age_years", 1, kMaxAgeYears);
  tr.second_course_min_months = t.Int("second_course_min_months", 0, kMaxMonths);
  std::vector<double> target = t.PositiveNumberList("default_target_mg_per_kg");
  if (t.doc().ok() && (target.size() != 2 || target[0] > target[1])) {
    t.Fail("default_target_mg_per_kg", "must be [low, high] with low <= high");
  } else if (target.size() == 2) {
    tr.default_target_mg_per_kg = {target[0], target[1]};
  }
  tr.baseline_labs_lookback_days = t.Int("baseline_labs_lookback_days", 1, kMaxDays);
  tr.serious_adverse_event_lookback_days =
      t.Int("serious_adverse_event_lookback_days", 1, kMaxDays);
  t.Provenance();
  t.Finish();
  top.Finish();
}

bool IsAlertCode(std::string_view code) {
  return !code.empty() && std::all_of(code.begin(), code.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// warning = { at_least = 500, code = "TG_HIGH", advice = "..." }
void ReadThreshold(TableReader& family, std::string_view key, Threshold& threshold,
                   std::string& code, std::string& advice) {
  TableReader t = family.Table(key);
  std::optional<double> at_least = t.OptionalPositiveNumber("at_least");
  std::optional<double> above = t.OptionalPositiveNumber("above");
  if (t.table() != nullptr && at_least.has_value() == above.has_value()) {
    family.Fail(key, "must give exactly one of at_least (>=) and above (>)");
  }
  threshold.value = at_least.value_or(above.value_or(0));
  threshold.compare = at_least ? Comparison::kAtLeast : Comparison::kAbove;
  code = t.String("code");
  if (!code.empty() && !IsAlertCode(code)) {
    t.Fail("code", "must be an alert code in upper case, not " + Quoted(code));
  }
  advice = t.String("advice");
  t.Finish();
}

// [loinc]: informational codes for integrations; checked for shape, not stored.
void ReadLoinc(TableReader& top) {
  TableReader t = top.Table("loinc");
  t.Provenance();
  if (t.table() != nullptr) {
    for (const auto& [key, node] : *t.table()) {
      if (key == "source" || key == "note") continue;
      std::string path = t.KeyPath(key.str());
      std::string code = t.StringValue(node, path);
      size_t dash = code.find('-');
      bool shaped = dash != std::string::npos && dash > 0 && dash + 2 == code.size() &&
                    std::all_of(code.begin(), code.end(),
                                [](char c) { return (c >= '0' && c <= '9') || c == '-'; });
      if (!code.empty() && !shaped) {
        t.doc().Fail(path, "is not a LOINC code (digits, '-', a check digit): " + Quoted(code) +
                               AtLine(node));
      }
    }
  }
  t.TakeAllKeys();
  t.Finish();
}

void ReadLabs(TableReader& top, Knowledge& k) {
  const toml::array* families = top.Array("families", /*allow_empty=*/false);
  std::array<bool, kLabTestCount> in_family{};
  for (size_t i = 0; families != nullptr && i < families->size(); ++i) {
    std::string path = top.ElementPath("families", i);
    const toml::node& node = *families->get(i);
    const toml::table* table = node.as_table();
    if (table == nullptr) {
      top.doc().Fail(path, "must be a table, not " + std::string(TypeName(node)) + AtLine(node));
      break;
    }
    TableReader t(top.doc(), table, path);
    LabFamily family;
    family.name = t.String("name");
    for (const LabFamily& other : k.lab_families) {
      if (other.name == family.name) t.Fail("name", "duplicate family name " + Quoted(family.name));
    }
    family.tests = t.EnumList("tests", Names(LabTestNames()), "lab test", false);
    for (LabTest test : family.tests) {
      bool& taken = in_family[static_cast<size_t>(test)];
      if (taken) {
        t.Fail("tests", Quoted(ToString(test)) + " is already in another family");
      }
      taken = true;
    }
    LabUnit unit = t.Enum("unit", Names(LabUnitNames()), "lab unit");
    // Lipid thresholds are written in mg/dL (mmol/L results are converted to it); liver
    // thresholds are multiples of a ULN in U/L.
    if (t.doc().ok() && unit == LabUnit::kMmolPerL) {
      t.Fail("unit", "thresholds are written in mg/dL (mmol/L results are converted) or U/L");
    }
    family.relative_to_uln = t.Bool("relative_to_uln");
    if (family.relative_to_uln) {
      if (t.doc().ok() && unit != LabUnit::kUnitsPerLiter) {
        t.Fail("unit", "must be \"U/L\" when relative_to_uln is true");
      }
      family.default_uln = t.PositiveNumber("default_uln");
    } else if (t.Optional("default_uln") != nullptr) {
      t.Fail("default_uln", "applies only when relative_to_uln is true");
    }
    if (unit == LabUnit::kMgPerDl) {
      family.mmol_to_mg_dl = t.PositiveNumber("mmol_to_mg_dl");
    } else if (t.Optional("mmol_to_mg_dl") != nullptr) {
      t.Fail("mmol_to_mg_dl", "applies only to families whose unit is \"mg/dL\"");
    }
    ReadThreshold(t, "warning", family.warning, family.warning_code, family.warning_advice);
    ReadThreshold(t, "critical", family.critical, family.critical_code, family.critical_advice);
    if (t.doc().ok() && family.critical.value < family.warning.value) {
      t.Fail("critical", "must not be below the warning threshold");
    }
    t.Provenance();
    t.Finish();
    k.lab_families.push_back(std::move(family));
  }
  ReadLoinc(top);
  top.Finish();
}

void ReadMood(TableReader& top, Knowledge& k) {
  TableReader t = top.Table("phq9");
  MoodKnowledge& m = k.mood;
  m.moderate_min_total = t.Int("moderate_min_total", 1, kPhq9MaxTotal);
  m.severe_min_total = t.Int("severe_min_total", 1, kPhq9MaxTotal);
  if (t.doc().ok() && m.severe_min_total <= m.moderate_min_total) {
    t.Fail("severe_min_total",
           "must be above moderate_min_total (" + std::to_string(m.moderate_min_total) + ")");
  }
  m.self_harm_item = t.Int("self_harm_item", 1, kPhq9Items);
  t.Provenance();
  t.Finish();
  ReadLoinc(top);
  top.Finish();
}

// An ATC code or prefix: letter, two digits, two letters, two digits ("J01AA02").
bool IsAtcPrefix(std::string_view atc) {
  constexpr std::string_view kShape = "ADDAADD";  // A: letter, D: digit
  if (atc.size() < kMinAtcPrefixLength || atc.size() > kShape.size()) return false;
  for (size_t i = 0; i < atc.size(); ++i) {
    bool letter = atc[i] >= 'A' && atc[i] <= 'Z';
    bool digit = atc[i] >= '0' && atc[i] <= '9';
    if (kShape[i] == 'A' ? !letter : !digit) return false;
  }
  return true;
}

void ReadInteractions(TableReader& top, Knowledge& k) {
  // [severities]: the clinical grade each class is written in, and the alert severity it
  // raises. Its keys are data (the grades), so they are read by iteration.
  TableReader sev = top.Table("severities");
  sev.Provenance();
  std::map<std::string, Severity, std::less<>> grades;
  if (sev.table() != nullptr) {
    for (const auto& [key, node] : *sev.table()) {
      if (key == "source" || key == "note") continue;
      grades[std::string(key.str())] =
          sev.EnumValue(node, sev.KeyPath(key.str()), Names(kSeverities), "alert severity");
    }
    if (grades.empty()) sev.Fail("", "must define at least one grade");
  }
  sev.TakeAllKeys();
  sev.Finish();

  const toml::array* classes = top.Array("classes", /*allow_empty=*/false);
  std::map<std::string, std::string, std::less<>> name_owner;  // normalized name -> class code
  for (size_t i = 0; classes != nullptr && i < classes->size(); ++i) {
    std::string path = top.ElementPath("classes", i);
    const toml::node& node = *classes->get(i);
    const toml::table* table = node.as_table();
    if (table == nullptr) {
      top.doc().Fail(path, "must be a table, not " + std::string(TypeName(node)) + AtLine(node));
      break;
    }
    TableReader t(top.doc(), table, path);
    InteractionClass c;
    c.code = t.String("code");
    if (!c.code.empty() && !std::all_of(c.code.begin(), c.code.end(), [](char ch) {
          return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
        })) {
      t.Fail("code", "must use only lower-case letters, digits and '_', not " + Quoted(c.code));
    }
    for (const InteractionClass& other : k.interactions) {
      if (other.code == c.code) t.Fail("code", "duplicate class code " + Quoted(c.code));
    }
    c.title = t.String("title");
    std::string grade = t.String("severity");
    if (auto it = grades.find(grade); it != grades.end()) {
      c.severity = it->second;
    } else if (!grade.empty()) {
      std::string defined;
      for (const auto& [g, s] : grades) defined += (defined.empty() ? "" : ", ") + g;
      t.Fail("severity", "unknown severity grade " + Quoted(grade) +
                             "; the [severities] table defines: " + defined);
    }
    c.why = t.String("why");

    std::vector<std::string> prefixes = t.StringList("atc_prefixes", /*allow_empty=*/true);
    for (size_t j = 0; j < prefixes.size(); ++j) {
      std::string atc = NormalizeAtc(prefixes[j]);
      if (!IsAtcPrefix(atc)) {
        t.doc().Fail(
            t.ElementPath("atc_prefixes", j),
            "is not an ATC code or prefix of at least " + std::to_string(kMinAtcPrefixLength) +
                " characters (letter, 2 digits, 2 letters, 2 digits): " + Quoted(prefixes[j]));
      }
      if (std::find(c.atc_prefixes.begin(), c.atc_prefixes.end(), atc) == c.atc_prefixes.end()) {
        c.atc_prefixes.push_back(std::move(atc));
      }
    }

    std::vector<std::string> names = t.StringList("names", /*allow_empty=*/true);
    for (size_t j = 0; j < names.size(); ++j) {
      std::string name = NormalizeMedicationName(names[j]);
      std::string element = t.ElementPath("names", j);
      bool has_letter = std::any_of(name.begin(), name.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || static_cast<unsigned char>(ch) >= 0x80;
      });
      if (name.size() < kMinMedicationNameLength || !has_letter) {
        t.doc().Fail(element,
                     "is too short or has no letters to match as whole words without "
                     "false positives: " +
                         Quoted(names[j]));
        continue;
      }
      auto [owner, inserted] = name_owner.emplace(name, c.code);
      if (!inserted && owner->second != c.code) {
        t.doc().Fail(element,
                     Quoted(names[j]) + " is already a name of the class " + Quoted(owner->second));
      }
      // Spellings that normalize alike ("St. John's" / "St Johns") are kept once.
      if (std::find(c.names.begin(), c.names.end(), name) == c.names.end()) {
        c.names.push_back(std::move(name));
      }
    }
    if (t.doc().ok() && c.names.empty() && c.atc_prefixes.empty()) {
      t.Fail("names", "a class needs at least one name or ATC prefix to match anything");
    }
    t.Provenance();
    t.Finish();
    k.interactions.push_back(std::move(c));
  }
  top.Finish();
}

// Storage temperatures are typo-guarded to what a pharmacy room can be.
constexpr double kMaxStorageCelsius = 60;

void ReadSafety(TableReader& top, Knowledge& k) {
  SafetyKnowledge& safety = k.safety;
  TableReader storage = top.Table("storage");
  safety.storage_min_celsius = storage.PositiveNumber("min_celsius");
  safety.storage_max_celsius = storage.PositiveNumber("max_celsius");
  if (storage.doc().ok() && (safety.storage_max_celsius <= safety.storage_min_celsius ||
                             safety.storage_max_celsius > kMaxStorageCelsius)) {
    storage.Fail("max_celsius", "must be above min_celsius and at most " +
                                    std::to_string(static_cast<int>(kMaxStorageCelsius)));
  }
  storage.Provenance();
  storage.Finish();

  const toml::array* crisis = top.Array("crisis", /*allow_empty=*/false);
  for (size_t i = 0; crisis != nullptr && i < crisis->size(); ++i) {
    std::string path = top.ElementPath("crisis", i);
    const toml::table* table = crisis->get(i)->as_table();
    if (table == nullptr) {
      top.doc().Fail(path, "must be a table");
      break;
    }
    TableReader t(top.doc(), table, path);
    CrisisResource r;
    r.jurisdiction = t.Enum("jurisdiction", Names(JurisdictionNames()), "jurisdiction");
    if (t.doc().ok() && safety.FindCrisis(r.jurisdiction) != nullptr) {
      t.Fail("jurisdiction", "a second crisis resource for the same jurisdiction");
    }
    r.service = t.String("service");
    r.phone = t.String("phone");
    r.how = t.String("how");
    t.Provenance();
    t.Finish();
    safety.crisis.push_back(std::move(r));
  }
  for (const auto& j : JurisdictionNames()) {
    if (top.doc().ok() && safety.FindCrisis(j.value) == nullptr) {
      top.Fail("crisis", "no crisis resource for the jurisdiction " + std::string(j.name));
    }
  }

  const toml::array* effects = top.Array("serious_effects", /*allow_empty=*/false);
  std::map<std::string, std::string, std::less<>> term_owner;  // normalized term -> code
  for (size_t i = 0; effects != nullptr && i < effects->size(); ++i) {
    std::string path = top.ElementPath("serious_effects", i);
    const toml::table* table = effects->get(i)->as_table();
    if (table == nullptr) {
      top.doc().Fail(path, "must be a table");
      break;
    }
    TableReader t(top.doc(), table, path);
    SeriousEffect e;
    e.code = t.String("code");
    e.title = t.String("title");
    for (const std::string& term : t.StringList("terms", /*allow_empty=*/false)) {
      std::string normalized = NormalizeMedicationName(term);
      if (normalized.size() < kMinMedicationNameLength) {
        t.Fail("terms", Quoted(term) + " is too short to match as whole words");
        continue;
      }
      if (auto [it, inserted] = term_owner.emplace(normalized, e.code); !inserted) {
        t.Fail("terms", Quoted(term) + " is already a term of " + Quoted(it->second));
        continue;
      }
      e.terms.push_back(std::move(normalized));
    }
    t.Provenance();
    t.Finish();
    safety.serious_effects.push_back(std::move(e));
  }
  top.Finish();
}

// Parses one knowledge file and hands its root to `read`.
template <typename ReadFn>
Status LoadKnowledgeFile(const std::filesystem::path& data_dir, std::string_view file_name,
                         ReadFn read) {
  std::string display_name = "knowledge/" + std::string(file_name);
  Result<std::string> text = ReadTextFile(data_dir / "knowledge" / file_name, display_name);
  if (!text.ok()) return text.error();
  Result<toml::table> root = ParseToml(*text, display_name);
  if (!root.ok()) return root.error();
  Document doc(display_name);
  TableReader top(doc, &*root, "");
  read(top);
  if (!doc.ok()) return doc.TakeError();
  return {};
}

}  // namespace

Result<Program> ParseProgramToml(std::string_view toml_text, const std::string& display_name) {
  Result<toml::table> root = ParseToml(toml_text, display_name);
  if (!root.ok()) return root.error();
  return ReadProgram(*root, display_name);
}

Result<Program> LoadProgramFile(const std::string& path, const std::string& display_name) {
  Result<std::string> text = ReadTextFile(path, display_name);
  if (!text.ok()) return text.error();
  return ParseProgramToml(*text, display_name);
}

Result<Rulebook> LoadRulebook(const std::string& data_dir) {
  namespace fs = std::filesystem;
  const fs::path root(data_dir);
  const fs::path programs_dir = root / "programs";

  // Sorted so that errors, and the order of programs with equal keys, do not depend on the
  // file system's listing order.
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::directory_iterator it(programs_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& path = it->path();
    // Dot files are editor and backup leftovers, not programs.
    if (path.extension() != ".toml" || path.filename().string().starts_with(".")) continue;
    std::error_code type_ec;
    if (it->is_regular_file(type_ec)) files.push_back(path);
  }
  if (ec) {
    return Error::BadInput("cannot list " + programs_dir.string() + ": " + ec.message(),
                           "programs/");
  }
  if (files.empty()) {
    return Error::BadInput("no program files (*.toml) in " + programs_dir.string(), "programs/");
  }
  std::sort(files.begin(), files.end());

  Rulebook book;
  std::map<std::string, std::string, std::less<>> file_of_id;
  for (const fs::path& path : files) {
    std::string display_name = "programs/" + path.filename().string();
    Result<Program> program = LoadProgramFile(path.string(), display_name);
    if (!program.ok()) return program.error();
    auto [it, inserted] = file_of_id.emplace(program->id, display_name);
    if (!inserted) {
      return Error::BadInput(
          "duplicate program id " + Quoted(program->id) + ": " + it->second + " has it too",
          display_name + ": program.id");
    }
    book.programs.push_back(std::move(program).value());
  }
  std::stable_sort(book.programs.begin(), book.programs.end(),
                   [](const Program& a, const Program& b) {
                     if (a.jurisdiction != b.jurisdiction) return a.jurisdiction < b.jurisdiction;
                     return a.in_force_from < b.in_force_from;
                   });
  if (Status periods = CheckProgramPeriods(book.programs); !periods.ok()) return periods.error();

  Knowledge& k = book.knowledge;
  if (Status s = LoadKnowledgeFile(root, "products.toml",
                                   [&k](TableReader& top) { ReadProducts(top, k); });
      !s.ok()) {
    return s.error();
  }
  if (Status s = LoadKnowledgeFile(root, "labs.toml", [&k](TableReader& top) { ReadLabs(top, k); });
      !s.ok()) {
    return s.error();
  }
  if (Status s = LoadKnowledgeFile(root, "mood.toml", [&k](TableReader& top) { ReadMood(top, k); });
      !s.ok()) {
    return s.error();
  }
  if (Status s = LoadKnowledgeFile(root, "interactions.toml",
                                   [&k](TableReader& top) { ReadInteractions(top, k); });
      !s.ok()) {
    return s.error();
  }
  if (Status s =
          LoadKnowledgeFile(root, "safety.toml", [&k](TableReader& top) { ReadSafety(top, k); });
      !s.ok()) {
    return s.error();
  }
  return book;
}

}  // namespace isoguard
