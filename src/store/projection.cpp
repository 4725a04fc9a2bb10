// Projections: folding a stream into its state, and sealing the state (projection.h).
#include "store/projection.h"

#include <lz4.h>
#include <sodium.h>

#include <boost/json.hpp>

namespace isoguard::store {

namespace json = boost::json;

namespace {

// Entry payloads are format 1. States were format 2 (the plain layout below, sealed) and are
// format 3 now: the same layout compressed with LZ4 before it is sealed. A state is the whole
// record, the largest thing the store writes (a quarter of an imported store's bytes); LZ4
// shrinks its JSON to about a third for a few microseconds (zlib's smallest level cost an
// import a tenth of its CPU). Both formats are read. The size of a sealed state shows little about
// its content to whoever can see the file: only the patient's own writes go into it.
constexpr uint8_t kStateFormatPlain = 2;
constexpr uint8_t kStateFormat = 3;
// A state larger than this decompressed is damaged (a record is at most 10 MiB of JSON).
constexpr uint64_t kMaxStateBytes = uint64_t{64} << 20;

void AppendU64(std::string& out, uint64_t n) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(n >> (8 * i)));
}

bool ReadU64(std::string_view& in, uint64_t& n) {
  if (in.size() < 8) return false;
  n = 0;
  for (int i = 0; i < 8; ++i)
    n |= uint64_t{static_cast<uint8_t>(in[static_cast<size_t>(i)])} << (8 * i);
  in.remove_prefix(8);
  return true;
}

std::string StateAssociatedData(std::string_view patient_id, int64_t version) {
  std::string ad = "isoguard.state.v1";
  AppendU64(ad, patient_id.size());
  ad.append(patient_id);
  AppendU64(ad, static_cast<uint64_t>(version));
  return ad;
}

}  // namespace

Status FoldEntry(StateText& state, std::string_view type, std::string_view stored_json) {
  if (type != kPatientEntryType) {
    if (state.event_count > 0) state.events.push_back(',');
    state.events.append(stored_json);
    ++state.event_count;
    return {};
  }
  // The record's patient object is the entry without its "type". Entries written by the store
  // usually begin with it; the general case goes through the parser.
  static constexpr std::string_view kLead = R"({"type":"patient",)";
  if (stored_json.starts_with(kLead)) {
    state.patient.assign("{");
    state.patient.append(stored_json.substr(kLead.size()));
    return {};
  }
  boost::system::error_code ec;
  json::value value = json::parse(json::string_view(stored_json.data(), stored_json.size()), ec);
  if (ec || !value.is_object()) return Error::Internal("a patient entry is not a JSON object");
  value.get_object().erase("type");
  state.patient = json::serialize(value);
  return {};
}

Status CheckVersionsRequest(const std::vector<std::string>& patient_ids) {
  if (patient_ids.size() > kMaxVersionsPerRead) {
    return Error::BadInput("holds " + std::to_string(patient_ids.size()) + " ids; at most " +
                               std::to_string(kMaxVersionsPerRead) + " per read",
                           "patient_ids");
  }
  for (size_t i = 0; i < patient_ids.size(); ++i) {
    if (patient_ids[i].size() > kMaxPatientIdBytes) {
      return Error::BadInput("is " + std::to_string(patient_ids[i].size()) + " bytes; at most " +
                                 std::to_string(kMaxPatientIdBytes) + " are allowed",
                             "patient_ids[" + std::to_string(i) + "]");
    }
  }
  return {};
}

Status CheckRecordRoom(const StateText& state, size_t adding, const RecordLimits& limits) {
  const auto held = static_cast<size_t>(state.event_count);
  if (held + adding <= limits.max_events) return {};
  return Error::BadInput(
      "the patient's record holds " + std::to_string(held) + " events and a record holds at most " +
          std::to_string(limits.max_events) + "; this append adds " + std::to_string(adding),
      "entries");
}

Result<std::string> StateRecordJson(const StateText& state) {
  if (state.patient.empty()) return Error::NotFound("the stream has no patient entry");
  std::string out;
  out.reserve(state.patient.size() + state.events.size() + 24);
  out.append(R"({"patient":)");
  out.append(state.patient);
  out.append(R"(,"events":[)");
  out.append(state.events);
  out.append("]}");
  return out;
}

std::string SealState(const PatientKey& key, std::string_view patient_id, int64_t version,
                      const StateText& state) {
  std::string plain;
  plain.reserve(24 + state.patient.size() + state.events.size());
  AppendU64(plain, state.patient.size());
  plain.append(state.patient);
  AppendU64(plain, static_cast<uint64_t>(state.event_count));
  plain.append(state.events);
  // [u64 plain size][one LZ4 block].
  std::string packed;
  int packed_bytes = 0;
  if (plain.size() <= static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) {
    const int bound = LZ4_compressBound(static_cast<int>(plain.size()));
    AppendU64(packed, plain.size());
    packed.resize(8 + static_cast<size_t>(bound));
    packed_bytes = LZ4_compress_default(plain.data(), packed.data() + 8,
                                        static_cast<int>(plain.size()), bound);
  }
  std::string out;
  if (packed_bytes > 0) {
    packed.resize(8 + static_cast<size_t>(packed_bytes));
    out = SealWithKey(key, kStateFormat, StateAssociatedData(patient_id, version), packed);
  } else {  // too large for one block: the plain format
    out = SealWithKey(key, kStateFormatPlain, StateAssociatedData(patient_id, version), plain);
  }
  sodium_memzero(plain.data(), plain.size());
  sodium_memzero(packed.data(), packed.size());
  return out;
}

Result<StateText> OpenState(const PatientKey& key, std::string_view patient_id, int64_t version,
                            std::string_view sealed) {
  const bool packed = !sealed.empty() && static_cast<uint8_t>(sealed[0]) == kStateFormat;
  auto opened = OpenWithKey(key, packed ? kStateFormat : kStateFormatPlain,
                            StateAssociatedData(patient_id, version), sealed, "state");
  if (!opened.ok()) return opened.error();
  std::string inflated;
  if (packed) {
    std::string_view p = *opened;
    uint64_t plain_bytes = 0;
    if (!ReadU64(p, plain_bytes) || plain_bytes > kMaxStateBytes) {
      return Error::Internal("the state's size is damaged");
    }
    inflated.resize(plain_bytes);
    const int written = LZ4_decompress_safe(p.data(), inflated.data(), static_cast<int>(p.size()),
                                            static_cast<int>(plain_bytes));
    if (written < 0 || static_cast<uint64_t>(written) != plain_bytes) {
      return Error::Internal("the state does not decompress");
    }
    sodium_memzero(opened->data(), opened->size());
  }
  std::string& plain = packed ? inflated : *opened;
  std::string_view in = plain;
  uint64_t patient_bytes = 0;
  uint64_t event_count = 0;
  StateText state;
  if (!ReadU64(in, patient_bytes) || patient_bytes > in.size()) {
    return Error::Internal("the state's patient part is cut short");
  }
  state.patient.assign(in.substr(0, patient_bytes));
  in.remove_prefix(patient_bytes);
  if (!ReadU64(in, event_count) || event_count > (uint64_t{1} << 40) ||
      (event_count == 0) != in.empty()) {
    return Error::Internal("the state's event part is damaged");
  }
  state.event_count = static_cast<int64_t>(event_count);
  state.events.assign(in);
  sodium_memzero(plain.data(), plain.size());
  return state;
}

}  // namespace isoguard::store
