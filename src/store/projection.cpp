// Projections: folding a stream into its state, and sealing the state (projection.h).
#include "store/projection.h"

#include <sodium.h>

#include <boost/json.hpp>

namespace isoguard::store {

namespace json = boost::json;

namespace {

constexpr uint8_t kStateFormat = 2;  // entry payloads are format 1
constexpr size_t kNonceBytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t kTagBytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;

void AppendU64(std::string& out, uint64_t n) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(n >> (8 * i)));
}

bool ReadU64(std::string_view& in, uint64_t& n) {
  if (in.size() < 8) return false;
  n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t{static_cast<uint8_t>(in[static_cast<size_t>(i)])} << (8 * i);
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

void EnsureSodium() {
  static const bool ready = sodium_init() >= 0;
  (void)ready;
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
  EnsureSodium();
  std::string plain;
  plain.reserve(24 + state.patient.size() + state.events.size());
  AppendU64(plain, state.patient.size());
  plain.append(state.patient);
  AppendU64(plain, static_cast<uint64_t>(state.event_count));
  plain.append(state.events);
  const std::string ad = StateAssociatedData(patient_id, version);
  std::string out(1 + kNonceBytes + plain.size() + kTagBytes, '\0');
  auto* bytes = reinterpret_cast<unsigned char*>(out.data());
  bytes[0] = kStateFormat;
  unsigned char* nonce = bytes + 1;
  FreshNonce(nonce);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      nonce + kNonceBytes, &written, reinterpret_cast<const unsigned char*>(plain.data()),
      plain.size(), reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), nullptr, nonce,
      key.data());
  sodium_memzero(plain.data(), plain.size());
  return out;
}

Result<StateText> OpenState(const PatientKey& key, std::string_view patient_id, int64_t version,
                            std::string_view sealed) {
  EnsureSodium();
  if (sealed.size() < 1 + kNonceBytes + kTagBytes ||
      static_cast<uint8_t>(sealed[0]) != kStateFormat) {
    return Error::Internal("the state is not in a format this build knows");
  }
  const std::string ad = StateAssociatedData(patient_id, version);
  const auto* bytes = reinterpret_cast<const unsigned char*>(sealed.data());
  const unsigned char* nonce = bytes + 1;
  const unsigned char* ciphertext = nonce + kNonceBytes;
  const size_t ciphertext_bytes = sealed.size() - 1 - kNonceBytes;
  std::string plain(ciphertext_bytes - kTagBytes, '\0');
  unsigned long long written = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<unsigned char*>(plain.data()), &written, nullptr, ciphertext,
          ciphertext_bytes, reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), nonce,
          key.data()) != 0) {
    return Error::Internal("the state does not decrypt with the patient's key");
  }
  plain.resize(static_cast<size_t>(written));
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
