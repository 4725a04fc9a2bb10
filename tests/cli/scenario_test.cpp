// Data-driven scenario tests, written from the contract (docs: record-format.md).
//
// Every tests/scenarios/*.json file holds cases; each case becomes one test instance named
// <file>_<case>. A case builds a record (a shared base record of its file or an inline one,
// with patient overrides and events added or dropped), writes it to a temporary file, runs
// `isoguard ARGS... RECORD` in-process through RunCli, parses stdout as JSON and checks the
// case's expectations. The format is described in tests/scenarios/README.md.
//
// The expected values were worked out by hand from the contract, independently of the engine.
// The checks here (instant parsing, subset matching) deliberately use nothing of the engine.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "cli/cli.h"

namespace isoguard {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

// ---------------------------------------------------------------------------------------------
// The contract's code lists ("Denial reason codes", "Alert codes", "Due codes", interaction
// classes). The coverage test fails when a code is not expected by at least one case.

const std::vector<std::string>& ContractReasonCodes() {
  static const std::vector<std::string> codes = {
      "NOT_ENROLLED",
      "NO_PRESCRIPTION",
      "ALREADY_DISPENSED",
      "SUPPLY_OVER_LIMIT",
      "REFILLS_NOT_ALLOWED",
      "PREGNANCY_TEST_POSITIVE",
      "PREGNANCY_TEST_MISSING",
      "PREGNANCY_TEST_WINDOW_EXPIRED",
      "PREGNANCY_TEST_SETTING",
      "CONFIRMATION_TEST_MISSING",
      "CONFIRMATION_TOO_EARLY",
      "LOCKOUT",
      "CONTRACEPTION_INSUFFICIENT",
      "CONTRACEPTION_LEAD_IN",
      "CONTRACEPTION_NOT_CONFIRMED",
      "COMPREHENSION_MISSING",
      "COUNSELING_MISSING",
      "VISIT_WINDOW_EXPIRED",
      "PRESCRIPTION_WINDOW_EXPIRED",
      "RISK_ACKNOWLEDGEMENT_MISSING",
      "BASELINE_ASSESSMENT_MISSING",
      "SECOND_PRESCRIBER_MISSING",
  };
  return codes;
}

const std::vector<std::string>& ContractAlertCodes() {
  static const std::vector<std::string> codes = {
      "TG_HIGH",
      "TG_CRITICAL",
      "CHOLESTEROL_HIGH",
      "CHOLESTEROL_CRITICAL",
      "LIVER_ENZYMES_HIGH",
      "LIVER_ENZYMES_CRITICAL",
      "BASELINE_LABS_MISSING",
      "PHQ9_MODERATE",
      "PHQ9_SEVERE",
      "SUICIDAL_IDEATION",
      "INTERACTION",
      "PREGNANCY",
      "UNDER_MINIMUM_AGE",
      "DOSE_OUT_OF_RANGE",
      "SECOND_COURSE_TOO_SOON",
      "PRODUCT_SWITCH",
      "SERIOUS_ADVERSE_EVENT",
  };
  return codes;
}

const std::vector<std::string>& ContractDueCodes() {
  static const std::vector<std::string> codes = {
      "SCREENING_TEST",        "CONFIRMATION_TEST",
      "PREGNANCY_TEST",        "COMPREHENSION",
      "COUNSELING_VISIT",      "LABS_BASELINE",
      "LABS_FOLLOW_UP",        "PHQ9",
      "END_OF_TREATMENT_TEST", "POST_TREATMENT_TEST",
      "CONTRACEPTION_UNTIL",   "NO_BLOOD_DONATION_UNTIL",
      "RISK_ACKNOWLEDGEMENT",
  };
  return codes;
}

const std::vector<std::string>& ContractInteractionClasses() {
  static const std::vector<std::string> classes = {
      "tetracycline",
      "vitamin_a",
      "retinoid",
      "progestin_only_pill",
      "st_johns_wort",
      "phenytoin",
      "systemic_corticosteroid",
      "alcohol",
  };
  return classes;
}

// The keys a case and its "expect" may hold: anything else is a typo that would silently
// check nothing.
const std::set<std::string>& CaseKeys() {
  static const std::set<std::string> keys = {"name",       "about",       "record", "patient",
                                             "add_events", "drop_events", "args",   "expect"};
  return keys;
}
const std::set<std::string>& ExpectKeys() {
  static const std::set<std::string> keys = {
      "exit",    "program",         "decision",        "dispense_by",
      "reasons", "reasons_include", "reasons_exclude", "prescription",
      "alerts",  "alerts_include",  "alerts_exclude",  "alert_counts",
      "due",     "due_include",     "due_exclude",     "dose",
      "output",  "stderr_contains",
  };
  return keys;
}

// ---------------------------------------------------------------------------------------------
// Loading the cases.

struct ScenarioCase {
  std::string file;       // file name without .json
  std::string name;       // the case's name
  std::string test_name;  // <file>_<case>, sanitized for GoogleTest
  json::object records;   // the file's shared records
  json::object spec;      // the case object
};

// GoogleTest prints parameters in failure messages; the case's identity is what matters.
void PrintTo(const ScenarioCase& c, std::ostream* os) { *os << c.file << ".json: " << c.name; }

struct Corpus {
  std::vector<ScenarioCase> cases;
  std::vector<std::string> errors;  // files or cases that could not be loaded
};

std::string Sanitize(std::string_view s) {
  std::string out;
  for (char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    out.push_back(std::isalnum(u) != 0 ? ch : '_');
  }
  return out;
}

fs::path ScenarioDir() { return fs::path(ISOGUARD_TEST_DATA_DIR) / "scenarios"; }

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Corpus LoadCorpus() {
  Corpus corpus;
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(ScenarioDir(), ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".json") {
      files.push_back(entry.path());
    }
  }
  if (ec) corpus.errors.push_back("cannot list " + ScenarioDir().string() + ": " + ec.message());
  std::sort(files.begin(), files.end());

  std::set<std::string> test_names;
  for (const fs::path& path : files) {
    const std::string file = path.stem().string();
    json::error_code jec;
    json::value doc = json::parse(ReadFile(path), jec);
    if (jec || !doc.is_object()) {
      corpus.errors.push_back(file + ".json: not a JSON object: " + jec.message());
      continue;
    }
    const json::object& top = doc.as_object();
    json::object records;
    if (const json::value* r = top.if_contains("records")) {
      if (r->is_object()) {
        records = r->as_object();
      } else {
        corpus.errors.push_back(file + ".json: \"records\" is not an object");
      }
    }
    const json::value* cases = top.if_contains("cases");
    if (cases == nullptr || !cases->is_array()) {
      corpus.errors.push_back(file + ".json: no \"cases\" array");
      continue;
    }
    std::set<std::string> names;
    size_t index = 0;
    for (const json::value& c : cases->as_array()) {
      const std::string where = file + ".json: cases[" + std::to_string(index++) + "]";
      if (!c.is_object()) {
        corpus.errors.push_back(where + " is not an object");
        continue;
      }
      const json::object& obj = c.as_object();
      const json::value* name = obj.if_contains("name");
      if (name == nullptr || !name->is_string() || name->as_string().empty()) {
        corpus.errors.push_back(where + " has no name");
        continue;
      }
      ScenarioCase sc;
      sc.file = file;
      sc.name = std::string(name->as_string());
      sc.records = records;
      sc.spec = obj;
      if (!names.insert(sc.name).second) {
        corpus.errors.push_back(where + ": duplicate case name " + sc.name);
      }
      for (const auto& kv : obj) {
        if (CaseKeys().count(std::string(kv.key())) == 0) {
          corpus.errors.push_back(where + " (" + sc.name + "): unknown key \"" +
                                  std::string(kv.key()) + "\"");
        }
      }
      const json::value* about = obj.if_contains("about");
      if (about == nullptr || !about->is_string() || about->as_string().empty()) {
        corpus.errors.push_back(where + " (" + sc.name + "): no \"about\" sentence");
      }
      const json::value* args = obj.if_contains("args");
      if (args == nullptr || !args->is_array() || args->as_array().empty()) {
        corpus.errors.push_back(where + " (" + sc.name + "): no \"args\"");
      }
      if (const json::value* expect = obj.if_contains("expect"); expect && expect->is_object()) {
        for (const auto& kv : expect->as_object()) {
          if (ExpectKeys().count(std::string(kv.key())) == 0) {
            corpus.errors.push_back(where + " (" + sc.name + "): unknown expectation \"" +
                                    std::string(kv.key()) + "\"");
          }
        }
      } else {
        corpus.errors.push_back(where + " (" + sc.name + "): no \"expect\" object");
      }
      sc.test_name = Sanitize(file + "_" + sc.name);
      // GoogleTest aborts on duplicate instance names: keep them unique and report the clash.
      if (!test_names.insert(sc.test_name).second) {
        corpus.errors.push_back(where + ": test name " + sc.test_name + " clashes");
        sc.test_name += "_" + std::to_string(corpus.cases.size());
        test_names.insert(sc.test_name);
      }
      corpus.cases.push_back(std::move(sc));
    }
  }
  return corpus;
}

const Corpus& GetCorpus() {
  static const Corpus corpus = LoadCorpus();
  return corpus;
}

// ---------------------------------------------------------------------------------------------
// Independent helpers: ISO 8601 instants and JSON comparison.

int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

// "YYYY-MM-DDTHH:MM[:SS[.fff]](Z|+HH:MM|-HH:MM)" -> milliseconds since the epoch.
std::optional<int64_t> ParseInstantMs(std::string_view s) {
  auto digits = [&](size_t pos, size_t n) -> std::optional<int64_t> {
    if (pos + n > s.size()) return std::nullopt;
    int64_t v = 0;
    for (size_t i = pos; i < pos + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return std::nullopt;
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  auto y = digits(0, 4), mo = digits(5, 2), d = digits(8, 2), h = digits(11, 2), mi = digits(14, 2);
  if (!y || !mo || !d || !h || !mi || s.size() < 17 || s[4] != '-' || s[7] != '-' ||
      (s[10] != 'T' && s[10] != ' ') || s[13] != ':') {
    return std::nullopt;
  }
  size_t pos = 16;
  int64_t sec = 0;
  int64_t ms = 0;
  if (pos < s.size() && s[pos] == ':') {
    auto ss = digits(pos + 1, 2);
    if (!ss) return std::nullopt;
    sec = *ss;
    pos += 3;
    if (pos < s.size() && s[pos] == '.') {
      ++pos;
      int64_t scale = 100;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
        ms += (s[pos] - '0') * scale;
        scale /= 10;
        ++pos;
      }
    }
  }
  int64_t offset_min = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    auto oh = digits(pos + 1, 2), om = digits(pos + 4, 2);
    if (!oh || !om || s[pos + 3] != ':') return std::nullopt;
    offset_min = (*oh * 60 + *om) * (s[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return std::nullopt;  // an offset is required
  }
  if (pos != s.size()) return std::nullopt;
  const int64_t days = DaysFromCivil(*y, *mo, *d);
  const int64_t local_sec = days * 86400 + *h * 3600 + *mi * 60 + sec;
  return (local_sec - offset_min * 60) * 1000 + ms;
}

std::optional<double> AsNumber(const json::value& v) {
  if (v.is_int64()) return static_cast<double>(v.as_int64());
  if (v.is_uint64()) return static_cast<double>(v.as_uint64());
  if (v.is_double()) return v.as_double();
  return std::nullopt;
}

std::string Str(const json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_double()) {
    std::ostringstream ss;
    ss << std::setprecision(12) << v.as_double();
    return ss.str();
  }
  return json::serialize(v);
}

bool IsNullOrAbsent(const json::value* v) { return v == nullptr || v->is_null(); }

// mg/kg figures may be rounded to 2 decimals; every other number compares (nearly) exactly.
double ToleranceFor(std::string_view key) {
  return key.find("per_kg") != std::string_view::npos ? 0.006 : 1e-9;
}

// Checks that `expected` is a subset of `actual`: objects by key, arrays element by element
// (same length), numbers with the key's tolerance, null = absent or null.
void MatchSubset(const json::value& expected, const json::value* actual, const std::string& path,
                 std::string_view key, std::vector<std::string>& mismatches) {
  if (expected.is_null()) {
    if (!IsNullOrAbsent(actual)) {
      mismatches.push_back(path + ": expected null or absent, got " + Str(*actual));
    }
    return;
  }
  if (actual == nullptr) {
    mismatches.push_back(path + ": missing (expected " + Str(expected) + ")");
    return;
  }
  if (auto e = AsNumber(expected)) {
    auto a = AsNumber(*actual);
    if (!a || std::fabs(*a - *e) > ToleranceFor(key)) {
      mismatches.push_back(path + ": expected " + Str(expected) + ", got " + Str(*actual));
    }
    return;
  }
  if (expected.is_object()) {
    if (!actual->is_object()) {
      mismatches.push_back(path + ": expected an object, got " + Str(*actual));
      return;
    }
    for (const auto& kv : expected.as_object()) {
      const std::string k(kv.key());
      MatchSubset(kv.value(), actual->as_object().if_contains(k), path + "." + k, k, mismatches);
    }
    return;
  }
  if (expected.is_array()) {
    if (!actual->is_array() || actual->as_array().size() != expected.as_array().size()) {
      mismatches.push_back(path + ": expected " + Str(expected) + ", got " + Str(*actual));
      return;
    }
    for (size_t i = 0; i < expected.as_array().size(); ++i) {
      MatchSubset(expected.as_array()[i], &actual->as_array()[i],
                  path + "[" + std::to_string(i) + "]", key, mismatches);
    }
    return;
  }
  if (expected != *actual) {
    mismatches.push_back(path + ": expected " + Str(expected) + ", got " + Str(*actual));
  }
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return "[" + out + "]";
}

std::vector<std::string> StringList(const json::value* v) {
  std::vector<std::string> out;
  if (v == nullptr || !v->is_array()) return out;
  for (const auto& item : v->as_array()) out.push_back(Str(item));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Running one case.

// Builds the case's record, or returns nullopt when the case has none (`dose`).
std::optional<json::object> BuildRecord(const ScenarioCase& c, std::vector<std::string>& problems) {
  const json::value* r = c.spec.if_contains("record");
  if (IsNullOrAbsent(r)) return std::nullopt;
  json::object record;
  if (r->is_string()) {
    const json::value* base = c.records.if_contains(r->as_string());
    if (base == nullptr || !base->is_object()) {
      problems.push_back("no shared record named \"" + std::string(r->as_string()) + "\"");
      return json::object{};
    }
    record = base->as_object();
  } else if (r->is_object()) {
    record = r->as_object();
  } else {
    problems.push_back("\"record\" must be a name, an object or null");
    return json::object{};
  }
  if (const json::value* p = c.spec.if_contains("patient"); p && p->is_object()) {
    json::value& patient = record["patient"];
    if (!patient.is_object()) patient = json::object{};
    for (const auto& kv : p->as_object()) patient.as_object()[kv.key()] = kv.value();
  }
  json::value& events_value = record["events"];
  if (!events_value.is_array()) events_value = json::array{};
  json::array& events = events_value.as_array();
  if (const json::value* drop = c.spec.if_contains("drop_events"); drop && drop->is_array()) {
    for (const auto& id : drop->as_array()) {
      auto it = std::find_if(events.begin(), events.end(), [&](const json::value& e) {
        const json::value* eid = e.is_object() ? e.as_object().if_contains("id") : nullptr;
        return eid != nullptr && *eid == id;
      });
      if (it == events.end()) {
        problems.push_back("drop_events: no event with id " + Str(id));
      } else {
        events.erase(it);
      }
    }
  }
  if (const json::value* add = c.spec.if_contains("add_events"); add && add->is_array()) {
    for (const auto& e : add->as_array()) events.push_back(e);
  }
  return record;
}

// Matches an expectation item (a code, or an object of fields) against the items of a list
// (alerts or due items). A null field in the pattern means "absent or null".
bool AnyMatches(const json::value& want, const std::vector<const json::object*>& items) {
  json::object pattern;
  if (want.is_string()) {
    pattern["code"] = want;
  } else if (want.is_object()) {
    pattern = want.as_object();
  }
  return std::any_of(items.begin(), items.end(), [&](const json::object* item) {
    for (const auto& kv : pattern) {
      const json::value* v = item->if_contains(kv.key());
      if (kv.value().is_null() ? !IsNullOrAbsent(v) : (v == nullptr || *v != kv.value())) {
        return false;
      }
    }
    return true;
  });
}

// The objects of a top-level list ("alerts", "due") that carry a code, and their codes.
struct CodedItems {
  std::vector<const json::object*> items;
  std::vector<std::string> codes;
};
CodedItems ItemsOf(const json::object& top, std::string_view key) {
  CodedItems out;
  if (const json::value* list = top.if_contains(key); list && list->is_array()) {
    for (const auto& item : list->as_array()) {
      if (const json::object* o = item.if_object(); o && o->contains("code")) {
        out.items.push_back(o);
        out.codes.push_back(Str(o->at("code")));
      }
    }
  }
  return out;
}

bool SameCodeSet(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  return std::set<std::string>(a.begin(), a.end()) == std::set<std::string>(b.begin(), b.end());
}

// The contract's invariants of every `evaluate` result: an authorization has a dispense_by and
// no reasons, a denial at least one reason and no dispense_by; reasons have a code and a
// message, alerts a code and a severity; alerts and due are lists.
void CheckInvariants(const json::object& top, std::vector<std::string>& failures) {
  const json::object* auth = nullptr;
  if (const json::value* a = top.if_contains("authorization")) auth = a->if_object();
  if (auth == nullptr) {
    failures.push_back("no \"authorization\" object");
    return;
  }
  const json::value* reasons = auth->if_contains("reasons");
  if (reasons == nullptr || !reasons->is_array()) {
    failures.push_back("authorization has no \"reasons\" array");
  } else {
    for (const auto& r : reasons->as_array()) {
      const json::object* ro = r.if_object();
      const json::value* code = ro ? ro->if_contains("code") : nullptr;
      const json::value* msg = ro ? ro->if_contains("message") : nullptr;
      if (code == nullptr || !code->is_string()) {
        failures.push_back("a reason without a string \"code\": " + Str(r));
      } else if (msg == nullptr || !msg->is_string() || msg->as_string().empty()) {
        failures.push_back("reason " + Str(*code) + " has no message");
      }
    }
  }
  const size_t reason_count = reasons && reasons->is_array() ? reasons->as_array().size() : 0;
  const bool has_dispense_by = !IsNullOrAbsent(auth->if_contains("dispense_by"));
  const json::value* decision = auth->if_contains("decision");
  const std::string d = decision ? Str(*decision) : "";
  if (d == "authorized") {
    if (reason_count != 0) failures.push_back("an authorization must have no reasons");
    if (!has_dispense_by) failures.push_back("authorized without a dispense_by");
  } else if (d == "denied") {
    if (reason_count == 0) failures.push_back("a denial must have at least one reason");
    if (has_dispense_by) failures.push_back("denied but has a dispense_by");
  } else {
    failures.push_back("decision is neither authorized nor denied");
  }
  if (const json::value* al = top.if_contains("alerts"); al && al->is_array()) {
    for (const auto& a : al->as_array()) {
      const json::object* ao = a.if_object();
      const json::value* sev = ao ? ao->if_contains("severity") : nullptr;
      const std::string s = sev ? Str(*sev) : "";
      if (ao == nullptr || !ao->contains("code") ||
          (s != "info" && s != "warning" && s != "critical")) {
        failures.push_back("malformed alert " + Str(a));
      }
    }
  } else {
    failures.push_back("no \"alerts\" array");
  }
  if (const json::value* due = top.if_contains("due"); due == nullptr || !due->is_array()) {
    failures.push_back("no \"due\" array");
  }
}

// program, decision, prescription, dispense_by and the reasons.
void CheckAuthorization(const json::object& expect, const json::object& top,
                        std::vector<std::string>& failures) {
  const json::object empty;
  const json::value* auth_value = top.if_contains("authorization");
  const json::object& auth =
      auth_value != nullptr && auth_value->is_object() ? auth_value->as_object() : empty;
  auto shown = [](const json::value* v) { return v ? Str(*v) : std::string("(absent)"); };
  auto check_equal = [&](const char* key, const json::object& in) {
    const json::value* e = expect.if_contains(key);
    if (e == nullptr) return;
    const json::value* a = in.if_contains(key);
    if (e->is_null() ? !IsNullOrAbsent(a) : (a == nullptr || *a != *e)) {
      failures.push_back(std::string(key) + ": expected " + Str(*e) + ", got " + shown(a));
    }
  };
  check_equal("program", top);
  check_equal("decision", auth);
  check_equal("prescription", auth);

  if (const json::value* e = expect.if_contains("dispense_by")) {
    const json::value* a = auth.if_contains("dispense_by");
    if (e->is_null()) {
      if (!IsNullOrAbsent(a)) failures.push_back("dispense_by: expected none, got " + Str(*a));
    } else if (IsNullOrAbsent(a) || !a->is_string()) {
      failures.push_back("dispense_by: expected " + Str(*e) + ", got " + shown(a));
    } else {
      const auto want = ParseInstantMs(Str(*e));
      const auto got = ParseInstantMs(Str(*a));
      if (!want) failures.push_back("dispense_by: the case's value is not an instant: " + Str(*e));
      if (!got) failures.push_back("dispense_by: not an ISO 8601 time with offset: " + Str(*a));
      if (want && got && *want != *got) {
        failures.push_back("dispense_by: expected the instant " + Str(*e) + ", got " + Str(*a));
      }
    }
  }

  const std::vector<std::string> reasons = ItemsOf(auth, "reasons").codes;
  const std::set<std::string> reason_set(reasons.begin(), reasons.end());
  if (const json::value* e = expect.if_contains("reasons")) {
    if (!SameCodeSet(StringList(e), reasons)) {
      failures.push_back("reasons: expected exactly " + Join(StringList(e)) + ", got " +
                         Join(reasons));
    }
  }
  for (const auto& code : StringList(expect.if_contains("reasons_include"))) {
    if (reason_set.count(code) == 0) {
      failures.push_back("reasons: expected to include " + code + ", got " + Join(reasons));
    }
  }
  for (const auto& code : StringList(expect.if_contains("reasons_exclude"))) {
    if (reason_set.count(code) != 0) failures.push_back("reasons: expected no " + code);
  }
}

void CheckAlerts(const json::object& expect, const json::object& top,
                 std::vector<std::string>& failures) {
  const CodedItems alerts = ItemsOf(top, "alerts");
  if (const json::value* e = expect.if_contains("alerts")) {
    if (!SameCodeSet(StringList(e), alerts.codes)) {
      failures.push_back("alerts: expected exactly the codes " + Join(StringList(e)) + ", got " +
                         Join(alerts.codes));
    }
  }
  if (const json::value* e = expect.if_contains("alerts_include"); e && e->is_array()) {
    for (const auto& want : e->as_array()) {
      if (!AnyMatches(want, alerts.items)) {
        failures.push_back("alerts: no alert matching " + Str(want) + " among " +
                           Join(alerts.codes));
      }
    }
  }
  for (const auto& code : StringList(expect.if_contains("alerts_exclude"))) {
    if (std::count(alerts.codes.begin(), alerts.codes.end(), code) != 0) {
      failures.push_back("alerts: expected no " + code + " alert, got " + Join(alerts.codes));
    }
  }
  if (const json::value* e = expect.if_contains("alert_counts"); e && e->is_object()) {
    for (const auto& kv : e->as_object()) {
      const auto n = std::count(alerts.codes.begin(), alerts.codes.end(), std::string(kv.key()));
      if (static_cast<double>(n) != AsNumber(kv.value()).value_or(-1)) {
        failures.push_back("alerts: expected " + Str(kv.value()) + " " + std::string(kv.key()) +
                           " alert(s), got " + std::to_string(n));
      }
    }
  }
}

void CheckDue(const json::object& expect, const json::object& top,
              std::vector<std::string>& failures) {
  const CodedItems due = ItemsOf(top, "due");
  std::vector<std::string> shown;
  for (const json::object* o : due.items) {
    shown.push_back(Str(o->at("code")) + (o->contains("due_by") ? "@" + Str(o->at("due_by")) : ""));
  }
  if (const json::value* e = expect.if_contains("due")) {
    if (!SameCodeSet(StringList(e), due.codes)) {
      failures.push_back("due: expected exactly the codes " + Join(StringList(e)) + ", got " +
                         Join(shown));
    }
  }
  if (const json::value* e = expect.if_contains("due_include"); e && e->is_array()) {
    for (const auto& want : e->as_array()) {
      if (!AnyMatches(want, due.items)) {
        failures.push_back("due: no item matching " + Str(want) + " among " + Join(shown));
      }
    }
  }
  for (const auto& code : StringList(expect.if_contains("due_exclude"))) {
    if (std::count(due.codes.begin(), due.codes.end(), code) != 0) {
      failures.push_back("due: expected no " + code + " item, got " + Join(shown));
    }
  }
}

class ScenarioTest : public testing::TestWithParam<ScenarioCase> {};

TEST_P(ScenarioTest, Case) {
  const ScenarioCase& c = GetParam();
  std::vector<std::string> problems;
  const std::optional<json::object> record = BuildRecord(c, problems);
  ASSERT_TRUE(problems.empty()) << c.file << ".json: " << c.name << ": " << Join(problems);

  std::vector<std::string> args = StringList(c.spec.if_contains("args"));
  fs::path record_path;
  if (record) {
    static std::atomic<int> counter{0};
    record_path =
        fs::temp_directory_path() / ("isoguard-scenario-" + std::to_string(::getpid()) + "-" +
                                     std::to_string(counter++) + "-" + c.test_name + ".json");
    std::ofstream file(record_path, std::ios::binary);
    file << json::serialize(*record);
    file.close();
    ASSERT_TRUE(file) << "cannot write " << record_path;
    args.push_back(record_path.string());
  }

  std::ostringstream out;
  std::ostringstream err;
  const int exit_code = RunCli(args, out, err);
  if (!record_path.empty()) {
    std::error_code ec;
    fs::remove(record_path, ec);
  }

  std::string shown_args;
  for (const auto& a : args) shown_args += " " + a;
  const std::string context = "\n  case: " + c.file + ".json: " + c.name +
                              "\n  about: " + Str(c.spec.at("about")) + "\n  command: isoguard" +
                              shown_args + "\n  exit: " + std::to_string(exit_code) +
                              "\n  stdout: " + out.str() + "\n  stderr: " + err.str();

  const json::value* expect_value = c.spec.if_contains("expect");
  const json::object expect = expect_value != nullptr && expect_value->is_object()
                                  ? expect_value->as_object()
                                  : json::object{};
  int expected_exit = 0;
  if (const json::value* e = expect.if_contains("exit")) {
    expected_exit = static_cast<int>(AsNumber(*e).value_or(-1));
  }
  ASSERT_EQ(exit_code, expected_exit) << "wrong exit code" << context;
  for (const std::string& needle : StringList(expect.if_contains("stderr_contains"))) {
    EXPECT_NE(err.str().find(needle), std::string::npos)
        << "stderr does not contain \"" << needle << "\"" << context;
  }
  if (exit_code != 0) return;

  json::error_code jec;
  const json::value output = json::parse(out.str(), jec);
  ASSERT_FALSE(jec) << "stdout is not JSON: " << jec.message() << context;
  ASSERT_TRUE(output.is_object()) << "stdout is not a JSON object" << context;
  const json::object& top = output.as_object();

  std::vector<std::string> failures;
  if (!args.empty() && args[0] == "evaluate") CheckInvariants(top, failures);
  CheckAuthorization(expect, top, failures);
  CheckAlerts(expect, top, failures);
  CheckDue(expect, top, failures);
  if (const json::value* e = expect.if_contains("dose")) {
    MatchSubset(*e, top.if_contains("dose"), "dose", "dose", failures);
  }
  if (const json::value* e = expect.if_contains("output")) {
    MatchSubset(*e, &output, "output", "", failures);
  }
  if (!failures.empty()) {
    std::string listed;
    for (const auto& f : failures) listed += "\n    - " + f;
    ADD_FAILURE() << failures.size() << " expectation(s) failed:" << listed << context;
  }
}

INSTANTIATE_TEST_SUITE_P(Scenarios, ScenarioTest, testing::ValuesIn(GetCorpus().cases),
                         [](const testing::TestParamInfo<ScenarioCase>& param_info) {
                           return param_info.param.test_name;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ScenarioTest);

// ---------------------------------------------------------------------------------------------
// Checks of the corpus itself.

TEST(ScenarioFiles, LoadAndAreWellFormed) {
  const Corpus& corpus = GetCorpus();
  EXPECT_TRUE(corpus.errors.empty()) << Join(corpus.errors);
  EXPECT_GE(corpus.cases.size(), 120u) << "the scenario suite should hold at least 120 cases";
}

// Every reason, alert and due code of the contract, and every interaction class, is expected
// (positively) by at least one case: dropping the last case of a code fails here.
TEST(ScenarioCoverage, EveryContractCodeIsExpectedSomewhere) {
  std::set<std::string> reasons, alerts, due, classes;
  auto code_of = [](const json::value& v) -> std::string {
    if (v.is_string()) return std::string(v.as_string());
    if (v.is_object() && v.as_object().contains("code")) return Str(v.as_object().at("code"));
    return "";
  };
  for (const ScenarioCase& c : GetCorpus().cases) {
    const json::value* e = c.spec.if_contains("expect");
    if (e == nullptr || !e->is_object()) continue;
    const json::object& x = e->as_object();
    for (const char* key : {"reasons", "reasons_include"}) {
      for (const auto& code : StringList(x.if_contains(key))) reasons.insert(code);
    }
    for (const char* key : {"alerts", "alerts_include"}) {
      if (const json::value* list = x.if_contains(key); list && list->is_array()) {
        for (const auto& item : list->as_array()) {
          alerts.insert(code_of(item));
          if (item.is_object() && item.as_object().contains("class")) {
            classes.insert(Str(item.as_object().at("class")));
          }
        }
      }
    }
    for (const char* key : {"due", "due_include"}) {
      if (const json::value* list = x.if_contains(key); list && list->is_array()) {
        for (const auto& item : list->as_array()) due.insert(code_of(item));
      }
    }
  }
  auto missing = [](const std::vector<std::string>& all, const std::set<std::string>& seen) {
    std::vector<std::string> out;
    for (const auto& code : all) {
      if (seen.count(code) == 0) out.push_back(code);
    }
    return out;
  };
  EXPECT_TRUE(missing(ContractReasonCodes(), reasons).empty())
      << "reason codes no case expects: " << Join(missing(ContractReasonCodes(), reasons));
  EXPECT_TRUE(missing(ContractAlertCodes(), alerts).empty())
      << "alert codes no case expects: " << Join(missing(ContractAlertCodes(), alerts));
  EXPECT_TRUE(missing(ContractDueCodes(), due).empty())
      << "due codes no case expects: " << Join(missing(ContractDueCodes(), due));
  EXPECT_TRUE(missing(ContractInteractionClasses(), classes).empty())
      << "interaction classes no case expects: "
      << Join(missing(ContractInteractionClasses(), classes));
}

// The instant comparison the runner relies on.
TEST(ScenarioRunner, ParsesInstantsWithOffsets) {
  EXPECT_EQ(ParseInstantMs("2026-09-16T23:59:59-04:00"), ParseInstantMs("2026-09-17T03:59:59Z"));
  EXPECT_EQ(ParseInstantMs("2026-11-04T23:59:59-05:00"),
            ParseInstantMs("2026-11-05T04:59:59.000Z"));
  EXPECT_NE(ParseInstantMs("2026-11-04T23:59:59-05:00"),
            ParseInstantMs("2026-11-04T23:59:59-04:00"));
  EXPECT_EQ(ParseInstantMs("1970-01-01T00:00:00Z"), std::optional<int64_t>(0));
  EXPECT_FALSE(ParseInstantMs("2026-09-16T23:59:59").has_value());
  EXPECT_FALSE(ParseInstantMs("2026-09-16").has_value());
}

}  // namespace
}  // namespace isoguard
