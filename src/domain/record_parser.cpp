#include "domain/record_parser.h"

#include <algorithm>
#include <array>
#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/error.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/text.h"
#include "domain/detail/record_text.h"

namespace isoguard {
namespace {

namespace json = boost::json;

// ===========================================================================================
// What the record's JSON holds, as far as the format reads it.
//
// The text is read once, by a Boost.JSON SAX parser, into a flat table: for the patient and
// for each event, the value of every field the format knows (its JSON kind and its number,
// boolean or string), and the items of the list fields. Unknown fields are skipped as they go
// by. The checks below then read the table in the same order as they always did, so that the
// first error they find is the one a DOM-based parser found: the whole text is known to be
// valid JSON before any field is judged. ParseRecordObject fills the same table from a DOM.
// ===========================================================================================

enum class JsonKind : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };

const char* KindName(JsonKind kind) {
  switch (kind) {
    case JsonKind::kNull:
      return "null";
    case JsonKind::kBool:
      return "a boolean";
    case JsonKind::kNumber:
      return "a number";
    case JsonKind::kString:
      return "a string";
    case JsonKind::kArray:
      return "an array";
    case JsonKind::kObject:
      return "an object";
  }
  return "a value";
}

std::string KindOf(JsonKind kind) { return KindName(kind); }

// One value. Every number is kept as a double: that is how every numeric field is read.
// A string points into the record's text or, when the text spells it with escapes, into a copy
// the table owns; a list points at its items.
struct Token {
  JsonKind kind;
  bool boolean;
  uint32_t size;  // a string's bytes; a list's items (the 10 MiB limit keeps both small)
  union {
    double number;
    const char* chars;
    uint32_t first_item;  // index into RecordTokens::items
  };

  std::string_view str() const { return {chars, size}; }
};

// The fields the format reads, in the patient and in events. The patient's and the events'
// share one table: a key is recognised the same way wherever it is.
enum class Field : uint8_t {
  kType,
  kId,
  kAt,
  kCollectedAt,
  kProgram,
  kCategory,
  kKg,
  kCounseled,
  kMethods,
  kSince,
  kPassed,
  kResult,
  kSetting,
  kSpecimen,
  kKind,
  kProduct,
  kDosesMg,
  kDaysSupply,
  kRefills,
  kPrescription,
  kTest,
  kValue,
  kUnit,
  kUln,
  kItems,
  kName,
  kAtc,
  kAction,
  kTerm,
  kSerious,
  kDate,
  kLastDose,
  kTarget,
  kAuthorization,
  kDispenseBy,
  kBirthDate,
  kJurisdiction,
  kTimeZone,
  kTargetMgPerKg,
  kUnknown,  // not a field of the format: skipped
};
constexpr size_t kFieldCount = static_cast<size_t>(Field::kUnknown);

constexpr std::array<std::string_view, kFieldCount> kFieldNames = {"type",
                                                                   "id",
                                                                   "at",
                                                                   "collected_at",
                                                                   "program",
                                                                   "category",
                                                                   "kg",
                                                                   "counseled",
                                                                   "methods",
                                                                   "since",
                                                                   "passed",
                                                                   "result",
                                                                   "setting",
                                                                   "specimen",
                                                                   "kind",
                                                                   "product",
                                                                   "doses_mg",
                                                                   "days_supply",
                                                                   "refills",
                                                                   "prescription",
                                                                   "test",
                                                                   "value",
                                                                   "unit",
                                                                   "uln",
                                                                   "items",
                                                                   "name",
                                                                   "atc",
                                                                   "action",
                                                                   "term",
                                                                   "serious",
                                                                   "date",
                                                                   "last_dose",
                                                                   "target",
                                                                   "authorization",
                                                                   "dispense_by",
                                                                   "birth_date",
                                                                   "jurisdiction",
                                                                   "time_zone",
                                                                   "target_mg_per_kg"};

constexpr std::string_view NameOf(Field f) { return kFieldNames[static_cast<size_t>(f)]; }

// The fields whose value is a list of scalars: their items are kept.
constexpr bool IsList(Field f) {
  return f == Field::kMethods || f == Field::kDosesMg || f == Field::kItems ||
         f == Field::kTargetMgPerKg;
}

// Key -> Field by length and first character, then one comparison: this runs for every key of
// every event, and a linear search over forty names would cost more than the rest of reading.
constexpr size_t kMaxFieldNameBytes = 16;
constexpr uint8_t kNoField = 0xFF;

struct FieldIndex {
  std::array<std::array<uint8_t, 128>, kMaxFieldNameBytes + 1> first{};  // [length][first char]
  std::array<uint8_t, kFieldCount> next{};  // the next field with the same length and first char
};

constexpr FieldIndex MakeFieldIndex() {
  FieldIndex index;
  for (auto& row : index.first) row.fill(kNoField);
  index.next.fill(kNoField);
  for (size_t f = kFieldCount; f-- > 0;) {
    const std::string_view name = kFieldNames[f];
    uint8_t& head = index.first[name.size()][static_cast<unsigned char>(name[0])];
    index.next[f] = head;
    head = static_cast<uint8_t>(f);
  }
  return index;
}
constexpr FieldIndex kFieldIndex = MakeFieldIndex();
static_assert(kFieldCount < kNoField);

// Equal bytes, for 1 <= n <= 16: two overlapping loads of 8 (or 4) bytes from each side, so
// that no call to memcmp and no jump on the length is needed.
uint64_t Load64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
uint32_t Load32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
bool SameBytes(const char* a, const char* b, size_t n) {
  if (n >= 8) return Load64(a) == Load64(b) && Load64(a + n - 8) == Load64(b + n - 8);
  if (n >= 4) return Load32(a) == Load32(b) && Load32(a + n - 4) == Load32(b + n - 4);
  return a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1];
}

[[gnu::always_inline]] inline Field Classify(std::string_view key) {
  if (key.empty() || key.size() > kMaxFieldNameBytes) return Field::kUnknown;
  const auto c = static_cast<unsigned char>(key[0]);
  if (c >= 128) return Field::kUnknown;
  for (uint8_t f = kFieldIndex.first[key.size()][c]; f != kNoField; f = kFieldIndex.next[f]) {
    if (SameBytes(kFieldNames[f].data(), key.data(), key.size())) {
      return static_cast<Field>(f);
    }
  }
  return Field::kUnknown;
}

// The known fields of one JSON object (the patient or an event), or the kind of an event that
// is not an object. A field's token is tokens[first_token + slot - 1]; a repeated key reuses
// its token, so the last one wins, as in a Boost.JSON DOM.
struct ObjectTokens {
  JsonKind kind = JsonKind::kObject;
  uint32_t first_token = 0;
  std::array<uint8_t, kFieldCount> slot{};  // 0: absent
};

struct RecordTokens {
  JsonKind root_kind = JsonKind::kNull;
  JsonKind patient_kind = JsonKind::kNull;  // null: absent or null (the same to the format)
  ObjectTokens patient;
  JsonKind events_kind = JsonKind::kNull;
  size_t event_count = 0;            // the length of the "events" array
  std::vector<ObjectTokens> events;  // its first max_events items: past that, none is read
  std::vector<Token> tokens;
  std::vector<Token> items;
  std::deque<std::string> copies;  // escaped strings; a deque never moves what it holds

  void Clear() {
    root_kind = patient_kind = events_kind = JsonKind::kNull;
    patient = ObjectTokens{};
    event_count = 0;
    events.clear();
    tokens.clear();
    items.clear();
    copies.clear();
  }

  // The token of field `f` of `object`, created absent-as-null on first use.
  [[gnu::always_inline]] Token& FieldToken(ObjectTokens& object, Field f) {
    uint8_t& slot = object.slot[static_cast<size_t>(f)];
    if (slot == 0) {
      slot = static_cast<uint8_t>(tokens.size() - object.first_token + 1);
      tokens.emplace_back();
    }
    return tokens[object.first_token + slot - 1];
  }
  // Null when the field is absent or null.
  const Token* Find(const ObjectTokens& object, Field f) const {
    const uint8_t slot = object.slot[static_cast<size_t>(f)];
    if (slot == 0) return nullptr;
    const Token& t = tokens[object.first_token + slot - 1];
    return t.kind == JsonKind::kNull ? nullptr : &t;
  }
  const Token& Item(const Token& list, size_t i) const { return items[list.first_item + i]; }
};

// ---- From text: the SAX handler

class RecordHandler {
 public:
  // The limits of Boost.JSON's own DOM handler, so that the same texts are valid JSON.
  static constexpr std::size_t max_object_size = json::object::max_size();
  static constexpr std::size_t max_array_size = json::array::max_size();
  static constexpr std::size_t max_key_size = json::string::max_size();
  static constexpr std::size_t max_string_size = json::string::max_size();

  RecordHandler(RecordTokens* out, std::string_view text, size_t max_events)
      : out_(*out), text_(text), max_events_(max_events) {}

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }

  bool on_object_begin(json::error_code&) {
    if (skip_ > 0) {
      ++skip_;
      return true;
    }
    switch (context_) {
      case Context::kDocument:
        out_.root_kind = JsonKind::kObject;
        Enter(Context::kRoot);
        return true;
      case Context::kRoot:
        if (root_field_ != RootField::kPatient) break;
        out_.patient_kind = JsonKind::kObject;
        out_.patient = ObjectTokens{};
        out_.patient.first_token = static_cast<uint32_t>(out_.tokens.size());
        Enter(Context::kPatient);
        return true;
      case Context::kEvents:
        if (out_.event_count++ >= max_events_) {
          ++skip_;  // past the limit: the record is rejected by its length alone
          return true;
        }
        out_.events.emplace_back().first_token = static_cast<uint32_t>(out_.tokens.size());
        Enter(Context::kEvent);
        return true;
      default:
        break;
    }
    Place(JsonKind::kObject);  // only its kind is read
    ++skip_;
    return true;
  }

  bool on_object_end(std::size_t, json::error_code&) {
    if (skip_ > 0) {
      --skip_;
      return true;
    }
    Leave();
    return true;
  }

  bool on_array_begin(json::error_code&) {
    if (skip_ > 0) {
      ++skip_;
      return true;
    }
    if (context_ == Context::kRoot && root_field_ == RootField::kEvents) {
      out_.events_kind = JsonKind::kArray;
      out_.events.clear();
      out_.event_count = 0;
      Enter(Context::kEvents);
      return true;
    }
    const bool in_object = context_ == Context::kPatient || context_ == Context::kEvent;
    Token* list = Place(JsonKind::kArray);
    if (list != nullptr && in_object && IsList(field_)) {
      list->first_item = static_cast<uint32_t>(out_.items.size());
      list->size = 0;
      list_token_ = static_cast<size_t>(list - out_.tokens.data());
      Enter(Context::kItems);
      return true;
    }
    ++skip_;
    return true;
  }

  bool on_array_end(std::size_t, json::error_code&) {
    if (skip_ > 0) {
      --skip_;
      return true;
    }
    if (context_ == Context::kItems) {
      Token& list = out_.tokens[list_token_];
      list.size = static_cast<uint32_t>(out_.items.size() - list.first_item);
    }
    Leave();
    return true;
  }

  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    if (skip_ == 0) key_parts_.append(s.data(), s.size());
    return true;
  }

  bool on_key(json::string_view s, std::size_t, json::error_code&) {
    if (skip_ > 0) return true;
    std::string_view key(s.data(), s.size());
    if (!key_parts_.empty()) {
      key_parts_.append(key);
      key = key_parts_;
    }
    if (context_ == Context::kRoot) {
      root_field_ = key == "patient"  ? RootField::kPatient
                    : key == "events" ? RootField::kEvents
                                      : RootField::kOther;
    } else {
      field_ = Classify(key);
    }
    key_parts_.clear();
    return true;
  }

  bool on_string_part(json::string_view s, std::size_t, json::error_code&) {
    if (skip_ > 0) return true;
    if (!in_parts_) {
      in_parts_ = true;
      parts_target_ = Place(JsonKind::kString);  // nothing else is placed until the string ends
    }
    if (parts_target_ != nullptr) string_parts_.append(s.data(), s.size());
    return true;
  }

  bool on_string(json::string_view s, std::size_t, json::error_code&) {
    if (skip_ > 0) return true;
    std::string_view value(s.data(), s.size());
    Token* target;
    if (in_parts_) {
      in_parts_ = false;
      target = parts_target_;
      if (target == nullptr) return true;
      string_parts_.append(value);
      value = out_.copies.emplace_back(string_parts_);
      string_parts_.clear();
    } else {
      target = Place(JsonKind::kString);
      if (target == nullptr) return true;
      // Unescaped strings arrive as views of the text itself; others are in the parser's
      // buffer, which is reused.
      if (!InText(value)) value = out_.copies.emplace_back(value);
    }
    target->chars = value.data();
    target->size = static_cast<uint32_t>(value.size());
    return true;
  }

  bool on_number_part(json::string_view, json::error_code&) { return true; }
  bool on_int64(int64_t i, json::string_view, json::error_code&) {
    Number(static_cast<double>(i));
    return true;
  }
  bool on_uint64(uint64_t u, json::string_view, json::error_code&) {
    Number(static_cast<double>(u));
    return true;
  }
  bool on_double(double d, json::string_view, json::error_code&) {
    Number(d);
    return true;
  }
  bool on_bool(bool b, json::error_code&) {
    if (skip_ > 0) return true;
    if (Token* t = Place(JsonKind::kBool)) t->boolean = b;
    return true;
  }
  bool on_null(json::error_code&) {
    if (skip_ == 0) Place(JsonKind::kNull);
    return true;
  }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }

 private:
  enum class Context : uint8_t { kDocument, kRoot, kPatient, kEvents, kEvent, kItems };
  enum class RootField : uint8_t { kOther, kPatient, kEvents };

  void Enter(Context c) {
    stack_[depth_++] = context_;
    context_ = c;
  }
  void Leave() { context_ = stack_[--depth_]; }

  void Number(double d) {
    if (skip_ > 0) return;
    if (Token* t = Place(JsonKind::kNumber)) t->number = d;
  }

  // Records a value of `kind` that starts here, where the format reads it. Returns its token
  // when its contents are read too, null when only its kind matters or it is not read at all.
  [[gnu::always_inline]] Token* Place(JsonKind kind) {
    if (context_ == Context::kEvent) return PlaceField(out_.events.back(), kind);  // most values
    return PlaceElsewhere(kind);
  }

  Token* PlaceElsewhere(JsonKind kind) {
    switch (context_) {
      case Context::kDocument:
        out_.root_kind = kind;
        return nullptr;
      case Context::kRoot:
        if (root_field_ == RootField::kPatient) {
          out_.patient_kind = kind;
        } else if (root_field_ == RootField::kEvents) {
          out_.events_kind = kind;
          out_.events.clear();
          out_.event_count = 0;
        }
        return nullptr;
      case Context::kPatient:
        return PlaceField(out_.patient, kind);
      case Context::kEvents:
        if (out_.event_count++ < max_events_) out_.events.emplace_back().kind = kind;
        return nullptr;
      case Context::kEvent:
        return PlaceField(out_.events.back(), kind);
      case Context::kItems: {
        Token& item = out_.items.emplace_back();
        item.kind = kind;
        return &item;
      }
    }
    return nullptr;
  }

  Token* PlaceField(ObjectTokens& object, JsonKind kind) {
    if (field_ == Field::kUnknown) return nullptr;
    Token& t = out_.FieldToken(object, field_);
    t.kind = kind;
    return &t;
  }

  bool InText(std::string_view s) const {
    const std::less_equal<const char*> le;
    return le(text_.data(), s.data()) && le(s.data() + s.size(), text_.data() + text_.size());
  }

  RecordTokens& out_;
  const std::string_view text_;
  const size_t max_events_;

  // Where the parser is: the containers the format reads, innermost last. Anything else is
  // skipped, counting only its depth (Boost.JSON bounds the depth).
  Context context_ = Context::kDocument;
  std::array<Context, 8> stack_{};
  size_t depth_ = 0;
  uint32_t skip_ = 0;
  RootField root_field_ = RootField::kOther;  // the current key in the root object
  Field field_ = Field::kUnknown;             // the current key in the patient or an event
  size_t list_token_ = 0;                     // the token of the list being read

  std::string key_parts_;  // a key that arrives in parts (escaped)
  bool in_parts_ = false;  // a string is arriving in parts
  Token* parts_target_ = nullptr;
  std::string string_parts_;
};

// ---- From a DOM: the same table

JsonKind KindOfValue(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return JsonKind::kNull;
    case json::kind::bool_:
      return JsonKind::kBool;
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return JsonKind::kNumber;
    case json::kind::string:
      return JsonKind::kString;
    case json::kind::array:
      return JsonKind::kArray;
    case json::kind::object:
      return JsonKind::kObject;
  }
  return JsonKind::kNull;
}

void TokenFromValue(const json::value& v, Token& t) {
  t.kind = KindOfValue(v);
  switch (v.kind()) {
    case json::kind::bool_:
      t.boolean = v.get_bool();
      break;
    case json::kind::int64:
      t.number = static_cast<double>(v.get_int64());
      break;
    case json::kind::uint64:
      t.number = static_cast<double>(v.get_uint64());
      break;
    case json::kind::double_:
      t.number = v.get_double();
      break;
    case json::kind::string:
      t.chars = v.get_string().data();
      t.size = static_cast<uint32_t>(v.get_string().size());
      break;
    default:
      break;
  }
}

void ObjectFromValue(const json::object& object, RecordTokens& out, ObjectTokens& slots) {
  slots.first_token = static_cast<uint32_t>(out.tokens.size());
  for (const json::key_value_pair& member : object) {
    const std::string_view key(member.key().data(), member.key().size());
    const Field f = Classify(key);
    if (f == Field::kUnknown) continue;
    Token& t = out.FieldToken(slots, f);
    TokenFromValue(member.value(), t);
    if (t.kind == JsonKind::kArray && IsList(f)) {
      const json::array& list = member.value().get_array();
      t.first_item = static_cast<uint32_t>(out.items.size());
      t.size = static_cast<uint32_t>(list.size());
      for (const json::value& item : list) TokenFromValue(item, out.items.emplace_back());
    }
  }
}

void TokensFromObject(const json::object& root, size_t max_events, RecordTokens& out) {
  out.Clear();
  out.root_kind = JsonKind::kObject;
  if (const json::value* patient = root.if_contains("patient")) {
    out.patient_kind = KindOfValue(*patient);
    out.patient = ObjectTokens{};
    if (patient->is_object()) ObjectFromValue(patient->get_object(), out, out.patient);
  }
  if (const json::value* events = root.if_contains("events")) {
    out.events_kind = KindOfValue(*events);
    if (events->is_array()) {
      const json::array& list = events->get_array();
      out.event_count = list.size();
      for (size_t i = 0; i < list.size() && i < max_events; ++i) {
        ObjectTokens& slots = out.events.emplace_back();
        slots.kind = KindOfValue(list[i]);
        if (list[i].is_object()) ObjectFromValue(list[i].get_object(), out, slots);
      }
    }
  }
}

// ---- Per-thread scratch

struct IdEntry {
  size_t hash;
  uint32_t index;
};

// An event's time read ahead of the checks, so that the events can be built in time order.
struct EventTime {
  Instant at;   // Instant::min() when not known
  Field field;  // the field it was read from: at, or a pregnancy test's collected_at
  bool known;
};

struct Scratch {
  RecordTokens tokens;
  std::vector<IdEntry> ids;
  std::vector<EventTime> times;
  std::vector<uint32_t> order;     // input indexes in time order
  std::vector<uint32_t> position;  // position[input index] = place in time order
  bool busy = false;

  // A record near the limits leaves tables of megabytes behind; they are not kept for the small
  // records that follow. (Swapped with empty ones: nothing is allocated, nothing can throw.)
  void ReleaseIfLarge() {
    constexpr size_t kKeepBytes = size_t{4} << 20;
    const size_t bytes = (tokens.tokens.capacity() + tokens.items.capacity()) * sizeof(Token) +
                         tokens.events.capacity() * sizeof(ObjectTokens) +
                         ids.capacity() * sizeof(IdEntry) + times.capacity() * sizeof(EventTime) +
                         (order.capacity() + position.capacity()) * sizeof(uint32_t);
    if (bytes <= kKeepBytes) return;
    std::vector<Token>().swap(tokens.tokens);
    std::vector<Token>().swap(tokens.items);
    std::vector<ObjectTokens>().swap(tokens.events);
    std::vector<IdEntry>().swap(ids);
    std::vector<EventTime>().swap(times);
    std::vector<uint32_t>().swap(order);
    std::vector<uint32_t>().swap(position);
  }
};

// The calling thread's scratch tables, reused from record to record so that reading a record
// allocates only what the Record itself holds. A call made while the thread's tables are in use
// (a program check that parses a record) gets tables of its own.
class ScratchLease {
 public:
  ScratchLease() {
    thread_local Scratch scratch;
    if (scratch.busy) {
      own_ = std::make_unique<Scratch>();
      scratch_ = own_.get();
    } else {
      scratch_ = &scratch;
    }
    scratch_->busy = true;
  }
  ~ScratchLease() {
    scratch_->ReleaseIfLarge();
    scratch_->busy = false;
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;

  Scratch& operator*() const { return *scratch_; }
  Scratch* operator->() const { return scratch_; }

 private:
  std::unique_ptr<Scratch> own_;
  Scratch* scratch_;
};

// ===========================================================================================
// Times and dates in their usual spelling.
//
// Nearly every time in a record is spelled "YYYY-MM-DDTHH:MM:SS" and then "Z" or "+HH:MM", and
// every date "YYYY-MM-DD". These read exactly those spellings, with the checks ParseOffsetTime and
// ParseDate make (digits, the calendar, the format's years, hours and offsets in range), in a
// fraction of their time: they were a tenth of reading a record. Any other spelling, and anything
// these do not accept, goes to the general parser (core/time.h), which has the last word and
// the error messages.
// ===========================================================================================

// Two decimal digits at p, or -1.
int TwoDigits(const char* p) {
  const unsigned hi = static_cast<unsigned char>(p[0]) - unsigned{'0'};
  const unsigned lo = static_cast<unsigned char>(p[1]) - unsigned{'0'};
  return hi < 10 && lo < 10 ? static_cast<int>(hi * 10 + lo) : -1;
}

// Days since 1970-01-01 of a valid proleptic Gregorian date (H. Hinnant's days_from_civil, the
// algorithm of date::sys_days).
constexpr int32_t DaysFromCivil(int y, int m, int d) {
  y -= m <= 2 ? 1 : 0;
  const int era = (y >= 0 ? y : y - 399) / 400;
  const int yoe = y - era * 400;
  const int doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}
static_assert(DaysFromCivil(1970, 1, 1) == 0);
static_assert(DaysFromCivil(2000, 3, 1) == 11017);
static_assert(DaysFromCivil(1900, 1, 1) == -25567);

// "YYYY-MM-DD" at the start of `s` (at least 10 characters). (A bool and an out-parameter
// rather than an optional: the optional came back through memory, a stall on every call.)
bool UsualDatePrefix(std::string_view s, LocalDate& out) {
  const int century = TwoDigits(s.data());
  const int year_of_century = TwoDigits(s.data() + 2);
  const int m = TwoDigits(s.data() + 5);
  const int d = TwoDigits(s.data() + 8);
  if (century < 0 || year_of_century < 0 || s[4] != '-' || s[7] != '-' || m < 1 || m > 12 ||
      d < 1) {
    return false;
  }
  const int y = century * 100 + year_of_century;
  if (y < kMinYear || y > kMaxYear) return false;
  static constexpr std::array<int, 12> kMonthDays = {31, 28, 31, 30, 31, 30,
                                                     31, 31, 30, 31, 30, 31};
  const bool leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
  if (d > kMonthDays[static_cast<size_t>(m - 1)] + (m == 2 && leap ? 1 : 0)) return false;
  out = LocalDate(DaysFromCivil(y, m, d));
  return true;
}

// "YYYY-MM-DDTHH:MM:SSZ" or "YYYY-MM-DDTHH:MM:SS+HH:MM" (or -HH:MM).
bool UsualOffsetTime(std::string_view s, OffsetTime& out) {
  if (s.size() != 20 && s.size() != 25) return false;
  LocalDate date;
  if (!UsualDatePrefix(s, date) || s[10] != 'T' || s[13] != ':' || s[16] != ':') return false;
  const int hh = TwoDigits(s.data() + 11);
  const int mi = TwoDigits(s.data() + 14);
  const int ss = TwoDigits(s.data() + 17);
  if (hh < 0 || hh > 23 || mi < 0 || mi > 59 || ss < 0 || ss > 59) return false;
  int offset_minutes = 0;
  if (s.size() == 20) {
    if (s[19] != 'Z') return false;
  } else {
    const int oh = TwoDigits(s.data() + 20);
    const int om = TwoDigits(s.data() + 23);
    if ((s[19] != '+' && s[19] != '-') || s[22] != ':' || oh < 0 || oh > 23 || om < 0 || om > 59) {
      return false;
    }
    offset_minutes = (oh * 60 + om) * (s[19] == '-' ? -1 : 1);
  }
  const int64_t local_seconds = int64_t{date.days_since_epoch()} * 86400 + hh * 3600 + mi * 60 + ss;
  const int64_t utc_ms = (local_seconds - offset_minutes * 60) * 1000;
  out = OffsetTime{Instant(std::chrono::milliseconds(utc_ms)), date, offset_minutes};
  return true;
}

Result<OffsetTime> ReadOffsetTime(std::string_view s) {
  OffsetTime usual;
  if (UsualOffsetTime(s, usual)) return usual;
  return ParseOffsetTime(s);
}

Result<LocalDate> ReadDate(std::string_view s) {
  LocalDate usual;
  if (s.size() == 10 && UsualDatePrefix(s, usual)) return usual;
  return ParseDate(s);
}

Result<LocalDate> ReadDateOrTime(std::string_view s) {
  if (s.size() == 10) return ReadDate(s);
  OffsetTime usual;
  if (UsualOffsetTime(s, usual)) return usual.local_date;
  return ParseDateOrTime(s);
}

// ===========================================================================================
// The checks: what the format requires of each field, in the order they are made.
// ===========================================================================================

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
  Fields(const RecordTokens& record, const ObjectTokens& object, std::string_view base, int index,
         const RecordLimits& limits)
      : record_(record), object_(object), base_(base), index_(index), limits_(limits) {}

  FieldPath At(Field f) const { return FieldPath{base_, index_, NameOf(f), -1}; }
  std::string Path(Field f) const { return At(f).str(); }

  const Token* Find(Field f) const { return record_.Find(object_, f); }
  const Token& Item(const Token& list, size_t i) const { return record_.Item(list, i); }

  Error Missing(Field f) const { return Error::BadInput("required field is missing", Path(f)); }
  Error WrongType(Field f, const Token& v, std::string_view want) const {
    return Error::BadInput("must be " + std::string(want) + ", got " + KindOf(v.kind), Path(f));
  }

  // A string; `required` strings are non-empty. Absent optional strings leave `out` empty.
  // The view points into the record's text (or the scratch's copy of it).
  Status View(Field f, bool required, std::string_view& out) const {
    const Token* v = Find(f);
    if (v == nullptr) return required ? Status(Missing(f)) : Status();
    if (v->kind != JsonKind::kString) return WrongType(f, *v, "a string");
    const std::string_view s = v->str();
    if (s.empty() && required) return Error::BadInput("must not be empty", Path(f));
    if (s.size() > limits_.max_string_chars && Utf8Length(s) > limits_.max_string_chars) {
      return Error::BadInput(
          "is longer than " + std::to_string(limits_.max_string_chars) + " characters", Path(f));
    }
    out = s;
    return {};
  }

  Status String(Field f, bool required, std::string& out) const {
    std::string_view view;
    if (auto st = View(f, required, view); !st.ok()) return st;
    out.assign(view.data(), view.size());
    return {};
  }

  Status Bool(Field f, bool& out) const {
    const Token* v = Find(f);
    if (v == nullptr) return Missing(f);
    if (v->kind != JsonKind::kBool) return WrongType(f, *v, "true or false");
    out = v->boolean;
    return {};
  }

  // A number; absent -> Missing (callers check Find first for optional ones).
  Status Number(Field f, double& out) const {
    const Token* v = Find(f);
    if (v == nullptr) return Missing(f);
    return NumberValue(*v, At(f), out);
  }

  static Status NumberValue(const Token& v, const FieldPath& path, double& out) {
    if (v.kind != JsonKind::kNumber) {
      return Error::BadInput("must be a number, got " + KindOf(v.kind), path.str());
    }
    out = v.number;
    return {};
  }

  // A whole number in [lo, hi].
  Status Integer(Field f, int32_t lo, int32_t hi, int32_t& out) const {
    const Token* v = Find(f);
    if (v == nullptr) return Missing(f);
    return IntegerValue(*v, At(f), lo, hi, out);
  }

  static Status IntegerValue(const Token& v, const FieldPath& path, int32_t lo, int32_t hi,
                             int32_t& out) {
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
  Status Code(Field f, std::optional<E> (*parse)(std::string_view), E& out,
              std::string_view what) const {
    std::string_view s;
    if (auto st = View(f, true, s); !st.ok()) return st;
    auto e = parse(s);
    if (!e) return Error::BadInput("unknown " + std::string(what) + " " + Shown(s), Path(f));
    out = *e;
    return {};
  }

  // `known`, when given, is this field's time as ParseOffsetTime read it already.
  Status Time(Field f, Instant& out, const EventTime* known = nullptr) const {
    std::string_view s;
    if (auto st = View(f, true, s); !st.ok()) return st;
    if (known != nullptr && known->known && known->field == f) {
      out = known->at;
      return {};
    }
    auto t = ReadOffsetTime(s);
    if (!t.ok()) return Error::BadInput(t.error().message, Path(f));
    out = t->instant;
    return {};
  }

  Status DateOrTime(Field f, LocalDate& out) const {
    std::string_view s;
    if (auto st = View(f, true, s); !st.ok()) return st;
    auto d = ReadDateOrTime(s);
    if (!d.ok()) return Error::BadInput(d.error().message, Path(f));
    out = *d;
    return {};
  }

 private:
  static size_t Utf8Length(std::string_view s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
  }

  const RecordTokens& record_;
  const ObjectTokens& object_;
  std::string_view base_;
  int index_;
  const RecordLimits& limits_;
};

#define ISOGUARD_TRY(expr)                             \
  do {                                                 \
    if (auto _s = (expr); !_s.ok()) return _s.error(); \
  } while (0)

Status ParsePatient(const RecordTokens& t, const RecordLimits& limits, Patient& p) {
  if (t.patient_kind != JsonKind::kObject) {
    return Error::BadInput("must be an object, got " + KindOf(t.patient_kind), "patient");
  }
  Fields f(t, t.patient, "patient", -1, limits);
  ISOGUARD_TRY(f.String(Field::kId, true, p.id));
  std::string_view birth;
  ISOGUARD_TRY(f.View(Field::kBirthDate, true, birth));
  auto bd = ReadDate(birth);
  if (!bd.ok()) return Error::BadInput(bd.error().message, "patient.birth_date");
  p.birth_date = *bd;
  ISOGUARD_TRY(f.Code(Field::kJurisdiction, &ParseJurisdiction, p.jurisdiction, "jurisdiction"));
  ISOGUARD_TRY(f.Code(Field::kCategory, &ParseCategory, p.category, "category"));
  ISOGUARD_TRY(f.String(Field::kTimeZone, false, p.time_zone));
  if (!p.time_zone.empty()) {
    auto z = Zone::Locate(p.time_zone);
    if (!z.ok()) return Error::BadInput(z.error().message, "patient.time_zone");
  }
  if (const Token* target = f.Find(Field::kTargetMgPerKg)) {
    if (target->kind != JsonKind::kArray || target->size != 2) {
      return Error::BadInput("must be [low, high]", "patient.target_mg_per_kg");
    }
    std::array<double, 2> low_high{};
    for (size_t i = 0; i < 2; ++i) {
      ISOGUARD_TRY(Fields::NumberValue(f.Item(*target, i), f.At(Field::kTargetMgPerKg).Item(i),
                                       low_high[i]));
    }
    if (!(low_high[0] > 0 && low_high[0] <= low_high[1]) || !std::isfinite(low_high[1])) {
      return Error::BadInput("must be [low, high] with 0 < low <= high",
                             "patient.target_mg_per_kg");
    }
    p.target_mg_per_kg = low_high;
  }
  return {};
}

// Checks one event and fills `e`. It reads nothing but the event's own fields, so events may
// be checked in any order. `time`, when given, is the event's time read ahead (ReadTimes).
Status ParseEvent(const RecordTokens& t, const ObjectTokens& object, size_t index,
                  const ParseOptions& options, Event& e, const EventTime* time = nullptr) {
  if (object.kind != JsonKind::kObject) {
    return Error::BadInput("must be an object, got " + KindOf(object.kind),
                           FieldPath{"events", static_cast<int>(index), {}, -1}.str());
  }
  const RecordLimits& limits = options.limits;
  Fields f(t, object, "events", static_cast<int>(index), limits);
  e.index = static_cast<uint32_t>(index);
  ISOGUARD_TRY(f.Code(Field::kType, &ParseEventType, e.type, "event type"));
  ISOGUARD_TRY(f.String(Field::kId, false, e.id));
  if (const Token* id = f.Find(Field::kId); id != nullptr && e.id.empty()) {
    return Error::BadInput("must not be empty", f.Path(Field::kId));
  }
  if (e.type == EventType::kPregnancyTest) {
    ISOGUARD_TRY(f.Time(Field::kCollectedAt, e.at, time));
  } else {
    ISOGUARD_TRY(f.Time(Field::kAt, e.at, time));
  }

  switch (e.type) {
    case EventType::kEnrollment:
      ISOGUARD_TRY(f.String(Field::kProgram, false, e.program));
      if (!e.program.empty() && options.is_known_program && !options.is_known_program(e.program)) {
        return Error::BadInput("unknown program " + Shown(e.program), f.Path(Field::kProgram));
      }
      break;
    case EventType::kCategoryChange:
      ISOGUARD_TRY(f.Code(Field::kCategory, &ParseCategory, e.category, "category"));
      break;
    case EventType::kWeight:
      ISOGUARD_TRY(f.Number(Field::kKg, e.kg));
      if (!(e.kg > 0 && e.kg <= limits.max_kg)) {
        return Error::BadInput(
            "must be in (0, " + FormatNumber(limits.max_kg) + "] kg, got " + FormatNumber(e.kg),
            f.Path(Field::kKg));
      }
      break;
    case EventType::kVisit:
      ISOGUARD_TRY(f.Bool(Field::kCounseled, e.flag));
      break;
    case EventType::kContraception: {
      const Token* m = f.Find(Field::kMethods);
      if (m == nullptr) return f.Missing(Field::kMethods);
      if (m->kind != JsonKind::kArray) {
        return f.WrongType(Field::kMethods, *m, "a list of method codes");
      }
      for (size_t i = 0; i < m->size; ++i) {
        const Token& method = f.Item(*m, i);
        if (method.kind != JsonKind::kString) {
          return Error::BadInput("must be a method code, got " + KindOf(method.kind),
                                 f.At(Field::kMethods).Item(i).str());
        }
        auto code = ParseContraceptionMethod(method.str());
        if (!code) {
          return Error::BadInput("unknown contraception method " + Shown(method.str()),
                                 f.At(Field::kMethods).Item(i).str());
        }
        e.methods |= MethodBit(*code);
      }
      ISOGUARD_TRY(f.DateOrTime(Field::kSince, e.date));
      break;
    }
    case EventType::kComprehension:
      ISOGUARD_TRY(f.Bool(Field::kPassed, e.flag));
      break;
    case EventType::kPregnancyTest:
      ISOGUARD_TRY(f.Code(Field::kResult, &ParseTestResult, e.result, "test result"));
      ISOGUARD_TRY(f.Code(Field::kSetting, &ParseTestSetting, e.setting, "test setting"));
      ISOGUARD_TRY(f.Code(Field::kSpecimen, &ParseSpecimen, e.specimen, "specimen"));
      break;
    case EventType::kRiskAcknowledgement:
    case EventType::kSecondPrescriber:
      break;
    case EventType::kAssessment:
      ISOGUARD_TRY(f.Code(Field::kKind, &ParseAssessmentKind, e.assessment, "assessment kind"));
      break;
    case EventType::kPrescription: {
      if (e.id.empty()) return f.Missing(Field::kId);
      ISOGUARD_TRY(f.Code(Field::kProduct, &ParseProduct, e.product, "product"));
      const Token* d = f.Find(Field::kDosesMg);
      if (d == nullptr) return f.Missing(Field::kDosesMg);
      if (d->kind != JsonKind::kArray) {
        return f.WrongType(Field::kDosesMg, *d, "a list of doses in mg");
      }
      if (d->size == 0 || d->size > limits.max_doses) {
        return Error::BadInput("must hold 1 to " + std::to_string(limits.max_doses) +
                                   " doses, got " + std::to_string(d->size),
                               f.Path(Field::kDosesMg));
      }
      for (size_t i = 0; i < d->size; ++i) {
        const FieldPath item_path = f.At(Field::kDosesMg).Item(i);
        double mg = 0;
        ISOGUARD_TRY(Fields::NumberValue(f.Item(*d, i), item_path, mg));
        if (!(mg > 0 && mg <= limits.max_dose_mg)) {
          return Error::BadInput("must be in (0, " + FormatNumber(limits.max_dose_mg) +
                                     "] mg, got " + FormatNumber(mg),
                                 item_path.str());
        }
        e.doses_mg[i] = mg;
      }
      e.dose_count = static_cast<uint8_t>(d->size);
      ISOGUARD_TRY(f.Integer(Field::kDaysSupply, limits.min_days_supply, limits.max_days_supply,
                             e.days_supply));
      ISOGUARD_TRY(f.Integer(Field::kRefills, 0, limits.max_refills, e.refills));
      break;
    }
    case EventType::kDispense:
      ISOGUARD_TRY(f.String(Field::kPrescription, true, e.ref));
      if (f.Find(Field::kDaysSupply) != nullptr) {
        ISOGUARD_TRY(f.Integer(Field::kDaysSupply, limits.min_days_supply, limits.max_days_supply,
                               e.days_supply));
      }
      break;
    case EventType::kLab: {
      ISOGUARD_TRY(f.Code(Field::kTest, &ParseLabTest, e.test, "lab test"));
      ISOGUARD_TRY(f.Number(Field::kValue, e.value));
      if (!(e.value >= 0) || !std::isfinite(e.value)) {
        return Error::BadInput("must be a number >= 0, got " + FormatNumber(e.value),
                               f.Path(Field::kValue));
      }
      ISOGUARD_TRY(f.Code(Field::kUnit, &ParseLabUnit, e.unit, "unit"));
      bool enzyme = e.test == LabTest::kALT || e.test == LabTest::kAST;
      bool unit_fits = enzyme ? e.unit == LabUnit::kUnitsPerLiter
                              : (e.unit == LabUnit::kMgPerDl || e.unit == LabUnit::kMmolPerL);
      if (!unit_fits) {
        return Error::BadInput("unit " + Shown(ToString(e.unit)) + " does not fit test " +
                                   std::string(ToString(e.test)) +
                                   (enzyme ? " (use U/L)" : " (use mg/dL or mmol/L)"),
                               f.Path(Field::kUnit));
      }
      if (f.Find(Field::kUln) != nullptr) {
        ISOGUARD_TRY(f.Number(Field::kUln, e.uln));
        if (!(e.uln > 0) || !std::isfinite(e.uln)) {
          return Error::BadInput("must be a number > 0, got " + FormatNumber(e.uln),
                                 f.Path(Field::kUln));
        }
      }
      break;
    }
    case EventType::kPhq9: {
      const Token* items = f.Find(Field::kItems);
      if (items == nullptr) return f.Missing(Field::kItems);
      if (items->kind != JsonKind::kArray) {
        return f.WrongType(Field::kItems, *items, "a list of nine scores");
      }
      if (items->size != 9) {
        return Error::BadInput("must hold exactly 9 scores, got " + std::to_string(items->size),
                               f.Path(Field::kItems));
      }
      for (size_t i = 0; i < 9; ++i) {
        int32_t score = 0;
        ISOGUARD_TRY(
            Fields::IntegerValue(f.Item(*items, i), f.At(Field::kItems).Item(i), 0, 3, score));
        e.phq9_items[i] = static_cast<uint8_t>(score);
      }
      break;
    }
    case EventType::kMedication: {
      std::string_view name;
      ISOGUARD_TRY(f.View(Field::kName, true, name));
      e.name.assign(name.data(), name.size());
      e.name_normalized = NormalizeMedicationName(name);
      std::string_view atc;
      ISOGUARD_TRY(f.View(Field::kAtc, false, atc));
      e.atc = NormalizeAtc(atc);
      ISOGUARD_TRY(f.Code(Field::kAction, &ParseMedicationAction, e.action, "medication action"));
      break;
    }
    case EventType::kAdverseEvent:
      ISOGUARD_TRY(f.String(Field::kTerm, true, e.name));
      ISOGUARD_TRY(f.Bool(Field::kSerious, e.flag));
      break;
    case EventType::kMissedDose:
      ISOGUARD_TRY(f.DateOrTime(Field::kDate, e.date));
      break;
    case EventType::kTreatmentEnd:
      ISOGUARD_TRY(f.DateOrTime(Field::kLastDose, e.date));
      break;
    case EventType::kPrescriptionCancel:
      ISOGUARD_TRY(f.String(Field::kPrescription, true, e.ref));
      break;
    case EventType::kEnteredInError:
      ISOGUARD_TRY(f.String(Field::kTarget, true, e.ref));
      break;
    case EventType::kAuthorization: {
      ISOGUARD_TRY(f.String(Field::kPrescription, true, e.ref));
      ISOGUARD_TRY(f.String(Field::kAuthorization, true, e.ref2));
      ISOGUARD_TRY(f.Time(Field::kDispenseBy, e.dispense_by));
      break;
    }
    case EventType::kAuthorizationReversal:
      ISOGUARD_TRY(f.String(Field::kAuthorization, true, e.ref2));
      break;
  }
  return {};
}

// Each event's time, read ahead of the checks from the field ParseEvent will read it from, as
// ParseEvent will read it. An event whose time cannot be read fails the checks (at its type or
// at its time), so where it is placed does not matter.
void ReadTimes(const RecordTokens& t, size_t count, std::vector<EventTime>& times) {
  const std::string_view pregnancy_test = ToString(EventType::kPregnancyTest);
  times.resize(count);
  for (size_t i = 0; i < count; ++i) {
    EventTime& time = times[i];
    time = EventTime{Instant::min(), Field::kAt, false};
    const ObjectTokens& object = t.events[i];
    if (object.kind != JsonKind::kObject) continue;
    const Token* type = t.Find(object, Field::kType);
    if (type != nullptr && type->kind == JsonKind::kString && type->str() == pregnancy_test) {
      time.field = Field::kCollectedAt;
    }
    const Token* at = t.Find(object, time.field);
    if (at == nullptr || at->kind != JsonKind::kString) continue;
    auto parsed = ReadOffsetTime(at->str());
    if (!parsed.ok()) continue;
    time.at = parsed->instant;
    time.known = true;
  }
}

// Input indexes ordered by time, ties in input order. Records mostly arrive in order or nearly
// so: an insertion sort finishes those in a pass; past a budget of moves, a full sort.
void OrderByTime(const std::vector<EventTime>& times, std::vector<uint32_t>& order) {
  const size_t n = times.size();
  order.resize(n);
  for (uint32_t i = 0; i < n; ++i) order[i] = i;
  size_t budget = 4 * n;
  for (size_t k = 1; k < n; ++k) {
    const uint32_t moving = order[k];
    const Instant at = times[moving].at;
    size_t j = k;
    for (; j > 0 && at < times[order[j - 1]].at && budget > 0; --j, --budget) {
      order[j] = order[j - 1];
    }
    order[j] = moving;
    if (budget == 0) {
      // Still a permutation; the index breaks ties, as a stable sort would.
      std::sort(order.begin(), order.end(), [&times](uint32_t a, uint32_t b) {
        return times[a].at != times[b].at ? times[a].at < times[b].at : a < b;
      });
      return;
    }
  }
}

// The record from the table: the patient, the events, the checks across events. Events are
// built in time order, each once, where the record keeps them. The error reported is still the
// first in input order: an event's checks depend on that event alone, and the malformed event
// with the lowest index wins.
Result<Record> RecordFromTokens(const RecordTokens& t, const ParseOptions& options,
                                Scratch& scratch) {
  Record record;
  if (t.patient_kind == JsonKind::kNull) {
    return Error::BadInput("required field is missing", "patient");
  }
  ISOGUARD_TRY(ParsePatient(t, options.limits, record.patient));

  if (t.events_kind == JsonKind::kNull) {
    return Error::BadInput("required field is missing", "events");
  }
  if (t.events_kind != JsonKind::kArray) {
    return Error::BadInput("must be a list of events, got " + KindOf(t.events_kind), "events");
  }
  if (t.event_count > options.limits.max_events) {
    return Error::BadInput("holds " + std::to_string(t.event_count) + " events; at most " +
                               std::to_string(options.limits.max_events) + " are allowed",
                           "events");
  }
  const size_t n = t.event_count;
  ReadTimes(t, n, scratch.times);
  OrderByTime(scratch.times, scratch.order);
  record.events.reserve(n);
  size_t first_bad = n;
  Status error;
  for (uint32_t i : scratch.order) {
    if (i > first_bad) continue;  // a later event cannot be the first malformed one
    Event& e = record.events.emplace_back();
    Status st = ParseEvent(t, t.events[i], i, options, e, &scratch.times[i]);
    if (!st.ok()) {
      first_bad = i;
      error = std::move(st);
    }
  }
  if (first_bad < n) return error.error();
  std::vector<uint32_t>& position = scratch.position;
  position.resize(n);
  for (uint32_t k = 0; k < n; ++k) position[scratch.order[k]] = k;
  auto in_input_order = [&](size_t i) -> const Event& { return record.events[position[i]]; };

  // Cross-event checks: unique ids; every dispense names a prescription of the record.
  // Ids are sorted by hash (cheap integer comparisons), equal hashes compared as text.
  std::vector<IdEntry>& ids = scratch.ids;
  ids.clear();
  const std::hash<std::string_view> hasher;
  for (const Event& e : record.events) {
    if (!e.id.empty()) ids.push_back({hasher(e.id), e.index});
  }
  auto id_of = [&](const IdEntry& entry) -> const std::string& {
    return in_input_order(entry.index).id;
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
  for (size_t i = 0; i < n; ++i) {
    const Event& e = in_input_order(i);
    if (e.type != EventType::kDispense) continue;
    const size_t h = hasher(e.ref);
    auto it = std::lower_bound(ids.begin(), ids.end(), h,
                               [](const IdEntry& entry, size_t x) { return entry.hash < x; });
    bool found = false;
    for (; it != ids.end() && it->hash == h; ++it) {
      if (id_of(*it) == e.ref && in_input_order(it->index).type == EventType::kPrescription) {
        found = true;
      }
    }
    if (!found) {
      return Error::BadInput("names prescription " + Shown(e.ref) + ", which is not in the record",
                             "events[" + std::to_string(e.index) + "].prescription");
    }
  }
  return record;
}

}  // namespace

namespace detail {

Result<Record> ParseRecordText(std::string_view text, const ParseOptions& options, size_t max_depth,
                               RecordTextFailure* failure) {
  RecordTextFailure ignored;
  RecordTextFailure& report = failure != nullptr ? *failure : ignored;
  report = RecordTextFailure{};
  if (text.size() > options.limits.max_bytes) {
    report.stage = RecordTextFailure::Stage::kTooLarge;
    return Error::BadInput("the record is " + std::to_string(text.size()) + " bytes; at most " +
                               std::to_string(options.limits.max_bytes) + " are allowed",
                           "record");
  }
  ScratchLease scratch;
  RecordTokens& tokens = scratch->tokens;
  tokens.Clear();
  json::parse_options parse_options;
  parse_options.max_depth = max_depth;
  json::basic_parser<RecordHandler> parser(parse_options, &tokens, text, options.limits.max_events);
  json::error_code ec;
  // The whole text at once (more = false): incomplete JSON is an error, and trailing text is
  // one too, as json::parser::write makes it.
  const size_t consumed = parser.write_some(false, text.data(), text.size(), ec);
  if (!ec && consumed < text.size()) ec = json::error::extra_data;
  if (ec) {
    report.stage = RecordTextFailure::Stage::kNotJson;
    report.json_error = ec.message();
    return Error::BadInput("the record is not valid JSON: " + report.json_error, "record");
  }
  if (tokens.root_kind != JsonKind::kObject) {
    report.stage = RecordTextFailure::Stage::kNotAnObject;
    return Error::BadInput("must be a JSON object, got " + KindOf(tokens.root_kind), "record");
  }
  auto record = RecordFromTokens(tokens, options, *scratch);
  if (!record.ok()) {
    report.stage = RecordTextFailure::Stage::kMalformed;
    if (tokens.patient_kind == JsonKind::kObject) {
      const size_t max_bytes = options.limits.max_string_chars * 4;  // UTF-8: 4 bytes a char
      const Token* id = tokens.Find(tokens.patient, Field::kId);
      if (id != nullptr && id->kind == JsonKind::kString && id->size > 0 && id->size <= max_bytes) {
        report.patient_id = std::string(id->str());
      }
    }
  }
  return record;
}

}  // namespace detail

Result<Record> ParseRecordObject(const json::object& root, const ParseOptions& options) {
  ScratchLease scratch;
  TokensFromObject(root, options.limits.max_events, scratch->tokens);
  return RecordFromTokens(scratch->tokens, options, *scratch);
}

Result<Record> ParseRecord(std::string_view text, const ParseOptions& options) {
  return detail::ParseRecordText(text, options, detail::kRecordMaxDepth, nullptr);
}

// ParsePatientJson and ParseEventJson: one part of a record, for the event store. The part is
// put where it sits in a record ({"patient": ...} or {"events": [...]}) and read into the same
// table by TokensFromObject, then checked by ParsePatient or ParseEvent, so that an entry is
// checked exactly as the same object inside a record would be.
namespace {

Result<json::value> ParsePartJson(std::string_view text, size_t max_bytes,
                                  const std::string& field) {
  if (text.size() > max_bytes) {
    return Error::BadInput("is " + std::to_string(text.size()) + " bytes; at most " +
                               std::to_string(max_bytes) + " are allowed",
                           field);
  }
  json::parse_options parse_options;
  parse_options.max_depth = detail::kRecordMaxDepth;
  json::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec, json::storage_ptr(),
                              parse_options);
  if (ec) return Error::BadInput("is not valid JSON: " + ec.message(), field);
  return v;
}

}  // namespace

Result<Patient> ParsePatientJson(std::string_view text, const RecordLimits& limits) {
  auto part = ParsePartJson(text, limits.max_bytes, "patient");
  if (!part.ok()) return part.error();
  json::object root;
  root.emplace("patient", std::move(*part));
  RecordTokens tokens;  // points into `root`, which outlives it
  TokensFromObject(root, 0, tokens);
  Patient patient;
  if (auto st = ParsePatient(tokens, limits, patient); !st.ok()) return st.error();
  return patient;
}

Result<Event> ParseEventJson(std::string_view text, size_t index, const ParseOptions& options) {
  auto part =
      ParsePartJson(text, options.limits.max_bytes, "events[" + std::to_string(index) + "]");
  if (!part.ok()) return part.error();
  json::object root;
  json::array events;
  events.push_back(std::move(*part));
  root.emplace("events", std::move(events));
  RecordTokens tokens;
  TokensFromObject(root, 1, tokens);
  Event event;
  if (auto st = ParseEvent(tokens, tokens.events[0], index, options, event); !st.ok()) {
    return st.error();
  }
  return event;
}

}  // namespace isoguard
