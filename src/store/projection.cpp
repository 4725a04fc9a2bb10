// Projections: folding a stream into its state, and sealing the state (projection.h).
#include "store/projection.h"

#include <sodium.h>

#include <boost/json.hpp>

namespace isoguard::store {

namespace json = boost::json;

namespace {

constexpr uint8_t kStateFormat = 2;  // entry payloads are format 1

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
  std::string out = SealWithKey(key, kStateFormat, StateAssociatedData(patient_id, version), plain);
  sodium_memzero(plain.data(), plain.size());
  return out;
}

Result<StateText> OpenState(const PatientKey& key, std::string_view patient_id, int64_t version,
                            std::string_view sealed) {
  auto opened =
      OpenWithKey(key, kStateFormat, StateAssociatedData(patient_id, version), sealed, "state");
  if (!opened.ok()) return opened.error();
  std::string& plain = *opened;
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
