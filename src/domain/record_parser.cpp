#include "domain/record_parser.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/text.h"

namespace isoguard {
namespace {

namespace json = boost::json;

std::string KindOf(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_: return "a number";
    case json::kind::string: return "a string";
    case json::kind::array: return "an array";
    case json::kind::object: return "an object";
  }
  return "a value";
}

std::string Shown(std::string_view s) {
  return "'" + std::string(s.substr(0, 60)) + (s.size() > 60 ? "...'" : "'");
}

// Where a value sits in the record ("events[3].doses_mg[1]"), spelled out only when an error
// needs it: building the text for every field read would cost more than the reading.
struct FieldPath {
  std::string_view base;  // "patient", "events" (with index) or "" (top level)
  int index = -1;
  std::string_view key;
  int item = -1;

  FieldPath Item(size_t i) const {
    FieldPath p = *this;
    p.item = static_cast<int>(i);
    return p;
  }
  std::string str() const {
    std::string out(base);
    if (index >= 0) out += "[" + std::to_string(index) + "]";
    if (!key.empty()) {
      if (!out.empty()) out += ".";
      out += key;
    }
    if (item >= 0) out += "[" + std::to_string(item) + "]";
    return out;
  }
};

// Reads the fields of one JSON object, naming each field by its path in errors
// ("events[3].kg"). Every accessor returns an Error for a wrong type or a broken limit;
// a null counts as absent.
class Fields {
 public:
  Fields(const json::object& object, std::string_view base, int index,
         const RecordLimits& limits)
      : object_(object), base_(base), index_(index), limits_(limits) {}

  FieldPath At(std::string_view key) const { return FieldPath{base_, index_, key, -1}; }
  std::string Path(std::string_view key) const { return At(key).str(); }

  const json::value* Find(std::string_view key) const {
    const json::value* v = object_.if_contains(key);
    return (v == nullptr || v->is_null()) ? nullptr : v;
  }

  Error Missing(std::string_view key) const {
    return Error::BadInput("required field is missing", Path(key));
  }
  Error WrongType(std::string_view key, const json::value& v, std::string_view want) const {
    return Error::BadInput("must be " + std::string(want) + ", got " + KindOf(v), Path(key));
  }

  // A string; `required` strings are non-empty. Absent optional strings leave `out` empty.
  // The view points into the JSON document.
  Status View(std::string_view key, bool required, std::string_view& out) const {
    const json::value* v = Find(key);
    if (v == nullptr) return required ? Status(Missing(key)) : Status();
    if (!v->is_string()) return WrongType(key, *v, "a string");
    const json::string& s = v->get_string();
    if (s.empty() && required) return Error::BadInput("must not be empty", Path(key));
    if (s.size() > limits_.max_string_chars && Utf8Length(s) > limits_.max_string_chars) {
      return Error::BadInput("is longer than " + std::to_string(limits_.max_string_chars) +
                                 " characters",
                             Path(key));
    }
    out = std::string_view(s.data(), s.size());
    return {};
  }

  Status String(std::string_view key, bool required, std::string& out) const {
    std::string_view view;
    if (auto st = View(key, required, view); !st.ok()) return st;
    out.assign(view.data(), view.size());
    return {};
  }

  Status Bool(std::string_view key, bool& out) const {
    const json::value* v = Find(key);
    if (v == nullptr) return Missing(key);
    if (!v->is_bool()) return WrongType(key, *v, "true or false");
    out = v->get_bool();
    return {};
  }

  // A number; absent -> Missing (callers check Find first for optional ones).
  Status Number(std::string_view key, double& out) const {
    const json::value* v = Find(key);
    if (v == nullptr) return Missing(key);
    return NumberValue(*v, At(key), out);
  }

  static Status NumberValue(const json::value& v, const FieldPath& path, double& out) {
    switch (v.kind()) {
      case json::kind::int64: out = static_cast<double>(v.get_int64()); return {};
      case json::kind::uint64: out = static_cast<double>(v.get_uint64()); return {};
      case json::kind::double_: out = v.get_double(); return {};
      default: return Error::BadInput("must be a number, got " + KindOf(v), path.str());
    }
  }

  // A whole number in [lo, hi].
  Status Integer(std::string_view key, int32_t lo, int32_t hi, int32_t& out) const {
    const json::value* v = Find(key);
    if (v == nullptr) return Missing(key);
    return IntegerValue(*v, At(key), lo, hi, out);
  }

  static Status IntegerValue(const json::value& v, const FieldPath& path, int32_t lo,
                             int32_t hi, int32_t& out) {
    double d = 0;
    if (auto s = NumberValue(v, path, d); !s.ok()) return s;
    if (d != std::floor(d)) return Error::BadInput("must be a whole number", path.str());
    if (d < lo || d > hi) {
      return Error::BadInput("must be between " + std::to_string(lo) + " and " +
                                 std::to_string(hi) + ", got " + FormatNumber(d),
                             path.str());
    }
    out = static_cast<int32_t>(d);
    return {};
  }

  template <typename E>
  Status Code(std::string_view key, std::optional<E> (*parse)(std::string_view), E& out,
              std::string_view what) const {
    std::string_view s;
    if (auto st = View(key, true, s); !st.ok()) return st;
    auto e = parse(s);
    if (!e) return Error::BadInput("unknown " + std::string(what) + " " + Shown(s), Path(key));
    out = *e;
    return {};
  }

  Status Time(std::string_view key, Instant& out) const {
    std::string_view s;
    if (auto st = View(key, true, s); !st.ok()) return st;
    auto t = ParseOffsetTime(s);
    if (!t.ok()) return Error::BadInput(t.error().message, Path(key));
    out = t->instant;
    return {};
  }

  Status DateOrTime(std::string_view key, LocalDate& out) const {
    std::string_view s;
    if (auto st = View(key, true, s); !st.ok()) return st;
    auto d = ParseDateOrTime(s);
    if (!d.ok()) return Error::BadInput(d.error().message, Path(key));
    out = *d;
    return {};
  }

 private:
  static size_t Utf8Length(const json::string& s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
  }

  const json::object& object_;
  std::string_view base_;
  int index_;
  const RecordLimits& limits_;
};

#define ISOGUARD_TRY(expr)                \
  do {                                    \
    if (auto _s = (expr); !_s.ok()) return _s.error(); \
  } while (0)

Status ParsePatient(const json::value& v, const RecordLimits& limits, Patient& p) {
  if (!v.is_object()) return Error::BadInput("must be an object, got " + KindOf(v), "patient");
  Fields f(v.get_object(), "patient", -1, limits);
  ISOGUARD_TRY(f.String("id", true, p.id));
  std::string birth;
  ISOGUARD_TRY(f.String("birth_date", true, birth));
  auto bd = ParseDate(birth);
  if (!bd.ok()) return Error::BadInput(bd.error().message, "patient.birth_date");
  p.birth_date = *bd;
  ISOGUARD_TRY(f.Code("jurisdiction", &ParseJurisdiction, p.jurisdiction, "jurisdiction"));
  ISOGUARD_TRY(f.Code("category", &ParseCategory, p.category, "category"));
  ISOGUARD_TRY(f.String("time_zone", false, p.time_zone));
  if (!p.time_zone.empty()) {
    auto z = Zone::Locate(p.time_zone);
    if (!z.ok()) return Error::BadInput(z.error().message, "patient.time_zone");
  }
  if (const json::value* t = f.Find("target_mg_per_kg")) {
    if (!t->is_array() || t->get_array().size() != 2) {
      return Error::BadInput("must be [low, high]", "patient.target_mg_per_kg");
    }
    std::array<double, 2> target{};
    for (size_t i = 0; i < 2; ++i) {
      ISOGUARD_TRY(
          Fields::NumberValue(t->get_array()[i], f.At("target_mg_per_kg").Item(i), target[i]));
    }
    if (!(target[0] > 0 && target[0] <= target[1]) || !std::isfinite(target[1])) {
      return Error::BadInput("must be [low, high] with 0 < low <= high",
                             "patient.target_mg_per_kg");
    }
    p.target_mg_per_kg = target;
  }
  return {};
}

Status ParseEvent(const json::value& v, size_t index, const ParseOptions& options, Event& e) {
  if (!v.is_object()) {
    return Error::BadInput("must be an object, got " + KindOf(v),
                           FieldPath{"events", static_cast<int>(index), {}, -1}.str());
  }
  const RecordLimits& limits = options.limits;
  Fields f(v.get_object(), "events", static_cast<int>(index), limits);
  e.index = static_cast<uint32_t>(index);
  ISOGUARD_TRY(f.Code("type", &ParseEventType, e.type, "event type"));
  ISOGUARD_TRY(f.String("id", false, e.id));
  if (const json::value* id = f.Find("id"); id != nullptr && e.id.empty()) {
    return Error::BadInput("must not be empty", f.Path("id"));
  }
  if (e.type == EventType::kPregnancyTest) {
    ISOGUARD_TRY(f.Time("collected_at", e.at));
  } else {
    ISOGUARD_TRY(f.Time("at", e.at));
  }

  switch (e.type) {
    case EventType::kEnrollment:
      ISOGUARD_TRY(f.String("program", false, e.program));
      if (!e.program.empty() && options.is_known_program && !options.is_known_program(e.program)) {
        return Error::BadInput("unknown program " + Shown(e.program), f.Path("program"));
      }
      break;
    case EventType::kCategoryChange:
      ISOGUARD_TRY(f.Code("category", &ParseCategory, e.category, "category"));
      break;
    case EventType::kWeight:
      ISOGUARD_TRY(f.Number("kg", e.kg));
      if (!(e.kg > 0 && e.kg <= limits.max_kg)) {
        return Error::BadInput("must be in (0, " + FormatNumber(limits.max_kg) + "] kg, got " +
                                   FormatNumber(e.kg),
                               f.Path("kg"));
      }
      break;
    case EventType::kVisit:
      ISOGUARD_TRY(f.Bool("counseled", e.flag));
      break;
    case EventType::kContraception: {
      const json::value* m = f.Find("methods");
      if (m == nullptr) return f.Missing("methods");
      if (!m->is_array()) return f.WrongType("methods", *m, "a list of method codes");
      const json::array& methods = m->get_array();
      for (size_t i = 0; i < methods.size(); ++i) {
        if (!methods[i].is_string()) {
          return Error::BadInput("must be a method code, got " + KindOf(methods[i]),
                                 f.At("methods").Item(i).str());
        }
        auto code = ParseContraceptionMethod(methods[i].get_string());
        if (!code) {
          return Error::BadInput("unknown contraception method " + Shown(methods[i].get_string()),
                                 f.At("methods").Item(i).str());
        }
        e.methods |= MethodBit(*code);
      }
      ISOGUARD_TRY(f.DateOrTime("since", e.date));
      break;
    }
    case EventType::kComprehension:
      ISOGUARD_TRY(f.Bool("passed", e.flag));
      break;
    case EventType::kPregnancyTest:
      ISOGUARD_TRY(f.Code("result", &ParseTestResult, e.result, "test result"));
      ISOGUARD_TRY(f.Code("setting", &ParseTestSetting, e.setting, "test setting"));
      ISOGUARD_TRY(f.Code("specimen", &ParseSpecimen, e.specimen, "specimen"));
      break;
    case EventType::kRiskAcknowledgement:
    case EventType::kSecondPrescriber:
      break;
    case EventType::kAssessment:
      ISOGUARD_TRY(f.Code("kind", &ParseAssessmentKind, e.assessment, "assessment kind"));
      break;
    case EventType::kPrescription: {
      if (e.id.empty()) return f.Missing("id");
      ISOGUARD_TRY(f.Code("product", &ParseProduct, e.product, "product"));
      const json::value* d = f.Find("doses_mg");
      if (d == nullptr) return f.Missing("doses_mg");
      if (!d->is_array()) return f.WrongType("doses_mg", *d, "a list of doses in mg");
      const json::array& doses = d->get_array();
      if (doses.empty() || doses.size() > limits.max_doses) {
        return Error::BadInput("must hold 1 to " + std::to_string(limits.max_doses) +
                                   " doses, got " + std::to_string(doses.size()),
                               f.Path("doses_mg"));
      }
      for (size_t i = 0; i < doses.size(); ++i) {
        const FieldPath item_path = f.At("doses_mg").Item(i);
        double mg = 0;
        ISOGUARD_TRY(Fields::NumberValue(doses[i], item_path, mg));
        if (!(mg > 0 && mg <= limits.max_dose_mg)) {
          return Error::BadInput("must be in (0, " + FormatNumber(limits.max_dose_mg) +
                                     "] mg, got " + FormatNumber(mg),
                                 item_path.str());
        }
        e.doses_mg[i] = mg;
      }
      e.dose_count = static_cast<uint8_t>(doses.size());
      ISOGUARD_TRY(
          f.Integer("days_supply", limits.min_days_supply, limits.max_days_supply, e.days_supply));
      ISOGUARD_TRY(f.Integer("refills", 0, limits.max_refills, e.refills));
      break;
    }
    case EventType::kDispense:
      ISOGUARD_TRY(f.String("prescription", true, e.ref));
      if (f.Find("days_supply") != nullptr) {
        ISOGUARD_TRY(f.Integer("days_supply", limits.min_days_supply, limits.max_days_supply,
                               e.days_supply));
      }
      break;
    case EventType::kLab: {
      ISOGUARD_TRY(f.Code("test", &ParseLabTest, e.test, "lab test"));
      ISOGUARD_TRY(f.Number("value", e.value));
      if (!(e.value >= 0) || !std::isfinite(e.value)) {
        return Error::BadInput("must be a number >= 0, got " + FormatNumber(e.value),
                               f.Path("value"));
      }
      ISOGUARD_TRY(f.Code("unit", &ParseLabUnit, e.unit, "unit"));
      bool enzyme = e.test == LabTest::kALT || e.test == LabTest::kAST;
      bool unit_fits = enzyme ? e.unit == LabUnit::kUnitsPerLiter
                              : (e.unit == LabUnit::kMgPerDl || e.unit == LabUnit::kMmolPerL);
      if (!unit_fits) {
        return Error::BadInput("unit " + Shown(ToString(e.unit)) + " does not fit test " +
                                   std::string(ToString(e.test)) +
                                   (enzyme ? " (use U/L)" : " (use mg/dL or mmol/L)"),
                               f.Path("unit"));
      }
      if (f.Find("uln") != nullptr) {
        ISOGUARD_TRY(f.Number("uln", e.uln));
        if (!(e.uln > 0) || !std::isfinite(e.uln)) {
          return Error::BadInput("must be a number > 0, got " + FormatNumber(e.uln),
                                 f.Path("uln"));
        }
      }
      break;
    }
    case EventType::kPhq9: {
      const json::value* items = f.Find("items");
      if (items == nullptr) return f.Missing("items");
      if (!items->is_array()) return f.WrongType("items", *items, "a list of nine scores");
      const json::array& a = items->get_array();
      if (a.size() != 9) {
        return Error::BadInput("must hold exactly 9 scores, got " + std::to_string(a.size()),
                               f.Path("items"));
      }
      for (size_t i = 0; i < 9; ++i) {
        int32_t score = 0;
        ISOGUARD_TRY(Fields::IntegerValue(a[i], f.At("items").Item(i), 0, 3, score));
        e.phq9_items[i] = static_cast<uint8_t>(score);
      }
      break;
    }
    case EventType::kMedication:
      ISOGUARD_TRY(f.String("name", true, e.name));
      e.name_normalized = NormalizeMedicationName(e.name);
      ISOGUARD_TRY(f.String("atc", false, e.atc));
      e.atc = NormalizeAtc(e.atc);
      ISOGUARD_TRY(f.Code("action", &ParseMedicationAction, e.action, "medication action"));
      break;
    case EventType::kAdverseEvent:
      ISOGUARD_TRY(f.String("term", true, e.name));
      ISOGUARD_TRY(f.Bool("serious", e.flag));
      break;
    case EventType::kMissedDose:
      ISOGUARD_TRY(f.DateOrTime("date", e.date));
      break;
    case EventType::kTreatmentEnd:
      ISOGUARD_TRY(f.DateOrTime("last_dose", e.date));
      break;
    case EventType::kPrescriptionCancel:
      ISOGUARD_TRY(f.String("prescription", true, e.ref));
      break;
    case EventType::kEnteredInError:
      ISOGUARD_TRY(f.String("target", true, e.ref));
      break;
    case EventType::kAuthorization: {
      ISOGUARD_TRY(f.String("prescription", true, e.ref));
      ISOGUARD_TRY(f.String("authorization", true, e.ref2));
      ISOGUARD_TRY(f.Time("dispense_by", e.dispense_by));
      break;
    }
    case EventType::kAuthorizationReversal:
      ISOGUARD_TRY(f.String("authorization", true, e.ref2));
      break;
  }
  return {};
}

}  // namespace

Result<Record> ParseRecordObject(const json::object& root, const ParseOptions& options) {
  Record record;
  const json::value* patient = root.if_contains("patient");
  if (patient == nullptr || patient->is_null()) {
    return Error::BadInput("required field is missing", "patient");
  }
  ISOGUARD_TRY(ParsePatient(*patient, options.limits, record.patient));

  const json::value* events = root.if_contains("events");
  if (events == nullptr || events->is_null()) {
    return Error::BadInput("required field is missing", "events");
  }
  if (!events->is_array()) {
    return Error::BadInput("must be a list of events, got " + KindOf(*events), "events");
  }
  const json::array& list = events->get_array();
  if (list.size() > options.limits.max_events) {
    return Error::BadInput("holds " + std::to_string(list.size()) + " events; at most " +
                               std::to_string(options.limits.max_events) + " are allowed",
                           "events");
  }
  record.events.resize(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    ISOGUARD_TRY(ParseEvent(list[i], i, options, record.events[i]));
  }

  // Cross-event checks: unique ids; every dispense names a prescription of the record.
  // Ids are sorted by hash (cheap integer comparisons), equal hashes compared as text.
  struct IdEntry {
    size_t hash;
    uint32_t index;
  };
  std::vector<IdEntry> ids;
  ids.reserve(record.events.size());
  const std::hash<std::string_view> hasher;
  for (const Event& e : record.events) {
    if (!e.id.empty()) ids.push_back({hasher(e.id), e.index});
  }
  auto id_of = [&record](const IdEntry& entry) -> const std::string& {
    return record.events[entry.index].id;
  };
  std::sort(ids.begin(), ids.end(), [&](const IdEntry& a, const IdEntry& b) {
    return a.hash != b.hash ? a.hash < b.hash : a.index < b.index;
  });
  for (size_t i = 1; i < ids.size(); ++i) {
    for (size_t j = i; j-- > 0 && ids[j].hash == ids[i].hash;) {
      if (id_of(ids[j]) == id_of(ids[i])) {
        return Error::BadInput("duplicate id " + Shown(id_of(ids[i])) + " (also events[" +
                                   std::to_string(ids[j].index) + "])",
                               "events[" + std::to_string(ids[i].index) + "].id");
      }
    }
  }
  for (const Event& e : record.events) {
    if (e.type != EventType::kDispense) continue;
    const size_t h = hasher(e.ref);
    auto it = std::lower_bound(ids.begin(), ids.end(), h,
                               [](const IdEntry& entry, size_t x) { return entry.hash < x; });
    bool found = false;
    for (; it != ids.end() && it->hash == h; ++it) {
      if (id_of(*it) == e.ref && record.events[it->index].type == EventType::kPrescription) {
        found = true;
      }
    }
    if (!found) {
      return Error::BadInput("names prescription " + Shown(e.ref) + ", which is not in the record",
                             "events[" + std::to_string(e.index) + "].prescription");
    }
  }

  // Order by time, ties in input order. Most records arrive in order; otherwise sort indexes
  // rather than moving the (large) events around.
  auto by_time = [](const Event& a, const Event& b) { return a.at < b.at; };
  if (!std::is_sorted(record.events.begin(), record.events.end(), by_time)) {
    std::vector<uint32_t> order(record.events.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&record](uint32_t a, uint32_t b) {
      return record.events[a].at < record.events[b].at;
    });
    std::vector<Event> sorted;
    sorted.reserve(record.events.size());
    for (uint32_t i : order) sorted.push_back(std::move(record.events[i]));
    record.events = std::move(sorted);
  }
  return record;
}

Result<Record> ParseRecord(std::string_view text, const ParseOptions& options) {
  if (text.size() > options.limits.max_bytes) {
    return Error::BadInput("the record is " + std::to_string(text.size()) + " bytes; at most " +
                               std::to_string(options.limits.max_bytes) + " are allowed",
                           "record");
  }
  // Each thread keeps one parser and one arena buffer: the DOM of a record is built in the
  // arena and dropped at once, with no allocation for records that fit it.
  constexpr size_t kArenaBytes = 256 * 1024;
  thread_local std::unique_ptr<unsigned char[]> buffer(new unsigned char[kArenaBytes]);
  thread_local json::parser parser(json::storage_ptr(), [] {
    json::parse_options parse_options;
    parse_options.max_depth = 64;
    return parse_options;
  }());
  json::monotonic_resource arena(buffer.get(), kArenaBytes);
  parser.reset(&arena);
  boost::system::error_code ec;
  parser.write(text.data(), text.size(), ec);  // the whole text: incomplete JSON is an error
  json::value root = ec ? json::value() : parser.release();
  if (ec) {
    return Error::BadInput("the record is not valid JSON: " + ec.message(), "record");
  }
  if (!root.is_object()) {
    return Error::BadInput("must be a JSON object, got " + KindOf(root), "record");
  }
  return ParseRecordObject(root.get_object(), options);
}

}  // namespace isoguard
