// SqliteEventStore::PrepareRecord: a record of the contract format turned into the first append
// of its patient's stream on the caller's thread (sqlite_event_store.h).
//
// The record is checked once, by the engine's record parser; it checks the patient object and
// every event exactly as Append checks the entries one by one (ParsePatientJson and
// ParseEventJson are the same checks), and the checks across entries (unique ids, a dispense
// naming a prescription) as a record. The entries are then the record's own text: the patient
// object with "type": "patient" written in front, and each event's bytes as they are in the
// line, found by a structural scan of the (by then known valid) JSON. A record the scan does
// not take apart plainly -- an escaped key at the top, or a patient object carrying a "type"
// of its own -- goes the general way instead: a DOM, and the entries checked as Append checks
// them.
#include <boost/json.hpp>
#include <chrono>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "domain/detail/record_text.h"
#include "store/entry_codec.h"
#include "store/projection.h"
#include "store/sqlite/prepared_append.h"
#include "store/sqlite/sqlite_event_store.h"

namespace isoguard::store {
namespace {

namespace json = boost::json;

// ---- A structural scan of JSON text that a parser has already accepted.

size_t SkipSpace(std::string_view t, size_t i) {
  while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) ++i;
  return i;
}

// One past the closing quote of the string that opens at t[i]; `escaped` is set when the string
// holds a backslash.
size_t StringEnd(std::string_view t, size_t i, bool& escaped) {
  for (++i; i < t.size();) {
    const void* quote = std::memchr(t.data() + i, '"', t.size() - i);
    if (quote == nullptr) return std::string_view::npos;
    const size_t q = static_cast<size_t>(static_cast<const char*>(quote) - t.data());
    // The quote ends the string unless an odd number of backslashes stands before it.
    size_t backslashes = 0;
    while (q - backslashes > i && t[q - backslashes - 1] == '\\') ++backslashes;
    if (backslashes > 0 || std::memchr(t.data() + i, '\\', q - i) != nullptr) escaped = true;
    if (backslashes % 2 == 0) return q + 1;
    i = q + 1;
  }
  return std::string_view::npos;
}

// One past the value that begins at t[i].
size_t ValueEnd(std::string_view t, size_t i) {
  if (i >= t.size()) return std::string_view::npos;
  const char c = t[i];
  if (c == '"') {
    bool escaped = false;
    return StringEnd(t, i, escaped);
  }
  if (c == '{' || c == '[') {
    int depth = 0;
    while (i < t.size()) {
      const char ch = t[i];
      if (ch == '"') {
        bool escaped = false;
        i = StringEnd(t, i, escaped);
        if (i == std::string_view::npos) return i;
        continue;
      }
      if (ch == '{' || ch == '[') {
        ++depth;
      } else if (ch == '}' || ch == ']') {
        if (--depth == 0) return i + 1;
      }
      ++i;
    }
    return std::string_view::npos;
  }
  while (i < t.size() && t[i] != ',' && t[i] != '}' && t[i] != ']' && t[i] != ' ' && t[i] != '\t' &&
         t[i] != '\n' && t[i] != '\r') {
    ++i;
  }
  return i;
}

// Calls visit(key, value) for each member of the object that opens at t[begin], in order.
// False when the text is not plainly an object with unescaped keys (or visit says stop).
template <typename Visit>
bool ForEachMember(std::string_view t, size_t begin, Visit&& visit) {
  size_t i = SkipSpace(t, begin);
  if (i >= t.size() || t[i] != '{') return false;
  i = SkipSpace(t, i + 1);
  if (i < t.size() && t[i] == '}') return true;
  for (;;) {
    if (i >= t.size() || t[i] != '"') return false;
    bool escaped = false;
    const size_t key_end = StringEnd(t, i, escaped);
    if (key_end == std::string_view::npos || escaped) return false;
    const std::string_view key = t.substr(i + 1, key_end - i - 2);
    i = SkipSpace(t, key_end);
    if (i >= t.size() || t[i] != ':') return false;
    i = SkipSpace(t, i + 1);
    const size_t value_end = ValueEnd(t, i);
    if (value_end == std::string_view::npos) return false;
    if (!visit(key, t.substr(i, value_end - i))) return false;
    i = SkipSpace(t, value_end);
    if (i < t.size() && t[i] == ',') {
      i = SkipSpace(t, i + 1);
      continue;
    }
    return i < t.size() && t[i] == '}';
  }
}

struct RecordParts {
  std::string_view patient;
  std::vector<std::string_view> events;
};

// The record's "patient" object and its events' texts (the last of a repeated key, as the
// parser reads it). False: take the general way.
bool SplitRecord(std::string_view line, RecordParts& parts) {
  parts.patient = {};
  parts.events.clear();
  const bool plain = ForEachMember(line, 0, [&](std::string_view key, std::string_view value) {
    if (key == "patient") {
      parts.patient = value;
    } else if (key == "events") {
      parts.events.clear();
      if (value.empty() || value.front() != '[') return true;  // null: no events
      size_t i = SkipSpace(value, 1);
      if (i < value.size() && value[i] == ']') return true;
      for (;;) {
        const size_t end = ValueEnd(value, i);
        if (end == std::string_view::npos) return false;
        parts.events.push_back(value.substr(i, end - i));
        i = SkipSpace(value, end);
        if (i < value.size() && value[i] == ',') {
          i = SkipSpace(value, i + 1);
          continue;
        }
        return i < value.size() && value[i] == ']';
      }
    }
    return true;
  });
  if (!plain || parts.patient.empty() || parts.patient.front() != '{') return false;
  // The patient entry is the object with "type" written in front: one of its own would clash.
  return ForEachMember(parts.patient, 0,
                       [](std::string_view key, std::string_view) { return key != "type"; });
}

// Whether an event object has an "id" member (a null one, when the parser found no id).
bool HasIdMember(std::string_view event) {
  bool found = false;
  const bool plain = ForEachMember(event, 0, [&found](std::string_view key, std::string_view) {
    found = found || key == "id";
    return true;
  });
  return found || !plain;  // not plainly scanned: say yes, StoredJson then rewrites the object
}

// ---- The request's limits, worded as CheckAppend words them.

Status CheckLimit(std::string_view value, std::string_view field, bool required, size_t max_bytes) {
  if (value.empty() && required) {
    return Error::BadInput("required, must not be empty", std::string(field));
  }
  if (value.size() > max_bytes) {
    return Error::BadInput("is " + std::to_string(value.size()) + " bytes; at most " +
                               std::to_string(max_bytes) + " are allowed",
                           std::string(field));
  }
  return {};
}

Status CheckRequestLimits(std::string_view patient_id, const RecordAppendOptions& options,
                          std::string_view idempotency_key,
                          const std::vector<std::string_view>& entries) {
  if (auto st = CheckLimit(patient_id, "patient_id", true, kMaxPatientIdBytes); !st.ok()) return st;
  if (auto st = CheckLimit(options.actor.id, "actor.id", true, kMaxNameBytes); !st.ok()) return st;
  if (auto st = CheckLimit(options.actor.role, "actor.role", true, kMaxNameBytes); !st.ok()) {
    return st;
  }
  if (auto st = CheckLimit(options.actor.source, "actor.source", false, kMaxNameBytes); !st.ok()) {
    return st;
  }
  if (auto st = CheckLimit(idempotency_key, "idempotency_key", false, kMaxNameBytes); !st.ok()) {
    return st;
  }
  if (entries.size() > kMaxEntriesPerAppend) {
    return Error::BadInput("holds " + std::to_string(entries.size()) + " entries; at most " +
                               std::to_string(kMaxEntriesPerAppend) + " are allowed",
                           "entries");
  }
  size_t total_bytes = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    total_bytes += entries[i].size();
    if (entries[i].size() > kMaxEntryBytes) {
      return Error::BadInput("is " + std::to_string(entries[i].size()) + " bytes; at most " +
                                 std::to_string(kMaxEntryBytes) + " are allowed",
                             "entries[" + std::to_string(i) + "]");
    }
  }
  if (total_bytes > kMaxAppendBytes) {
    return Error::BadInput("hold " + std::to_string(total_bytes) + " bytes; at most " +
                               std::to_string(kMaxAppendBytes) + " are allowed",
                           "entries");
  }
  return {};
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The rows of a new stream from its checked entries: ids assigned as the writer assigns them
// (no earlier entry can hold one: the stream is new), each entry sealed and chained, and the
// whole folded into the state.
Result<PreparedAppend> Seal(std::string_view patient_id, std::string idempotency_key,
                            const RecordAppendOptions& options,
                            const std::vector<CheckedEntry>& entries) {
  auto data = std::make_unique<PreparedAppend::Data>();
  data->patient_id = patient_id;
  data->actor = options.actor;
  data->idempotency_key = std::move(idempotency_key);
  data->recorded_at_ms = NowMs();
  data->key = PatientKey::Generate();
  data->rows.reserve(entries.size());

  std::unordered_set<std::string_view> given_ids;
  given_ids.reserve(entries.size());
  size_t total_bytes = 0;
  for (const CheckedEntry& e : entries) {
    if (!e.event_id.empty()) given_ids.insert(e.event_id);
    total_bytes += e.json.size() + 16;
  }
  EntryRow row;
  row.patient_id = patient_id;
  row.actor = data->actor;
  row.idempotency_key = data->idempotency_key;
  row.recorded_at_ms = data->recorded_at_ms;
  StateText state;
  state.events.reserve(total_bytes);
  for (size_t i = 0; i < entries.size(); ++i) {
    const CheckedEntry& e = entries[i];
    auto field = [i] { return "entries[" + std::to_string(i) + "]"; };
    row.version = static_cast<int64_t>(i) + 1;
    if (!e.prescription_ref.empty() && !e.prescription_in_append) {
      return Error::BadInput(
          "names prescription '" + e.prescription_ref + "', which is not in the patient's stream",
          field() + ".prescription");
    }
    if (!e.event_id.empty()) {
      row.event_id = e.event_id;
    } else {
      row.event_id.clear();
      for (int attempt = 0; attempt < 100; ++attempt) {
        std::string id = AssignedEventId(patient_id, row.version, attempt);
        if (!given_ids.contains(id)) {
          row.event_id = std::move(id);
          break;
        }
      }
      if (row.event_id.empty()) {
        return Error::BadInput("no free id could be assigned; give the event an id",
                               field() + ".id");
      }
    }
    row.type = e.type;
    const std::string stored = StoredJson(e, row.event_id);
    row.payload = SealPayload(data->key, patient_id, row.version, stored);
    row.hash = EntryHash(row);
    if (auto st = FoldEntry(state, e.type, stored); !st.ok()) {
      return Error::Internal(field() + ": " + st.error().message);
    }
    PreparedRow& out = data->rows.emplace_back();
    out.version = row.version;
    out.event_id = std::move(row.event_id);
    out.type = e.type;
    out.payload = std::move(row.payload);
    out.prev_hash = row.prev_hash;
    out.hash = row.hash;
    row.prev_hash = row.hash;
  }
  data->sealed_state =
      SealState(data->key, patient_id, static_cast<int64_t>(entries.size()), state);
  return PreparedAppend(std::move(data));
}

// The general way: the record as a DOM, its entries serialized and checked as Append checks
// them.
Result<PreparedAppend> PrepareThroughDom(std::string_view line, const Record& record,
                                         const RecordAppendOptions& options) {
  json::value value = json::parse(json::string_view(line.data(), line.size()));
  const json::object& object = value.get_object();
  AppendRequest request;
  request.patient_id = record.patient.id;
  request.expected_version = 0;
  request.actor = options.actor;
  request.idempotency_key = options.idempotency_key_prefix + record.patient.id;
  json::object patient;
  patient["type"] = json::string_view(kPatientEntryType.data(), kPatientEntryType.size());
  for (const auto& member : object.at("patient").get_object()) {
    if (member.key() != "type") patient[member.key()] = member.value();
  }
  request.entries.push_back(json::serialize(patient));
  if (const json::value* events = object.if_contains("events");
      events != nullptr && events->is_array()) {
    for (const json::value& event : events->get_array()) {
      request.entries.push_back(json::serialize(event));
    }
  }
  auto checked = CheckAppend(request, options.parse);
  if (!checked.ok()) return checked.error();
  return Seal(request.patient_id, request.idempotency_key, options, *checked);
}

}  // namespace

Result<PreparedAppend> SqliteEventStore::PrepareRecord(std::string_view line,
                                                       const RecordAppendOptions& options) {
  detail::RecordTextFailure failure;
  auto record = detail::ParseRecordText(line, options.parse, detail::kRecordMaxDepth, &failure);
  if (!record.ok()) {
    switch (failure.stage) {
      case detail::RecordTextFailure::Stage::kTooLarge:
        return Error::BadInput("the record is larger than " +
                               std::to_string(options.parse.limits.max_bytes) + " bytes");
      case detail::RecordTextFailure::Stage::kNotJson:
        return Error::BadInput("not valid JSON: " + failure.json_error);
      case detail::RecordTextFailure::Stage::kNotAnObject:
        return Error::BadInput("a record must be a JSON object");
      default:
        return record.error();
    }
  }
  const std::string& patient_id = record->patient.id;
  const std::string idempotency_key = options.idempotency_key_prefix + patient_id;

  RecordParts parts;
  if (!SplitRecord(line, parts) || parts.events.size() != record->events.size()) {
    return PrepareThroughDom(line, *record, options);
  }
  std::string patient_entry;
  patient_entry.reserve(parts.patient.size() + 20);
  patient_entry.append(R"({"type":"patient")");
  const size_t first = SkipSpace(parts.patient, 1);
  if (parts.patient[first] != '}') patient_entry.push_back(',');
  patient_entry.append(parts.patient.substr(1));

  std::vector<std::string_view> texts;
  texts.reserve(1 + parts.events.size());
  texts.push_back(patient_entry);
  texts.insert(texts.end(), parts.events.begin(), parts.events.end());
  if (auto st = CheckRequestLimits(patient_id, options, idempotency_key, texts); !st.ok()) {
    return st.error();
  }

  // The parser keeps the events in time order; Event::index is each one's place in the file.
  std::vector<CheckedEntry> entries(texts.size());
  entries[0].json = texts[0];
  entries[0].is_patient = true;
  entries[0].type = std::string(kPatientEntryType);
  for (const Event& event : record->events) {
    const size_t i = size_t{event.index} + 1;
    if (i >= entries.size() || !entries[i].type.empty()) {
      return PrepareThroughDom(line, *record, options);
    }
    CheckedEntry& e = entries[i];
    e.json = texts[i];
    e.type = std::string(ToString(event.type));
    e.event_id = event.id;
    e.has_null_id = event.id.empty() && HasIdMember(texts[i]);
    if (event.type == EventType::kDispense) {
      e.prescription_ref = event.ref;
      e.prescription_in_append = true;  // the parser found it among the record's prescriptions
    }
  }
  return Seal(patient_id, idempotency_key, options, entries);
}

}  // namespace isoguard::store
