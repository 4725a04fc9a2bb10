// The synthetic cohort generator. Each patient's story is planned backwards from where it must
// stand on the cohort's "today" (a prescription waiting at the pharmacy, a course ended last
// year, ...), then told forwards as events, each on a local date and time in the patient's zone.
//
// Every number below is a sampling choice of the generator (how often, how much), not a rule of
// any program: the engine reads its rules from programs/ and knowledge/. The generator does know
// when the programs changed, so that a 2024 story looks like a 2024 story.
#include "cli/synth.h"

#include <date/tz.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <ostream>
#include <span>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "domain/codes.h"

namespace isoguard {

using Day = int32_t;  // a local calendar date, days since 1970-01-01

namespace {

constexpr int32_t kMinute = 60;
constexpr int32_t kHour = 3600;

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
constexpr Day DaysFromCivil(int y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const int era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? static_cast<unsigned>(-3) : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<Day>(doe) - 719468;
}

struct Civil {
  int year;
  unsigned month;
  unsigned day;
};

constexpr Civil CivilFromDays(Day z) {
  z += 719468;
  const Day era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int y = static_cast<int>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return Civil{y + (m <= 2 ? 1 : 0), m, d};
}

// When the programs changed (clinical-rules.md §1). The generator uses them only to tell each
// story by the rules of its time; the engine reads its own dates from programs/.
constexpr Day kUs2026From = DaysFromCivil(2026, 8, 8);
constexpr Day kUk2026From = DaysFromCivil(2026, 1, 22);

// ---------------------------------------------------------------------------------------------
// Randomness: xoshiro256** seeded through splitmix64 from (seed, patient index). Our own
// generator and our own distributions, because std:: distributions differ between libraries.

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  Rng(uint64_t seed, uint64_t index) {
    uint64_t a = seed;
    uint64_t mixed = SplitMix64(a) ^ index;
    uint64_t state = SplitMix64(mixed);
    for (auto& s : s_) s = SplitMix64(state);
  }

  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1).
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  // Uniform integer in [lo, hi]; lo when the range is empty.
  int32_t Int(int32_t lo, int32_t hi) {
    if (hi <= lo) return lo;
    const uint64_t span = static_cast<uint64_t>(static_cast<int64_t>(hi) - lo) + 1;
    return static_cast<int32_t>(lo + static_cast<int64_t>(Next() % span));
  }
  bool Chance(double p) { return Uniform() < p; }
  double Range(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  // Index drawn with the given weights.
  size_t Weighted(std::initializer_list<double> weights) {
    double total = 0;
    for (double w : weights) total += w;
    double x = Uniform() * total;
    size_t i = 0;
    for (double w : weights) {
      if (x < w) return i;
      x -= w;
      ++i;
    }
    return weights.size() - 1;
  }
  template <typename T, size_t N>
  const T& Pick(const std::array<T, N>& items) {
    return items[static_cast<size_t>(Next() % N)];
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::array<uint64_t, 4> s_{};
};

// ---------------------------------------------------------------------------------------------
// Sampling tables.

struct ZoneChoice {
  const char* name;
  Jurisdiction jurisdiction;
  double weight;  // share of the jurisdiction's patients
  bool program_zone;
};

// Index 0 is America/New_York: US authorizations are dated in it whatever the patient's zone.
constexpr std::array<ZoneChoice, 18> kZones = {{
    {"America/New_York", Jurisdiction::kUS, 0.52, true},
    {"America/Chicago", Jurisdiction::kUS, 0.18, false},
    {"America/Denver", Jurisdiction::kUS, 0.06, false},
    {"America/Phoenix", Jurisdiction::kUS, 0.03, false},
    {"America/Los_Angeles", Jurisdiction::kUS, 0.17, false},
    {"America/Anchorage", Jurisdiction::kUS, 0.01, false},
    {"Pacific/Honolulu", Jurisdiction::kUS, 0.03, false},
    {"Europe/Brussels", Jurisdiction::kEU, 0.18, true},
    {"Europe/Paris", Jurisdiction::kEU, 0.2, false},
    {"Europe/Berlin", Jurisdiction::kEU, 0.22, false},
    {"Europe/Madrid", Jurisdiction::kEU, 0.1, false},
    {"Europe/Rome", Jurisdiction::kEU, 0.1, false},
    {"Europe/Amsterdam", Jurisdiction::kEU, 0.07, false},
    {"Europe/Lisbon", Jurisdiction::kEU, 0.04, false},
    {"Europe/Helsinki", Jurisdiction::kEU, 0.03, false},
    {"Europe/Athens", Jurisdiction::kEU, 0.03, false},
    {"Europe/Dublin", Jurisdiction::kEU, 0.02, false},
    {"Europe/London", Jurisdiction::kUK, 1.0, true},
}};
constexpr size_t kNewYork = 0;

// Capsule strengths by product (generic, Absorica, Absorica LD), as prescribed; zero-padded.
// The label's usual range is where most prescriptions land; a few patients are dosed outside it
// on purpose (low-dose regimens, severe disease).
struct Dosing {
  std::array<int32_t, 6> strengths_mg;
  double range_lo_mg_per_kg;  // the label's usual range
  double range_hi_mg_per_kg;
  double start_mg_per_kg;  // the first month
};
constexpr std::array<Dosing, kProductCount> kDosing = {{
    {{10, 20, 30, 40, 0, 0}, 0.5, 1.0, 0.5},
    {{10, 20, 25, 30, 35, 40}, 0.5, 1.0, 0.5},
    {{8, 16, 20, 24, 28, 32}, 0.4, 0.8, 0.4},
}};

using Methods = std::array<const char*, 3>;  // up to three codes, nullptr-terminated
// Combinations that satisfy the program (US: two forms, one primary, or abstinence; EU/UK: one
// user-independent, or two user-dependent with a barrier, or abstinence).
constexpr std::array<Methods, 10> kUsSufficient = {{
    {"implant", "male_condom", nullptr},
    {"iud_hormonal", "male_condom", nullptr},
    {"iud_copper", "male_condom", nullptr},
    {"combined_oral_contraceptive", "male_condom", nullptr},
    {"combined_oral_contraceptive", "male_condom", nullptr},
    {"injection", "male_condom", nullptr},
    {"vaginal_ring", "diaphragm", nullptr},
    {"patch", "male_condom", nullptr},
    {"abstinence", nullptr, nullptr},
    {"partner_vasectomy", "male_condom", "spermicide_alone"},
}};
constexpr std::array<Methods, 8> kEuSufficient = {{
    {"iud_hormonal", nullptr, nullptr},
    {"implant", nullptr, nullptr},
    {"iud_copper", nullptr, nullptr},
    {"combined_oral_contraceptive", "male_condom", nullptr},
    {"combined_oral_contraceptive", "male_condom", nullptr},
    {"vaginal_ring", "male_condom", nullptr},
    {"abstinence", nullptr, nullptr},
    {"tubal_sterilization", nullptr, nullptr},
}};
// A progestin-only pill with condoms: enough under the EU/UK rule, not under iPLEDGE's.
constexpr Methods kMiniPillAndCondom = {"progestin_only_pill", "male_condom", nullptr};
constexpr std::array<Methods, 6> kInsufficient = {{
    {"combined_oral_contraceptive", nullptr, nullptr},
    {"male_condom", "withdrawal", nullptr},
    {"male_condom", "male_condom", nullptr},
    {"fertility_awareness", "spermicide_alone", nullptr},
    {"combined_oral_contraceptive", "patch", nullptr},
    {"emergency_contraception", nullptr, nullptr},
}};

struct Medication {
  const char* name;
  const char* stop_name;  // how the stop was written (same medication, other spelling)
  const char* atc;        // nullptr: not coded
};
constexpr std::array<Medication, 7> kTetracyclines = {{
    {"Doxycycline hyclate 100 mg", "DOXYCYCLINE HYCLATE 100 MG", "J01AA02"},
    {"Vibramycin", "Vibramycin", "J01AA02"},
    {"doxycycline", "Doxycycline", nullptr},
    {"Minocin", "minocin", "J01AA08"},
    {"Minocycline ER 90 mg", "minocycline ER 90 mg", nullptr},
    {"Seysara (sarecycline)", "Seysara", "j01aa14"},
    {"Tetracycline 250 mg", "tetracycline 250 mg", "J01AA07"},
}};
constexpr std::array<Medication, 8> kOtherMedications = {{
    {"Sertraline 50 mg", "sertraline 50 mg", "N06AB06"},
    {"Cetirizine", "cetirizine", "R06AE07"},
    {"Ibuprofen 400 mg", "ibuprofen 400 mg", "M01AE01"},
    {"Albuterol inhaler", "albuterol inhaler", "R03AC02"},
    {"Vitamin D3 1000 IU", "vitamin D3 1000 IU", "A11CC05"},
    {"Multivitamin", "multivitamin", "A11AA03"},
    {"Levothyroxine 50 mcg", "levothyroxine 50 mcg", "H03AA01"},
    {"Adapalene 0.1% gel", "adapalene 0.1% gel", "D10AD03"},
}};
constexpr std::array<Medication, 3> kCorticosteroids = {{
    {"Prednisone 20 mg", "prednisone 20 mg", "H02AB07"},
    {"prednisolone", "Prednisolone", "H02AB06"},
    {"Medrol (methylprednisolone)", "Medrol (methylprednisolone)", "H02AB04"},
}};
constexpr std::array<Medication, 3> kMiniPills = {{
    {"Camila (norethindrone 0.35 mg)", "Camila (norethindrone 0.35 mg)", "G03AC01"},
    {"Slynd", "slynd", "G03AC10"},
    {"Cerazette", "cerazette", "G03AC09"},
}};
constexpr Medication kVitaminA = {"Vitamin A 10,000 IU", "vitamin A 10,000 IU", "A11CA01"};
constexpr Medication kStJohnsWort = {"St. John's Wort", "St Johns Wort", nullptr};
constexpr Medication kPhenytoin = {"Dilantin (phenytoin)", "Dilantin (phenytoin)", "N03AB02"};
constexpr Medication kAcitretin = {"Soriatane (acitretin)", "Soriatane (acitretin)", "D05BB02"};
constexpr Medication kAlcohol = {"alcohol", "alcohol", nullptr};

constexpr std::array<const char*, 12> kMildAdverseEvents = {
    "dry lips",   "cheilitis", "dry skin",         "nosebleed", "dry eyes", "back pain",
    "joint pain", "headache",  "photosensitivity", "rash",      "fatigue",  "muscle aches"};
constexpr std::array<const char*, 5> kSeriousAdverseEvents = {
    "pancreatitis", "intracranial hypertension", "severe depression", "hepatitis",
    "severe skin reaction"};

// ---------------------------------------------------------------------------------------------
// Text output.

void AppendInt(std::string& out, long long v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void Append2(std::string& out, unsigned v) {
  out.push_back(static_cast<char>('0' + v / 10));
  out.push_back(static_cast<char>('0' + v % 10));
}

// A number with at most `decimals` places, trailing zeros dropped ("58.5", "132").
void AppendFixed(std::string& out, double v, int decimals) {
  char buf[40];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, decimals);
  char* end = r.ptr;
  if (decimals > 0) {
    while (end[-1] == '0') --end;
    if (end[-1] == '.') --end;
  }
  out.append(buf, end);
}

void AppendDate(std::string& out, Day day) {
  Civil c = CivilFromDays(day);
  AppendInt(out, c.year);
  out.push_back('-');
  Append2(out, c.month);
  out.push_back('-');
  Append2(out, c.day);
}

// "YYYY-MM-DDTHH:MM:SS" then the offset ("-04:00"), or "Z" when `utc`.
void AppendTime(std::string& out, Day day, int32_t secs, int32_t offset_minutes, bool utc) {
  if (utc) {
    int64_t t =
        static_cast<int64_t>(day) * 86400 + secs - static_cast<int64_t>(offset_minutes) * kMinute;
    day = static_cast<Day>(t >= 0 ? t / 86400 : -((-t + 86399) / 86400));
    secs = static_cast<int32_t>(t - static_cast<int64_t>(day) * 86400);
  }
  AppendDate(out, day);
  out.push_back('T');
  Append2(out, static_cast<unsigned>(secs / kHour));
  out.push_back(':');
  Append2(out, static_cast<unsigned>(secs / kMinute % 60));
  out.push_back(':');
  Append2(out, static_cast<unsigned>(secs % 60));
  if (utc) {
    out.push_back('Z');
    return;
  }
  int32_t off = offset_minutes;
  out.push_back(off < 0 ? '-' : '+');
  if (off < 0) off = -off;
  Append2(out, static_cast<unsigned>(off / 60));
  out.push_back(':');
  Append2(out, static_cast<unsigned>(off % 60));
}

}  // namespace

// A zone with its UTC offset at noon of each local date of the cohort's span. The generator's
// events fall between 07:00 and 23:00 local, after any daylight-saving change of their day, so
// the noon offset is theirs.
struct SynthCohort::ZoneTable {
  Zone zone;
  Day first_day = 0;
  std::vector<int16_t> offset_minutes;

  static int32_t Compute(const Zone& zone, Day day) {
    auto local =
        date::local_seconds{std::chrono::seconds(static_cast<int64_t>(day) * 86400 + 43200)};
    auto info = zone.get()->get_info(local);
    return static_cast<int32_t>(
        std::chrono::duration_cast<std::chrono::minutes>(info.first.offset).count());
  }
  int32_t OffsetMinutes(Day day) const {
    const int64_t i = static_cast<int64_t>(day) - first_day;
    if (i >= 0 && i < static_cast<int64_t>(offset_minutes.size())) {
      return offset_minutes[static_cast<size_t>(i)];
    }
    return Compute(zone, day);
  }
};

namespace {

using ZoneTable = SynthCohort::ZoneTable;

// ---------------------------------------------------------------------------------------------
// Events under construction: kept with their local date and time, sorted before writing.

struct SynthEvent {
  Day day;
  int32_t secs;  // local seconds of the day
  Day file_day;  // where the event sits in the file (lab results may be filed a day late)
  uint32_t seq;  // creation order: keeps ties in a stable order
  const char* type;
  bool collected_at;  // a pregnancy test's time is "collected_at"
  bool utc;           // written in UTC ("Z") rather than the local offset
  bool has_id;
  uint32_t body_begin;
  uint32_t body_end;
};

class EventBuilder {
 public:
  EventBuilder(std::string& arena, std::vector<SynthEvent>& events, size_t index)
      : arena_(arena), events_(events), index_(index) {}

  EventBuilder& Str(std::string_view key, std::string_view value) {
    Key(key);
    arena_.push_back('"');
    arena_.append(value);  // the generator's own text: nothing to escape
    arena_.push_back('"');
    return Done();
  }
  EventBuilder& Int(std::string_view key, long long value) {
    Key(key);
    AppendInt(arena_, value);
    return Done();
  }
  EventBuilder& Num(std::string_view key, double value, int decimals) {
    Key(key);
    AppendFixed(arena_, value, decimals);
    return Done();
  }
  EventBuilder& Bool(std::string_view key, bool value) {
    Key(key);
    arena_.append(value ? "true" : "false");
    return Done();
  }
  EventBuilder& Date(std::string_view key, Day day) {
    Key(key);
    arena_.push_back('"');
    AppendDate(arena_, day);
    arena_.push_back('"');
    return Done();
  }
  EventBuilder& Time(std::string_view key, Day day, int32_t secs, int32_t offset_minutes) {
    Key(key);
    arena_.push_back('"');
    AppendTime(arena_, day, secs, offset_minutes, false);
    arena_.push_back('"');
    return Done();
  }
  EventBuilder& MethodList(std::string_view key, const Methods& methods) {
    Key(key);
    arena_.push_back('[');
    for (size_t i = 0; i < methods.size() && methods[i] != nullptr; ++i) {
      if (i > 0) arena_.push_back(',');
      arena_.push_back('"');
      arena_.append(methods[i]);
      arena_.push_back('"');
    }
    arena_.push_back(']');
    return Done();
  }
  EventBuilder& Ints(std::string_view key, std::span<const int32_t> values) {
    Key(key);
    arena_.push_back('[');
    for (size_t i = 0; i < values.size(); ++i) {
      if (i > 0) arena_.push_back(',');
      AppendInt(arena_, values[i]);
    }
    arena_.push_back(']');
    return Done();
  }
  // The event's id ("e<seq+1>"), for corrections that name it.
  std::string Id() const { return "e" + std::to_string(events_[index_].seq + 1); }

 private:
  void Key(std::string_view key) {
    arena_.append(",\"");
    arena_.append(key);
    arena_.append("\":");
  }
  EventBuilder& Done() {
    events_[index_].body_end = static_cast<uint32_t>(arena_.size());
    return *this;
  }

  std::string& arena_;
  std::vector<SynthEvent>& events_;
  size_t index_;
};

}  // namespace

// Everything below is one patient's story.
namespace {

enum class Stage : uint8_t {
  kPreTreatment,   // enrolled, first prescription not dispensed yet
  kInTreatment,    // monthly cycles under way
  kRecentlyEnded,  // last dose in the past month
  kPostTreatment,  // course ended longer ago
  kSecondCourse,   // an ended course, then a second one under way
};

// What goes wrong with the prescription that waits at the pharmacy on the cohort's "today". The
// rates are the generator's guesses at a real cohort's, not figures from a source.
struct Defects {
  bool stale = false;  // waited too long: the test, visit or prescription window has closed
  bool test_missing = false;
  bool test_home = false;  // a home test where the program wants a medical setting
  bool test_positive = false;
  bool confirmation_missing = false;  // US first prescription: no screening test
  bool confirmation_too_early = false;
  bool contraception_missing = false;
  bool contraception_insufficient = false;
  bool comprehension_missing = false;
  bool counseling_missing = false;
  bool supply_over = false;
  bool refills = false;
  bool risk_acknowledgement_missing = false;
  bool assessment_missing = false;
  bool second_prescriber_missing = false;
  bool not_enrolled = false;
  bool cancelled = false;  // the waiting prescription was withdrawn, nothing replaced it
};

struct Cycle {
  Day rx_day = 0;
  std::optional<Day> dispense_day;  // nullopt: waiting at the pharmacy (or never picked up)
  int32_t days_supply = 30;
};

// US: a confirmation test before the one that counted.
struct EarlierTest {
  Day day = 0;
  bool locked_out = false;  // collected too soon after a lapsed window; the pharmacy refused
};

struct CoursePlan {
  bool first_course = true;
  Day start = 0;                          // enrollment visit
  std::vector<EarlierTest> missed_tests;  // US: their window lapsed unused, or locked out
  std::optional<Day> screening;           // US, can get pregnant: the screening test
  std::optional<Day> confirmation;        // US, can get pregnant: the first prescription's test
  std::vector<Cycle> cycles;              // the last may be waiting at the pharmacy
  bool pending = false;                   // the last cycle's prescription waits on "today"
  std::optional<Day> last_dose;           // the course ended
  bool ended_by_pregnancy = false;
  Defects defects;  // of the waiting prescription
};

struct LabBaseline {
  double tg_mg_dl, tc_mg_dl, hdl_mg_dl, ldl_mg_dl, alt_u_l, ast_u_l;
};

class Story {
 public:
  Story(const SynthOptions& options, const std::vector<ZoneTable>& zones, uint64_t index)
      : options_(options), zones_(zones), index_(index), rng_(options.seed, index) {
    as_of_ = options.as_of.days_since_epoch();
    last_day_ = as_of_ - 1;
  }

  void Tell(std::string& out) {
    ChooseProfile();
    PlanCourses();
    ChooseBirthDate();
    TellMedicationHistory();
    for (size_t i = 0; i < courses_.size(); ++i) TellCourse(courses_[i]);
    Write(out);
  }

 private:
  // ------------------------------------------------------------------ the patient

  void ChooseProfile() {
    switch (rng_.Weighted({0.70, 0.18, 0.12})) {
      case 0:
        jurisdiction_ = Jurisdiction::kUS;
        break;
      case 1:
        jurisdiction_ = Jurisdiction::kEU;
        break;
      default:
        jurisdiction_ = Jurisdiction::kUK;
        break;
    }
    category_ = rng_.Chance(0.46) ? Category::kCanGetPregnant : Category::kCannotGetPregnant;
    initial_category_ = category_;

    double total = 0;
    for (const auto& z : kZones) {
      if (z.jurisdiction == jurisdiction_) total += z.weight;
    }
    double x = rng_.Uniform() * total;
    for (size_t i = 0; i < kZones.size(); ++i) {
      if (kZones[i].jurisdiction != jurisdiction_) continue;
      zone_ = i;
      if (x < kZones[i].weight) break;
      x -= kZones[i].weight;
    }
    // Patients outside the program's zone often, not always, carry their own zone; without it
    // the engine counts days in the program's zone, as iPLEDGE's Eastern cut-off does.
    write_time_zone_ = !kZones[zone_].program_zone && rng_.Chance(0.5);

    switch (rng_.Weighted({0.36, 0.40, 0.235, 0.005})) {
      case 0:
        age_years_ = rng_.Int(12, 17);
        break;
      case 1:
        age_years_ = rng_.Int(18, 25);
        break;
      case 2:
        age_years_ = rng_.Int(26, 45);
        break;
      default:
        age_years_ = 11;  // below the label's minimum age
        break;
    }
    if (age_years_ < 15) {
      weight_kg_ = rng_.Range(36, 62);
    } else if (age_years_ < 18) {
      weight_kg_ = rng_.Range(46, 82);
    } else {
      weight_kg_ = rng_.Range(48, 105);
    }
    growth_kg_per_day_ = age_years_ < 18 ? rng_.Range(0.002, 0.016) : rng_.Range(-0.008, 0.008);

    switch (rng_.Weighted({0.70, 0.15, 0.15})) {
      case 0:
        product_ = Product::kGeneric;
        break;
      case 1:
        product_ = Product::kAbsorica;
        break;
      default:
        product_ = Product::kAbsoricaLd;
        break;
    }
    // Most are escalated to the upper half of the usual range after the first month.
    dose_position_ = rng_.Range(0.5, 1.0);
    switch (rng_.Weighted({0.925, 0.04, 0.03, 0.005})) {
      case 0:
        break;
      case 1:
        dose_off_range_mg_per_kg_ = rng_.Range(0.2, 0.38);
        break;  // low-dose regimen
      case 2:
        dose_off_range_mg_per_kg_ = rng_.Range(1.1, 1.9);
        break;  // severe disease
      default:
        dose_off_range_mg_per_kg_ = rng_.Range(2.1, 2.6);
        break;  // above the maximum
    }
    once_daily_ = rng_.Chance(0.08);

    mini_pill_ = rng_.Chance(0.04);
    if (mini_pill_) {
      methods_ = kMiniPillAndCondom;
    } else if (jurisdiction_ == Jurisdiction::kUS) {
      methods_ = rng_.Pick(kUsSufficient);
    } else {
      methods_ = rng_.Pick(kEuSufficient);
    }

    labs_mmol_ = jurisdiction_ != Jurisdiction::kUS && rng_.Chance(0.75);
    labs_utc_ = rng_.Chance(0.1);
    labs_filed_late_ = rng_.Chance(0.25);
    labs_loinc_ = rng_.Chance(0.3);
    switch (rng_.Weighted({0.40, 0.40, 0.05, 0.05, 0.05, 0.05})) {
      case 0:
        uln_u_l_ = 0;
        break;
      case 1:
        uln_u_l_ = 40;
        break;
      case 2:
        uln_u_l_ = 33;
        break;
      case 3:
        uln_u_l_ = 35;
        break;
      case 4:
        uln_u_l_ = 55;
        break;
      default:
        uln_u_l_ = 56;
        break;
    }
    labs_ = {rng_.Range(50, 190), rng_.Range(130, 235), rng_.Range(35, 75),
             rng_.Range(60, 160), rng_.Range(9, 38),    rng_.Range(12, 34)};
    lipid_response_ = rng_.Range(1.0, 1.8);
    switch (rng_.Weighted({0.94, 0.045, 0.015})) {
      case 0:
        lipid_tail_ = 0;
        break;
      case 1:
        lipid_tail_ = 1;
        break;  // triglycerides over the warning threshold on treatment
      default:
        lipid_tail_ = 2;
        break;  // over the critical one
    }
    switch (rng_.Weighted({0.965, 0.028, 0.007})) {
      case 0:
        liver_tail_ = 0;
        break;
      case 1:
        liver_tail_ = 1;
        break;
      default:
        liver_tail_ = 2;
        break;
    }
    cholesterol_tail_ = rng_.Chance(0.04) ? (rng_.Chance(0.15) ? 2 : 1) : 0;
    switch (rng_.Weighted({0.86, 0.10, 0.04})) {
      case 0:
        mood_ = 0;
        break;
      case 1:
        mood_ = 1;
        break;
      default:
        mood_ = 2;
        break;
    }
    if (rng_.Chance(0.03)) {
      target_ = rng_.Chance(0.5) ? std::array<int, 2>{100, 120} : std::array<int, 2>{150, 220};
    }
  }

  size_t ProductIndex() const { return static_cast<size_t>(product_); }
  bool Cgp() const { return category_ == Category::kCanGetPregnant; }
  bool Us() const { return jurisdiction_ == Jurisdiction::kUS; }
  bool Uk() const { return jurisdiction_ == Jurisdiction::kUK; }
  static bool Us2026(Day d) { return d >= kUs2026From; }
  static bool Uk2026(Day d) { return d >= kUk2026From; }

  const char* ProgramIdOn(Day d) const {
    switch (jurisdiction_) {
      case Jurisdiction::kUS:
        return Us2026(d) ? "us-ipledge-2026" : "us-ipledge-2023";
      case Jurisdiction::kEU:
        return "eu-ppp-2018";
      case Jurisdiction::kUK:
        return Uk2026(d) ? "uk-mhra-2026" : "uk-mhra-2023";
    }
    return "eu-ppp-2018";
  }

  // ------------------------------------------------------------------ planning

  void PlanCourses() {
    switch (rng_.Weighted({0.12, 0.45, 0.07, 0.26, 0.10})) {
      case 0:
        stage_ = Stage::kPreTreatment;
        break;
      case 1:
        stage_ = Stage::kInTreatment;
        break;
      case 2:
        stage_ = Stage::kRecentlyEnded;
        break;
      case 3:
        stage_ = Stage::kPostTreatment;
        break;
      default:
        stage_ = Stage::kSecondCourse;
        break;
    }
    switch (stage_) {
      case Stage::kPreTreatment:
        courses_.push_back(PlanCurrentCourse(0, true));
        break;
      case Stage::kInTreatment:
        courses_.push_back(PlanCurrentCourse(rng_.Int(1, 6), true));
        break;
      case Stage::kRecentlyEnded:
        courses_.push_back(PlanEndedCourse(as_of_ - rng_.Int(1, 30), true));
        break;
      case Stage::kPostTreatment:
        courses_.push_back(PlanEndedCourse(as_of_ - rng_.Int(31, 800), true));
        break;
      case Stage::kSecondCourse: {
        CoursePlan second = PlanCurrentCourse(rng_.Chance(0.25) ? 0 : rng_.Int(1, 5), false);
        // Most wait the 2 months the label asks for; some start again sooner.
        Day gap = rng_.Chance(0.2) ? rng_.Int(25, 58) : rng_.Int(62, 420);
        courses_.push_back(PlanEndedCourse(second.start - gap, true));
        courses_.push_back(std::move(second));
        break;
      }
    }
  }

  int32_t ChooseDaysSupply() {
    if (Us() || Cgp()) return rng_.Chance(0.05) ? 28 : 30;
    // EU/UK patients who cannot get pregnant have no maximum: two or three months are common.
    switch (rng_.Weighted({0.6, 0.25, 0.15})) {
      case 0:
        return 30;
      case 1:
        return 60;
      default:
        return 90;
    }
  }

  // Days from a prescription to its dispense.
  int32_t DispenseDelay() {
    if (Cgp()) return static_cast<int32_t>(rng_.Weighted({0.45, 0.3, 0.15, 0.1}));  // in the window
    return rng_.Int(0, 6);
  }

  Defects DrawDefects(bool first_prescription, bool first_course) {
    Defects d;
    d.stale = rng_.Chance(0.08);
    d.supply_over = rng_.Chance(0.015);
    d.refills = rng_.Chance(0.01);
    d.cancelled = rng_.Chance(0.008);
    d.not_enrolled = first_course && first_prescription && rng_.Chance(0.04);
    d.counseling_missing = Us() && rng_.Chance(0.03);
    if (Cgp()) {
      d.test_missing = rng_.Chance(0.03);
      d.test_home = rng_.Chance(0.03);
      d.test_positive = rng_.Chance(0.004);
      d.contraception_missing = rng_.Chance(0.04);
      d.contraception_insufficient = rng_.Chance(0.03);
      d.comprehension_missing = Us() && rng_.Chance(0.04);
      if (Us() && first_prescription) {
        d.confirmation_missing = rng_.Chance(0.02);
        d.confirmation_too_early = !d.confirmation_missing && rng_.Chance(0.03);
      }
    }
    if (!Us()) {
      d.risk_acknowledgement_missing = (Uk() || Cgp()) && rng_.Chance(0.03);
    }
    if (Uk() && first_prescription) {
      d.assessment_missing = rng_.Chance(0.04);
      d.second_prescriber_missing = rng_.Chance(0.05);
    }
    return d;
  }

  // The course under way on "today", with `dispensed` dispenses so far.
  CoursePlan PlanCurrentCourse(int dispensed, bool first_course) {
    CoursePlan plan;
    plan.first_course = first_course;
    plan.pending = dispensed == 0 || rng_.Chance(0.65);
    std::vector<Cycle> reversed;
    Day next_rx = 0;  // the prescription after the cycle being planned
    if (plan.pending) {
      plan.defects = DrawDefects(dispensed == 0, first_course);
      Day rx;
      if (dispensed == 0 && rng_.Chance(0.45)) {
        rx = as_of_ + rng_.Int(0, 25);  // not written yet: only the work-up so far
      } else if (plan.defects.stale) {
        if (!Cgp() && Us()) {
          rx = as_of_ - rng_.Int(31, 60);  // the 30-day visit window has closed
        } else if (!Cgp()) {
          rx = as_of_ - (rng_.Chance(0.1) ? rng_.Int(181, 220) : rng_.Int(8, 40));
          if (as_of_ - rx <= 180) plan.defects.stale = false;  // still valid, just late
        } else {
          rx = as_of_ - (rng_.Chance(0.7) ? rng_.Int(8, 20) : rng_.Int(21, 110));
        }
      } else {
        rx = as_of_ - rng_.Int(1, 5);
      }
      Cycle waiting;
      waiting.rx_day = rx;
      waiting.days_supply = ChooseDaysSupply();
      reversed.push_back(waiting);
      next_rx = rx;
    }
    for (int j = dispensed; j >= 1; --j) {
      Cycle c;
      c.days_supply = ChooseDaysSupply();
      Day dispense;
      if (j == dispensed && !plan.pending) {
        dispense = as_of_ - rng_.Int(1, c.days_supply - 3);
      } else {
        // Patients come back as the supply runs out; now and then a month is skipped.
        dispense =
            next_rx - (rng_.Chance(0.05) ? rng_.Int(35, 60) : c.days_supply - rng_.Int(0, 5));
      }
      c.dispense_day = dispense;
      c.rx_day = dispense - DispenseDelay();
      reversed.push_back(c);
      next_rx = c.rx_day;
    }
    plan.cycles.assign(reversed.rbegin(), reversed.rend());
    PlanWorkUp(plan);
    return plan;
  }

  // A course that ended with its last dose on `last_dose`.
  CoursePlan PlanEndedCourse(Day last_dose, bool first_course) {
    CoursePlan plan;
    plan.first_course = first_course;
    const bool early = rng_.Chance(0.12);
    const int dispensed = early ? rng_.Int(1, 3) : rng_.Int(4, 7);
    std::vector<Cycle> reversed;
    Day next_rx = 0;
    for (int j = dispensed; j >= 1; --j) {
      Cycle c;
      c.days_supply = ChooseDaysSupply();
      Day dispense;
      if (j == dispensed) {
        dispense = last_dose - (early ? rng_.Int(2, c.days_supply - 5) : c.days_supply - 1);
      } else {
        dispense = next_rx - (c.days_supply - rng_.Int(0, 5));
      }
      c.dispense_day = dispense;
      c.rx_day = dispense - DispenseDelay();
      reversed.push_back(c);
      next_rx = c.rx_day;
    }
    plan.cycles.assign(reversed.rbegin(), reversed.rend());
    plan.last_dose = last_dose;
    plan.ended_by_pregnancy = early && Cgp() && rng_.Chance(0.1);
    PlanWorkUp(plan);
    return plan;
  }

  // The weeks before the first prescription: enrollment, screening, and for US patients who
  // can get pregnant the confirmation test (and perhaps a window that lapsed unused).
  void PlanWorkUp(CoursePlan& plan) {
    const Day rx1 = plan.cycles.front().rx_day;
    const bool waiting_first = plan.pending && plan.cycles.size() == 1;
    const Defects& d = plan.defects;
    if (!Cgp()) {
      plan.start = rx1 - (rng_.Chance(0.4) ? 0 : rng_.Int(1, 14));
    } else if (!Us()) {
      // A month of contraception before the first prescription.
      plan.start = rx1 - rng_.Int(28, 42);
    } else {
      const Day confirmation = rx1 - rng_.Int(0, 2);
      plan.confirmation = confirmation;
      Day earliest = confirmation;
      // A first window that lapsed: under 2023 the next test waits 19 days (the lockout),
      // under 2026 it may follow at once.
      if (rng_.Chance(0.07)) {
        const bool lockout_rule = !Us2026(confirmation);
        const Day missed =
            lockout_rule ? confirmation - rng_.Int(19, 26) : confirmation - rng_.Int(8, 15);
        plan.missed_tests.push_back({missed, false});
        if (lockout_rule && rng_.Chance(0.3)) {
          // A retest too soon, which the pharmacy turned down, before the one that counted.
          plan.missed_tests.push_back({missed + rng_.Int(8, 15), true});
        }
        earliest = missed;
      }
      Day screening = earliest - rng_.Int(19, 28);
      if (waiting_first && d.confirmation_too_early) screening = earliest - rng_.Int(7, 18);
      plan.screening = screening;
      plan.start = screening;
      if (waiting_first && d.confirmation_missing) plan.screening.reset();
    }
    if (plan.start >= as_of_) plan.start = as_of_ - rng_.Int(1, 10);
  }

  void ChooseBirthDate() {
    const Day start = courses_.front().start;
    birth_ = start - static_cast<Day>(age_years_ * 365.25) - rng_.Int(0, 364);
  }

  // ------------------------------------------------------------------ telling

  // Local times of day.
  int32_t ClinicTime() { return rng_.Int(8 * 12, 17 * 12) * 5 * kMinute; }
  int32_t MorningTime() { return rng_.Int(7 * 12 + 6, 11 * 12) * 5 * kMinute; }
  int32_t EveningTime() { return rng_.Int(18 * 60, 22 * 60 + 30) * kMinute + rng_.Int(0, 59); }
  int32_t PharmacyTime() { return rng_.Int(9 * 60, 20 * 60) * kMinute; }

  EventBuilder Add(const char* type, Day day, int32_t secs, bool has_id = true) {
    SynthEvent e{};
    e.day = day;
    e.secs = std::clamp(secs, 7 * kHour, 23 * kHour + 30 * kMinute);
    e.file_day = day;
    e.seq = static_cast<uint32_t>(events_.size());
    e.type = type;
    e.has_id = has_id;
    e.body_begin = static_cast<uint32_t>(arena_.size());
    e.body_end = e.body_begin;
    events_.push_back(e);
    return EventBuilder(arena_, events_, events_.size() - 1);
  }
  SynthEvent& Last() { return events_.back(); }

  double WeightOn(Day day) const {
    return weight_kg_ + growth_kg_per_day_ * (day - courses_.front().start);
  }

  void Weight(Day day, int32_t secs) {
    const double kg = WeightOn(day) + rng_.Range(-0.6, 0.6);
    if (rng_.Chance(0.015)) {
      // Entered in pounds, noticed and corrected.
      auto wrong = Add("weight", day, secs);
      wrong.Num("kg", kg * 2.20462, 1);
      const std::string target = wrong.Id();
      Add("entered_in_error", day, secs + rng_.Int(2, 90) * kMinute).Str("target", target);
      Add("weight", day, secs + rng_.Int(91, 120) * kMinute).Num("kg", kg, 1);
      return;
    }
    Add("weight", day, secs).Num("kg", kg, 1);
  }

  void Phq9(Day day, int32_t secs) {
    std::array<int32_t, 9> items{};
    int total;
    const double r = rng_.Uniform();
    if (mood_ == 2 && r < 0.5) {
      total = rng_.Int(20, 24);
    } else if (mood_ >= 1 && r < 0.7) {
      total = rng_.Int(10, 19);
    } else {
      total = static_cast<int>(rng_.Weighted({0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.04, 0.02}));
    }
    for (int k = 0; k < total; ++k) {
      const size_t i = static_cast<size_t>(rng_.Int(0, 7));
      if (items[i] < 3) {
        ++items[i];
      } else {
        --k;  // full: place the point elsewhere (8 items hold 24 points, above any total drawn)
      }
    }
    // Thoughts of self-harm, sometimes with a low total.
    const double item9 = mood_ == 2 ? 0.3 : mood_ == 1 ? 0.06 : 0.005;
    if (rng_.Chance(item9)) items[8] = rng_.Int(1, 2);
    Add("phq9", day, secs).Ints("items", items);
  }

  void Lab(Day day, int32_t secs, LabTest test, double value_mg_or_u) {
    auto e = Add("lab", day, secs);
    e.Str("test", ToString(test));
    const bool lipid = test == LabTest::kTG || test == LabTest::kTC || test == LabTest::kHDL ||
                       test == LabTest::kLDL;
    if (lipid && labs_mmol_) {
      const double factor = test == LabTest::kTG ? 88.57 : 38.67;
      e.Num("value", value_mg_or_u / factor, 2).Str("unit", "mmol/L");
    } else if (lipid) {
      e.Num("value", value_mg_or_u, 0).Str("unit", "mg/dL");
    } else {
      e.Num("value", value_mg_or_u, 0).Str("unit", "U/L");
      if (uln_u_l_ > 0) e.Int("uln", uln_u_l_);
    }
    if (labs_loinc_) {
      static constexpr std::array<const char*, kLabTestCount> kLoinc = {
          "1742-6", "1920-8", "2571-8", "2093-3", "2085-9", "13457-7"};
      e.Str("loinc", kLoinc[static_cast<size_t>(test)]);  // an extra field the engine ignores
    }
    Last().utc = labs_utc_;
    if (labs_filed_late_) Last().file_day = day + 1;
  }

  // A lipid and liver panel; off `baseline`, with the treatment's effect on lipids and liver.
  void LabPanel(Day day, bool baseline, bool full) {
    const int32_t secs = MorningTime() + rng_.Int(2, 8) * kHour;
    double tg = labs_.tg_mg_dl, tc = labs_.tc_mg_dl, alt = labs_.alt_u_l, ast = labs_.ast_u_l;
    const double uln = uln_u_l_ > 0 ? uln_u_l_ : 40;
    if (!baseline) {
      tg *= lipid_response_ * rng_.Range(0.9, 1.1);
      tc += rng_.Range(0, 45);
      alt *= rng_.Range(0.9, 1.7);
      ast *= rng_.Range(0.9, 1.4);
      if (lipid_tail_ == 1) tg = rng_.Range(500, 790);
      if (lipid_tail_ == 2) tg = rng_.Range(800, 1250);
      if (cholesterol_tail_ == 1) tc = rng_.Range(302, 395);
      if (cholesterol_tail_ == 2) tc = rng_.Range(402, 480);
      if (liver_tail_ == 1) alt = uln * rng_.Range(3.1, 4.8);
      if (liver_tail_ == 2) alt = uln * rng_.Range(5.2, 8.0);
    }
    Lab(day, secs, LabTest::kTG, tg);
    if (full || rng_.Chance(0.6)) Lab(day, secs, LabTest::kTC, tc);
    if (full && rng_.Chance(0.5)) {
      Lab(day, secs, LabTest::kHDL, labs_.hdl_mg_dl * rng_.Range(0.9, 1.05));
      Lab(day, secs, LabTest::kLDL, labs_.ldl_mg_dl * rng_.Range(0.95, 1.15));
    }
    Lab(day, secs, LabTest::kALT, alt);
    if (rng_.Chance(full ? 0.6 : 0.3)) Lab(day, secs, LabTest::kAST, ast);
    if (rng_.Chance(0.008)) {
      // A result filed to the wrong patient, then withdrawn.
      auto wrong = Add("lab", day, secs + 10 * kMinute);
      wrong.Str("test", "TG").Num("value", rng_.Range(600, 990), 0).Str("unit", "mg/dL");
      const std::string target = wrong.Id();
      Add("entered_in_error", day + rng_.Int(0, 3), 17 * kHour).Str("target", target);
    }
  }

  // A pregnancy test collected on `day`.
  void PregnancyTest(Day day, int32_t secs, const char* result, TestSetting setting) {
    const char* specimen = setting == TestSetting::kLab && rng_.Chance(0.7) ? "serum" : "urine";
    if (rng_.Chance(0.02)) {
      // An invalid result, repeated.
      Add("pregnancy_test", day, secs - 40 * kMinute)
          .Str("result", "invalid")
          .Str("setting", ToString(setting))
          .Str("specimen", specimen);
      Last().collected_at = true;
    }
    Add("pregnancy_test", day, secs)
        .Str("result", result)
        .Str("setting", ToString(setting))
        .Str("specimen", specimen);
    Last().collected_at = true;
  }

  // The setting of a pregnancy test, as the program of its day accepts it (or not).
  TestSetting TestSettingFor(Day day, bool before_treatment, bool confirmation, bool wrong) {
    if (Us()) {
      if (wrong) return TestSetting::kHome;  // never accepted before treatment; nor in 2023
      if (before_treatment) {
        if (confirmation && !Us2026(day)) return TestSetting::kLab;
        return rng_.Chance(0.55) ? TestSetting::kOffice : TestSetting::kLab;
      }
      if (!Us2026(day)) return TestSetting::kLab;
      switch (rng_.Weighted({0.4, 0.25, 0.35})) {
        case 0:
          return TestSetting::kHome;
        case 1:
          return TestSetting::kOffice;
        default:
          return TestSetting::kLab;
      }
    }
    if (wrong) return TestSetting::kHome;
    return rng_.Chance(0.6) ? TestSetting::kOffice : TestSetting::kLab;
  }

  void Contraception(Day day, int32_t secs, const Methods& methods, Day since) {
    Add("contraception", day, secs).MethodList("methods", methods).Date("since", since);
  }

  // The prescribed doses for a daily target: two doses of one or two capsules each (once daily
  // for a few), the larger first.
  // Prescribers keep an in-range dose in range: of the reachable totals, the nearest to the
  // target within [lo_mg, hi_mg] when there is one.
  std::pair<std::array<int32_t, 2>, size_t> Doses(double target_mg, double lo_mg,
                                                  double hi_mg) const {
    const Dosing& dosing = kDosing[ProductIndex()];
    std::array<int32_t, 48> per_dose{};  // one or two capsules
    size_t n = 0;
    for (int32_t a : dosing.strengths_mg) {
      if (a == 0) continue;
      per_dose[n++] = a;
      for (int32_t b : dosing.strengths_mg) {
        if (b != 0 && b <= a) per_dose[n++] = a + b;
      }
    }
    std::array<int32_t, 2> best{};
    size_t best_count = 0;
    double best_score = 1e300;
    auto consider = [&](int32_t first, int32_t second, size_t count) {
      const double total = first + second;
      const bool in_range = total >= lo_mg && total <= hi_mg;
      // Out of range only when nothing is in range; then the nearest; then even doses.
      const double score = (in_range ? 0 : 1e6) + std::abs(total - target_mg) * 100 +
                           std::abs(first - second) / 1000.0;
      if (score < best_score) {
        best_score = score;
        best = {std::max(first, second), std::min(first, second)};
        best_count = count;
      }
    };
    for (size_t i = 0; i < n; ++i) {
      if (once_daily_) {
        consider(per_dose[i], 0, 1);
        continue;
      }
      for (size_t k = 0; k < n; ++k) consider(per_dose[i], per_dose[k], 2);
    }
    return {best, best_count};
  }

  std::string NextRxId() { return "rx-" + std::to_string(++rx_count_); }

  std::string Prescription(Day day, int32_t secs, int32_t days_supply, int refills, int cycle) {
    const Dosing& dosing = kDosing[ProductIndex()];
    const double kg = WeightOn(day);
    double mg_per_kg = dosing.range_lo_mg_per_kg +
                       dose_position_ * (dosing.range_hi_mg_per_kg - dosing.range_lo_mg_per_kg);
    if (cycle == 0) mg_per_kg = dosing.start_mg_per_kg;
    double lo_mg = kg * dosing.range_lo_mg_per_kg * 1.03;  // margins for the weight's noise
    double hi_mg = kg * dosing.range_hi_mg_per_kg * 0.97;
    if (dose_off_range_mg_per_kg_ > 0) {
      mg_per_kg = dose_off_range_mg_per_kg_;
      lo_mg = 0;
      hi_mg = 1e9;
    }
    auto [doses, count] = Doses(kg * mg_per_kg, lo_mg, hi_mg);
    std::string id = NextRxId();
    Add("prescription", day, secs, /*has_id=*/false)
        .Str("id", id)
        .Str("product", ToString(product_))
        .Ints("doses_mg", std::span<const int32_t>(doses.data(), count))
        .Int("days_supply", days_supply)
        .Int("refills", refills);
    return id;
  }

  void MedicationEvent(Day day, int32_t secs, const Medication& m, bool start, bool with_atc) {
    auto e = Add("medication", day, secs);
    e.Str("name", start ? m.name : m.stop_name);
    if (with_atc && m.atc != nullptr) e.Str("atc", m.atc);
    e.Str("action", start ? "start" : "stop");
  }

  // A medication taken from `start` and stopped on `stop` (if any).
  void MedicationCourse(const Medication& m, Day start, std::optional<Day> stop) {
    const bool atc = rng_.Chance(0.7);
    MedicationEvent(start, ClinicTime(), m, true, atc);
    if (stop && *stop > start) MedicationEvent(*stop, ClinicTime(), m, false, atc);
  }

  void TellMedicationHistory() {
    const Day s0 = courses_.front().start;
    const Day end = as_of_;
    // Acne treated with a tetracycline before isotretinoin; stopped at the switch, mostly.
    if (rng_.Chance(0.35)) {
      const Medication& m = rng_.Pick(kTetracyclines);
      const Day start = s0 - rng_.Int(60, 400);
      if (rng_.Chance(0.9)) {
        MedicationCourse(m, start, s0 - rng_.Int(0, 14));
      } else {
        MedicationCourse(m, start, std::nullopt);  // never recorded as stopped
      }
    }
    const int others = static_cast<int>(rng_.Weighted({0.6, 0.28, 0.12}));
    for (int i = 0; i < others; ++i) {
      const Medication& m = rng_.Pick(kOtherMedications);
      const Day start = s0 - rng_.Int(-60, 700);
      std::optional<Day> stop;
      if (rng_.Chance(0.4)) stop = start + rng_.Int(10, 300);
      MedicationCourse(m, start, stop);
    }
    if (Cgp() && mini_pill_) {
      MedicationCourse(rng_.Pick(kMiniPills), s0 - rng_.Int(30, 500), std::nullopt);
    }
    const Day span = std::max<Day>(1, end - s0);
    if (rng_.Chance(0.03)) {  // a short steroid course for a flare
      const Day start = s0 + rng_.Int(std::min<Day>(20, span), span);
      MedicationCourse(rng_.Pick(kCorticosteroids), start, start + rng_.Int(5, 14));
    }
    if (rng_.Chance(0.06)) {
      const Day start = s0 + rng_.Int(0, span);
      MedicationCourse(
          kAlcohol, start,
          rng_.Chance(0.5) ? std::optional<Day>(start + rng_.Int(3, 60)) : std::nullopt);
    }
    if (rng_.Chance(0.03)) {
      const Day start = s0 + rng_.Int(-100, span);
      MedicationCourse(
          kVitaminA, start,
          rng_.Chance(0.5) ? std::optional<Day>(start + rng_.Int(3, 40)) : std::nullopt);
    }
    if (rng_.Chance(0.015)) MedicationCourse(kStJohnsWort, s0 + rng_.Int(-200, span), std::nullopt);
    if (rng_.Chance(0.005)) MedicationCourse(kPhenytoin, s0 - rng_.Int(100, 2000), std::nullopt);
    if (rng_.Chance(0.003)) MedicationCourse(kAcitretin, s0 - rng_.Int(10, 300), std::nullopt);
  }

  void TellCourse(const CoursePlan& plan) {
    ++course_number_;
    const Defects& d = plan.defects;
    const bool waiting_first = plan.pending && plan.cycles.size() == 1;
    const Day s = plan.start;
    int32_t t = ClinicTime();

    // Enrollment: always for a first course (unless that is the lapse); often again for a
    // second one, which the contract says does not start a course by itself.
    const bool enroll = plan.first_course ? !(waiting_first && d.not_enrolled) : rng_.Chance(0.6);
    if (enroll) {
      auto e = Add("enrollment", s, t);
      if (rng_.Chance(0.5)) e.Str("program", ProgramIdOn(s));
    }
    // Enrollment counselling. Under US 2026, patients who cannot get pregnant need it once.
    const bool counsel = !(waiting_first && d.counseling_missing);
    Add("visit", s, t + 5 * kMinute).Bool("counseled", counsel);
    Weight(s, t + 10 * kMinute);
    if (rng_.Chance(Uk() ? 0.95 : 0.6)) Phq9(s, t + 15 * kMinute);
    if (Cgp()) {
      since_ = rng_.Chance(0.75) ? s - rng_.Int(30, 900) : s - rng_.Int(0, 10);
      Contraception(s, t + 20 * kMinute, methods_, since_);
    }
    if (!Us() && (Uk() || Cgp()) && !(waiting_first && d.risk_acknowledgement_missing)) {
      Add("risk_acknowledgement", s, t + 25 * kMinute);
      last_acknowledgement_ = s;
    }
    if (Uk()) {
      const bool both = !(waiting_first && d.assessment_missing);
      Add("assessment", s, t + 30 * kMinute).Str("kind", "mental_health");
      if (both) Add("assessment", s, t + 35 * kMinute).Str("kind", "sexual_function");
      const int age = AgeOn(plan.cycles.front().rx_day);
      if (age < 18 && !Uk2026(plan.cycles.front().rx_day) &&
          !(waiting_first && d.second_prescriber_missing)) {
        Add("second_prescriber", s + rng_.Int(0, 7), ClinicTime());
      }
    }
    // Baseline labs within the month before the first prescription.
    LabPanel(s + rng_.Int(0, 3), /*baseline=*/true, /*full=*/true);
    if (plan.screening) {
      PregnancyTest(*plan.screening, MorningTime(), "negative",
                    TestSettingFor(*plan.screening, true, false, false));
    }
    // Confirmation tests whose window lapsed: the prescription was authorized, never picked up,
    // and the authorization reversed.
    for (const EarlierTest& earlier : plan.missed_tests) {
      const Day m = earlier.day;
      PregnancyTest(m, MorningTime(), "negative", TestSettingFor(m, true, true, false));
      const Day rx_day = m + rng_.Int(0, 2);
      const int32_t rt = ClinicTime();
      Add("visit", rx_day, rt).Bool("counseled", true);
      const std::string rx = Prescription(rx_day, rt + 10 * kMinute, 30, 0, 0);
      if (earlier.locked_out) {
        Add("prescription_cancel", rx_day + rng_.Int(1, 3), ClinicTime()).Str("prescription", rx);
        continue;
      }
      const std::string auth = "rma-" + std::to_string(++authorization_count_);
      Authorization(rx_day, PharmacyTime(), rx, auth, m + 6);
      Add("authorization_reversal", m + rng_.Int(7, 9), PharmacyTime()).Str("authorization", auth);
      if (rng_.Chance(0.5)) {
        Add("prescription_cancel", m + rng_.Int(7, 10), ClinicTime()).Str("prescription", rx);
      }
    }

    for (size_t j = 0; j < plan.cycles.size(); ++j) TellCycle(plan, j);
    if (plan.last_dose) TellEnd(plan);
  }

  int AgeOn(Day day) const {
    Civil b = CivilFromDays(birth_);
    Civil n = CivilFromDays(day);
    int age = n.year - b.year;
    if (n.month < b.month || (n.month == b.month && n.day < b.day)) --age;
    return age;
  }

  void Authorization(Day day, int32_t secs, const std::string& rx, const std::string& auth,
                     Day window_last_day) {
    // The service dates authorizations in the program's zone (Eastern for iPLEDGE).
    const int32_t offset = zones_[kNewYork].OffsetMinutes(window_last_day);
    Add("authorization", day, secs)
        .Str("prescription", rx)
        .Str("authorization", auth)
        .Time("dispense_by", window_last_day, 23 * kHour + 59 * kMinute + 59, offset);
  }

  void TellCycle(const CoursePlan& plan, size_t j) {
    static const Defects kNone;
    const Cycle& c = plan.cycles[j];
    const bool waiting = plan.pending && j + 1 == plan.cycles.size();
    const Defects& d = waiting ? plan.defects : kNone;
    const bool first = j == 0;
    const Day r = c.rx_day;
    const Day previous_dispense = first ? plan.start : *plan.cycles[j - 1].dispense_day;

    // A rare change of category between cycles (menarche; a prescriber's correction).
    if (!first && rng_.Chance(0.006)) {
      const Day when = previous_dispense + rng_.Int(3, 10);
      category_ = Cgp() ? Category::kCannotGetPregnant : Category::kCanGetPregnant;
      Add("category_change", when, ClinicTime()).Str("category", ToString(category_));
      if (Cgp()) {
        since_ = when - rng_.Int(0, 60);
        Contraception(when, ClinicTime(), methods_, since_);
      }
    }

    int32_t visit_t = ClinicTime();
    std::optional<Day> test_day;
    if (Cgp() && !d.test_missing) {
      Day tday =
          r - (Us() ? rng_.Int(0, 2) : static_cast<Day>(rng_.Weighted({0.5, 0.2, 0.15, 0.15})));
      if (first && plan.confirmation) tday = *plan.confirmation;
      if (tday <= previous_dispense && !first) tday = previous_dispense + 1;
      const bool wrong = d.test_home && (first || !Us() || !Us2026(tday));
      const TestSetting setting = TestSettingFor(tday, first, first, wrong);
      int32_t tsecs = setting == TestSetting::kHome ? MorningTime() - kHour : MorningTime();
      if (tday == r) tsecs = std::min(tsecs, visit_t - 20 * kMinute);
      if (rng_.Chance(0.004)) {
        // A positive result keyed to the wrong patient and withdrawn, then the real test.
        Add("pregnancy_test", tday, tsecs - kHour)
            .Str("result", "positive")
            .Str("setting", ToString(setting))
            .Str("specimen", "urine");
        Last().collected_at = true;
        const std::string target = EventBuilder(arena_, events_, events_.size() - 1).Id();
        Add("entered_in_error", tday, tsecs - 30 * kMinute).Str("target", target);
      }
      PregnancyTest(tday, tsecs, d.test_positive ? "positive" : "negative", setting);
      test_day = tday;
    }

    // The patient's monthly confirmations (US, can get pregnant), usually the evening before.
    if (Cgp() && Us()) {
      const Day day = r - rng_.Int(0, 1);
      const int32_t secs = day == r ? visit_t - 30 * kMinute : EveningTime();
      if (!d.contraception_missing) {
        const bool insufficient = d.contraception_insufficient;
        Contraception(day, secs, insufficient ? rng_.Pick(kInsufficient) : methods_,
                      insufficient ? day - rng_.Int(0, 20) : since_);
      }
      if (!d.comprehension_missing) {
        if (rng_.Chance(0.04)) Add("comprehension", day, secs + 3 * kMinute).Bool("passed", false);
        Add("comprehension", day, secs + 8 * kMinute).Bool("passed", true);
      }
    }

    // The visit.
    bool counseled = true;
    if (Us() && !Cgp() && Us2026(r)) counseled = rng_.Chance(0.4);  // enrollment only, now
    if (d.counseling_missing && (Cgp() || !Us2026(r))) counseled = false;
    const bool visit = !(d.counseling_missing && rng_.Chance(0.5) && Cgp());
    if (visit) Add("visit", r, visit_t).Bool("counseled", counseled);
    if (Cgp() && !Us() && !d.contraception_missing) {
      const bool insufficient = d.contraception_insufficient;
      Contraception(r, visit_t + 5 * kMinute, insufficient ? rng_.Pick(kInsufficient) : methods_,
                    insufficient ? r - rng_.Int(0, 20) : since_);
    }
    if (!first && rng_.Chance(0.3)) Weight(r, visit_t + 8 * kMinute);
    const double phq9_rate = Uk() ? 0.85 : 0.35;
    if (!first && rng_.Chance(phq9_rate)) Phq9(r, visit_t + 12 * kMinute);
    if (Uk() && !first && rng_.Chance(0.25)) {
      Add("assessment", r, visit_t + 14 * kMinute).Str("kind", "mental_health");
    }
    // Follow-up labs about two months in; again after an abnormal result.
    if (j == 2 ? rng_.Chance(0.85)
               : (j > 2 && rng_.Chance(lipid_tail_ + liver_tail_ > 0 ? 0.6 : 0.08))) {
      LabPanel(r - rng_.Int(0, 3), false, false);
    }
    // The yearly acknowledgement-of-risk form (EU for patients who can get pregnant, UK all).
    if (!Us() && (Uk() || Cgp()) && last_acknowledgement_ && r - *last_acknowledgement_ >= 320 &&
        !d.risk_acknowledgement_missing && rng_.Chance(0.9)) {
      Add("risk_acknowledgement", r, visit_t + 16 * kMinute);
      last_acknowledgement_ = r;
    }
    if (!Us() && (Uk() || Cgp()) && !last_acknowledgement_ && !d.risk_acknowledgement_missing) {
      Add("risk_acknowledgement", r, visit_t + 16 * kMinute);  // after a category change
      last_acknowledgement_ = r;
    }

    // The prescription; now and then withdrawn and written again with another dose.
    if (!first && rng_.Chance(0.04)) {
      const bool to_ld = product_ != Product::kAbsoricaLd;
      product_ = to_ld ? Product::kAbsoricaLd : Product::kGeneric;  // a product switch
    }
    static constexpr std::array<int32_t, 3> kOverSupply = {45, 60, 90};
    const int32_t supply = d.supply_over && (Us() || Cgp())
                               ? kOverSupply[rng_.Weighted({0.3, 0.5, 0.2})]
                               : c.days_supply;
    const int refills = d.refills ? rng_.Int(1, 3) : 0;
    const int32_t rx_t = visit_t + 20 * kMinute;
    std::string rx = Prescription(r, rx_t, supply, refills, static_cast<int>(j));
    if (rng_.Chance(0.03) || d.cancelled) {
      Add("prescription_cancel", r, rx_t + 30 * kMinute).Str("prescription", rx);
      if (!d.cancelled)
        rx = Prescription(r, rx_t + 35 * kMinute, supply, refills, static_cast<int>(j));
    }

    if (!c.dispense_day) return;
    const Day dd = *c.dispense_day;
    int32_t dt = PharmacyTime();
    if (dd == r) dt = std::max(dt, rx_t + 75 * kMinute);
    if (Us()) {
      // The window the authorization runs to: the test's 7 days, or the visit's 30.
      const Day window_last = Cgp() && test_day ? *test_day + 6 : r + 29;
      Authorization(dd, dt - rng_.Int(2, 30) * kMinute, rx,
                    "rma-" + std::to_string(++authorization_count_), window_last);
    }
    auto dispense = Add("dispense", dd, dt);
    dispense.Str("prescription", rx);
    if (rng_.Chance(0.2)) dispense.Int("days_supply", c.days_supply);
    if (rng_.Chance(0.004)) {
      // Recorded twice by the pharmacy; the duplicate withdrawn.
      auto dup = Add("dispense", dd, dt + 5 * kMinute);
      dup.Str("prescription", rx);
      const std::string target = dup.Id();
      Add("entered_in_error", dd, dt + 40 * kMinute).Str("target", target);
    }

    // During the month: missed doses, side effects.
    const Day supply_end = dd + c.days_supply - 1;
    const Day month_end = plan.last_dose ? std::min(supply_end, *plan.last_dose) : supply_end;
    if (rng_.Chance(0.15)) {
      const int missed = rng_.Int(1, 2);
      for (int k = 0; k < missed; ++k) {
        const Day day = dd + rng_.Int(1, std::max<Day>(1, month_end - dd));
        Add("missed_dose", day, EveningTime()).Date("date", day);
      }
    }
    if (rng_.Chance(0.22)) {
      Add("adverse_event", dd + rng_.Int(3, 25), ClinicTime())
          .Str("term", rng_.Pick(kMildAdverseEvents))
          .Bool("serious", false);
    }
    if (rng_.Chance(0.005)) {
      Add("adverse_event", dd + rng_.Int(3, 25), ClinicTime())
          .Str("term", rng_.Pick(kSeriousAdverseEvents))
          .Bool("serious", true);
    }
  }

  void TellEnd(const CoursePlan& plan) {
    const Day last = *plan.last_dose;
    if (plan.ended_by_pregnancy && Cgp()) {
      PregnancyTest(last + 1, MorningTime(), "positive", TestSetting::kOffice);
      Add("treatment_end", last + 1, ClinicTime()).Date("last_dose", last);
      return;
    }
    Add("treatment_end", last + rng_.Int(0, 7), ClinicTime()).Date("last_dose", last);
    if (Cgp()) {
      const Day end_test = last + rng_.Int(-2, 5);
      PregnancyTest(end_test, MorningTime(), "negative",
                    TestSettingFor(end_test, false, false, false));
      if (rng_.Chance(0.85)) {
        const Day post = last + rng_.Int(28, 40);
        PregnancyTest(post, MorningTime(), "negative", TestSettingFor(post, false, false, false));
      }
      if (Us() && rng_.Chance(0.4)) Contraception(last + 30, EveningTime(), methods_, since_);
    }
    if (rng_.Chance(0.6)) {
      const Day v = last + rng_.Int(20, 45);
      const int32_t vt = ClinicTime();
      Add("visit", v, vt).Bool("counseled", false);
      Weight(v, vt + 5 * kMinute);
    }
  }

  // ------------------------------------------------------------------ output

  void Write(std::string& out) {
    // Events after the cohort's last day are not part of today's record.
    std::vector<const SynthEvent*> kept;
    kept.reserve(events_.size());
    for (const auto& e : events_) {
      if (e.day <= last_day_) kept.push_back(&e);
    }
    std::sort(kept.begin(), kept.end(), [](const SynthEvent* a, const SynthEvent* b) {
      if (a->file_day != b->file_day) return a->file_day < b->file_day;
      if (a->secs != b->secs) return a->secs < b->secs;
      return a->seq < b->seq;
    });

    const ZoneTable& zone = zones_[zone_];
    out.append("{\"patient\":{\"id\":\"s");
    AppendInt(out, static_cast<long long>(options_.seed));
    out.append("-p");
    AppendInt(out, static_cast<long long>(index_));
    out.append("\",\"birth_date\":\"");
    AppendDate(out, birth_);
    out.append("\",\"jurisdiction\":\"");
    out.append(ToString(jurisdiction_));
    out.append("\",\"category\":\"");
    out.append(ToString(initial_category_));
    out.push_back('"');
    if (write_time_zone_) {
      out.append(",\"time_zone\":\"");
      out.append(kZones[zone_].name);
      out.push_back('"');
    }
    if (target_) {
      out.append(",\"target_mg_per_kg\":[");
      AppendInt(out, (*target_)[0]);
      out.push_back(',');
      AppendInt(out, (*target_)[1]);
      out.push_back(']');
    }
    out.append("},\"events\":[");
    bool comma = false;
    for (const SynthEvent* e : kept) {
      if (comma) out.push_back(',');
      comma = true;
      out.append("{\"type\":\"");
      out.append(e->type);
      out.push_back('"');
      if (e->has_id) {
        out.append(",\"id\":\"e");
        AppendInt(out, e->seq + 1);
        out.push_back('"');
      }
      out.append(e->collected_at ? ",\"collected_at\":\"" : ",\"at\":\"");
      AppendTime(out, e->day, e->secs, zone.OffsetMinutes(e->day), e->utc);
      out.push_back('"');
      out.append(arena_, e->body_begin, e->body_end - e->body_begin);
      out.push_back('}');
    }
    out.append("]}");
  }

  const SynthOptions& options_;
  const std::vector<ZoneTable>& zones_;
  uint64_t index_;
  Rng rng_;
  Day as_of_ = 0;
  Day last_day_ = 0;

  Jurisdiction jurisdiction_ = Jurisdiction::kUS;
  Category category_ = Category::kCanGetPregnant;
  Category initial_category_ = Category::kCanGetPregnant;
  size_t zone_ = kNewYork;
  bool write_time_zone_ = false;
  int age_years_ = 20;
  Day birth_ = 0;
  double weight_kg_ = 60;
  double growth_kg_per_day_ = 0;
  Product product_ = Product::kGeneric;
  double dose_position_ = 0.75;          // where in the product's usual range
  double dose_off_range_mg_per_kg_ = 0;  // > 0: dosed outside the usual range
  bool once_daily_ = false;
  bool mini_pill_ = false;
  Methods methods_{};
  Day since_ = 0;
  bool labs_mmol_ = false;
  bool labs_utc_ = false;
  bool labs_filed_late_ = false;
  bool labs_loinc_ = false;
  int uln_u_l_ = 0;
  LabBaseline labs_{};
  double lipid_response_ = 1;
  int lipid_tail_ = 0;
  int liver_tail_ = 0;
  int cholesterol_tail_ = 0;
  int mood_ = 0;
  std::optional<std::array<int, 2>> target_;

  Stage stage_ = Stage::kInTreatment;
  std::vector<CoursePlan> courses_;
  int course_number_ = 0;
  int rx_count_ = 0;
  int authorization_count_ = 0;
  std::optional<Day> last_acknowledgement_;

  std::vector<SynthEvent> events_;
  std::string arena_;
};

}  // namespace

SynthCohort::SynthCohort(SynthOptions options, std::shared_ptr<const std::vector<ZoneTable>> zones)
    : options_(options), zones_(std::move(zones)) {}

Result<SynthCohort> SynthCohort::Create(const SynthOptions& options) {
  // Offsets for every date a story can use: stories reach back about three years and a half
  // before "today" and a month or so after it (then cut at "today").
  const Day first = options.as_of.days_since_epoch() - 6 * 366;
  const Day last = options.as_of.days_since_epoch() + 120;
  auto zones = std::make_shared<std::vector<ZoneTable>>();
  zones->reserve(kZones.size());
  for (const auto& choice : kZones) {
    auto zone = Zone::Locate(choice.name);
    if (!zone.ok()) {
      return Error::Internal("the tz database has no zone '" + std::string(choice.name) + "'",
                             "synth");
    }
    ZoneTable table{*zone, first, {}};
    table.offset_minutes.reserve(static_cast<size_t>(last) - static_cast<size_t>(first) + 1);
    for (Day d = first; d <= last; ++d) {
      table.offset_minutes.push_back(static_cast<int16_t>(ZoneTable::Compute(*zone, d)));
    }
    zones->push_back(std::move(table));
  }
  return SynthCohort(options, std::move(zones));
}

void SynthCohort::AppendRecord(uint64_t index, std::string& out) const {
  Story story(options_, *zones_, index);
  story.Tell(out);
}

std::string SynthCohort::Record(uint64_t index) const {
  std::string out;
  AppendRecord(index, out);
  return out;
}

Status WriteSynthCohort(const SynthOptions& options, std::ostream& out) {
  auto cohort = SynthCohort::Create(options);
  if (!cohort.ok()) return cohort.error();
  std::string buffer;
  constexpr size_t kFlushBytes = 1 << 20;
  buffer.reserve(kFlushBytes + (64 << 10));
  for (uint64_t i = 0; i < options.patients; ++i) {
    cohort->AppendRecord(i, buffer);
    buffer.push_back('\n');
    if (buffer.size() >= kFlushBytes) {
      out.write(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      buffer.clear();
      if (!out) return Error::Internal("cannot write the cohort", "synth");
    }
  }
  out.write(buffer.data(), static_cast<std::streamsize>(buffer.size()));
  if (!out) return Error::Internal("cannot write the cohort", "synth");
  return {};
}

}  // namespace isoguard
