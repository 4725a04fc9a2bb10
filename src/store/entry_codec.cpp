#include "store/entry_codec.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <sodium.h>

#include <array>
#include <atomic>
#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <utility>

#include "core/json_writer.h"

namespace isoguard::store {
namespace {

namespace json = boost::json;

// libsodium must be initialised before its first use; sodium_init is thread-safe and
// idempotent, so a function-local static suffices. It fails only without a source of
// randomness, and then no key or nonce could be made safely: stop rather than go on.
void EnsureSodium() {
  static const bool ready = [] {
    if (sodium_init() < 0) {
      std::fputs("isoguard: libsodium could not be initialised (no source of randomness)\n",
                 stderr);
      std::abort();
    }
    return true;
  }();
  (void)ready;
}

std::string EntryPath(size_t index) { return "entries[" + std::to_string(index) + "]"; }

std::string Shown(std::string_view s) {
  return "'" + std::string(s.substr(0, 60)) + (s.size() > 60 ? "...'" : "'");
}

const char* KindOf(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return "a number";
    case json::kind::string:
      return "a string";
    case json::kind::array:
      return "an array";
    case json::kind::object:
      return "an object";
  }
  return "a value";
}

// The parser names fields as they sit in a record ("events[3].kg", "patient.birth_date"); an
// entry is named by its place in the append ("entries[3].kg").
Error AsEntryError(Error error, size_t index) {
  const std::string_view field = error.field;
  std::string renamed;
  if (field.starts_with("events[")) {
    const size_t close = field.find(']');
    renamed = EntryPath(index) +
              std::string(field.substr(close == std::string_view::npos ? field.size() : close + 1));
  } else if (field.starts_with("patient")) {
    renamed = EntryPath(index) + std::string(field.substr(std::string_view("patient").size()));
  } else {
    renamed = EntryPath(index) + (field.empty() ? "" : ": " + std::string(field));
  }
  error.field = std::move(renamed);
  return error;
}

Status CheckName(std::string_view value, std::string_view field, bool required,
                 size_t max_bytes = kMaxNameBytes) {
  if (value.empty() && required) {
    return Error::BadInput("required, must not be empty", std::string(field));
  }
  if (value.size() > max_bytes) {
    return Error::BadInput("is " + std::to_string(value.size()) + " bytes; at most " +
                               std::to_string(max_bytes) + " are allowed",
                           std::string(field));
  }
  if (!IsStorableText(value)) {
    return Error::BadInput("must be valid UTF-8 without NUL characters", std::string(field));
  }
  return {};
}

Status CheckActor(const Actor& actor) {
  if (auto st = CheckName(actor.id, "actor.id", true); !st.ok()) return st;
  if (auto st = CheckName(actor.role, "actor.role", true); !st.ok()) return st;
  return CheckName(actor.source, "actor.source", false);
}

// Length-prefixed fields for the hash and the associated data: each field preceded by its
// length as 8 bytes little-endian, so that fields cannot run into each other.
void AppendLengthPrefixed(std::string& out, std::string_view bytes) {
  const uint64_t n = bytes.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(n >> (8 * i)));
  out.append(bytes);
}

// An integer as a field: its 8 bytes little-endian, preceded by their length (8).
void AppendLengthPrefixedInt(std::string& out, int64_t value) {
  const auto u = static_cast<uint64_t>(value);
  char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(u >> (8 * i));
  AppendLengthPrefixed(out, std::string_view(bytes, sizeof bytes));
}

Hash Sha256(std::string_view message) {
  static EVP_MD* const sha256 = [] {
    EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (md == nullptr) {
      std::fputs("isoguard: OpenSSL has no SHA-256\n", stderr);
      std::abort();
    }
    return md;
  }();
  // One digest context per thread, reused: making one per call costs a third of the hash.
  struct Context {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~Context() { EVP_MD_CTX_free(ctx); }
  };
  thread_local Context context;
  Hash out{};
  unsigned int length = 0;
  if (context.ctx == nullptr || EVP_DigestInit_ex2(context.ctx, sha256, nullptr) != 1 ||
      EVP_DigestUpdate(context.ctx, message.data(), message.size()) != 1 ||
      EVP_DigestFinal_ex(context.ctx, out.data(), &length) != 1 || length != out.size()) {
    std::fputs("isoguard: SHA-256 failed\n", stderr);
    std::abort();
  }
  return out;
}

// The associated data of a payload: the patient id and the version it was written for. Built
// in a per-thread buffer (valid until the thread's next call), not a new string per entry.
const std::string& AssociatedData(std::string_view patient_id, int64_t version) {
  thread_local std::string ad;
  ad.assign("isoguard.payload.v1");
  AppendLengthPrefixed(ad, patient_id);
  const auto u = static_cast<uint64_t>(version);
  for (int i = 0; i < 8; ++i) ad.push_back(static_cast<char>(u >> (8 * i)));
  return ad;
}

// Bumped in the child of every fork, so that a child never hands out nonces its parent had
// already buffered (the same nonce twice under one key would break the cipher).
std::atomic<uint64_t> fork_generation{0};

constexpr uint8_t kPayloadFormat = 1;
constexpr size_t kNonceBytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t kTagBytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;
static_assert(kPatientKeyBytes == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
static_assert(std::tuple_size_v<Hash> == crypto_hash_sha256_BYTES);

std::string RowName(const EntryRow& row) {
  return "patient " + row.patient_id + " version " + std::to_string(row.version);
}

}  // namespace

bool IsStorableText(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c == 0) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1Fu;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0Fu;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07u;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // the sequence runs past the end
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

// ---- Checking

Result<CheckedEntry> CheckEntry(std::string_view text, size_t index, std::string_view patient_id,
                                const ParseOptions& options, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return Error::BadInput("is " + std::to_string(text.size()) + " bytes; at most " +
                               std::to_string(max_bytes) + " are allowed",
                           EntryPath(index));
  }
  // A first look at the entry for what the parser does not report: whether it is the patient
  // or an event, and whether it carries an "id" key. The parser then checks it in full.
  unsigned char buffer[4096];
  json::monotonic_resource arena(buffer, sizeof buffer);
  json::parse_options parse_options;
  parse_options.max_depth = 64;
  json::error_code ec;
  const json::value v =
      json::parse(json::string_view(text.data(), text.size()), ec, &arena, parse_options);
  if (ec) return Error::BadInput("is not valid JSON: " + ec.message(), EntryPath(index));
  if (!v.is_object()) {
    return Error::BadInput(std::string("must be a JSON object, got ") + KindOf(v),
                           EntryPath(index));
  }
  const json::object& object = v.get_object();
  const json::value* type = object.if_contains("type");
  if (type == nullptr || type->is_null()) {
    return Error::BadInput("required field is missing", EntryPath(index) + ".type");
  }
  if (!type->is_string()) {
    return Error::BadInput(std::string("must be a string, got ") + KindOf(*type),
                           EntryPath(index) + ".type");
  }

  CheckedEntry entry;
  entry.json = text;
  if (type->get_string() == kPatientEntryType) {
    auto patient = ParsePatientJson(text, options.limits);
    if (!patient.ok()) return AsEntryError(patient.error(), index);
    if (patient->id != patient_id) {
      return Error::BadInput(
          "names patient " + Shown(patient->id) + ", but the append is for " + Shown(patient_id),
          EntryPath(index) + ".id");
    }
    entry.is_patient = true;
    entry.type = std::string(kPatientEntryType);
    return entry;
  }

  auto event = ParseEventJson(text, index, options);
  if (!event.ok()) return AsEntryError(event.error(), index);
  entry.type = std::string(ToString(event->type));
  entry.event_id = std::move(event->id);
  if (entry.event_id.empty()) {
    const json::value* id = object.if_contains("id");
    entry.has_null_id = id != nullptr;  // the parser accepted it, so it is null
  }
  if (event->type == EventType::kDispense) entry.prescription_ref = std::move(event->ref);
  // The parser lets "\u0000" through; a backend's text columns may not.
  if (!IsStorableText(entry.event_id)) {
    return Error::BadInput("must be valid UTF-8 without NUL characters", EntryPath(index) + ".id");
  }
  if (!IsStorableText(entry.prescription_ref)) {
    return Error::BadInput("must be valid UTF-8 without NUL characters",
                           EntryPath(index) + ".prescription");
  }
  return entry;
}

Result<std::vector<CheckedEntry>> CheckAppend(const AppendRequest& request,
                                              const ParseOptions& options) {
  if (auto st = CheckName(request.patient_id, "patient_id", true, kMaxPatientIdBytes); !st.ok()) {
    return st.error();
  }
  if (auto st = CheckActor(request.actor); !st.ok()) return st.error();
  if (auto st = CheckName(request.idempotency_key, "idempotency_key", false); !st.ok()) {
    return st.error();
  }
  if (request.expected_version && *request.expected_version < 0) {
    return Error::BadInput("must be 0 or more, got " + std::to_string(*request.expected_version),
                           "expected_version");
  }
  if (request.entries.empty())
    return Error::BadInput("an append needs at least one entry", "entries");
  if (request.entries.size() > kMaxEntriesPerAppend) {
    return Error::BadInput("holds " + std::to_string(request.entries.size()) +
                               " entries; at most " + std::to_string(kMaxEntriesPerAppend) +
                               " are allowed",
                           "entries");
  }
  size_t total_bytes = 0;
  for (const std::string& e : request.entries) total_bytes += e.size();
  if (total_bytes > kMaxAppendBytes) {
    return Error::BadInput("hold " + std::to_string(total_bytes) + " bytes; at most " +
                               std::to_string(kMaxAppendBytes) + " are allowed",
                           "entries");
  }

  std::vector<CheckedEntry> entries;
  entries.reserve(request.entries.size());
  for (size_t i = 0; i < request.entries.size(); ++i) {
    auto entry = CheckEntry(request.entries[i], i, request.patient_id, options);
    if (!entry.ok()) return entry.error();
    entries.push_back(std::move(*entry));
  }

  // Ids unique within the append; dispenses resolved against the append's prescriptions.
  std::unordered_map<std::string_view, size_t> ids;
  ids.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].event_id.empty()) continue;
    auto [it, inserted] = ids.emplace(entries[i].event_id, i);
    if (!inserted) {
      return Error::BadInput("duplicate id " + Shown(entries[i].event_id) + " (also entries[" +
                                 std::to_string(it->second) + "])",
                             EntryPath(i) + ".id");
    }
  }
  for (CheckedEntry& e : entries) {
    if (e.prescription_ref.empty()) continue;
    auto it = ids.find(e.prescription_ref);
    e.prescription_in_append =
        it != ids.end() && entries[it->second].type == ToString(EventType::kPrescription);
  }
  return entries;
}

Status CheckErasure(std::string_view patient_id, const Actor& actor) {
  if (auto st = CheckName(patient_id, "patient_id", true, kMaxPatientIdBytes); !st.ok()) {
    return st;
  }
  return CheckActor(actor);
}

std::string AssignedEventId(std::string_view patient_id, int64_t version, int attempt) {
  std::string id(patient_id);
  id += '-';
  id += std::to_string(version);
  if (attempt > 0) {
    id += '.';
    id += std::to_string(attempt);
  }
  return id;
}

std::string StoredJson(const CheckedEntry& entry, std::string_view event_id) {
  if (entry.is_patient || !entry.event_id.empty()) return std::string(entry.json);
  if (entry.has_null_id) {
    // Rare: an explicit "id": null. Rewrite the object rather than add a second "id" key,
    // whose reading would depend on the JSON library.
    json::value v = json::parse(json::string_view(entry.json.data(), entry.json.size()));
    v.as_object()["id"] = json::string_view(event_id.data(), event_id.size());
    return json::serialize(v);
  }
  // The caller's text with "id" inserted after the opening brace.
  const size_t brace = entry.json.find('{');  // checked to be an object: the brace is there
  std::string out;
  out.reserve(entry.json.size() + event_id.size() + 8);
  out.append(entry.json.substr(0, brace + 1));
  out.append("\"id\":");
  AppendJsonString(out, event_id);
  const std::string_view rest = entry.json.substr(brace + 1);
  const size_t next = rest.find_first_not_of(" \t\r\n");
  if (next != std::string_view::npos && rest[next] != '}') out.push_back(',');
  out.append(rest);
  return out;
}

// ---- Sealing

void FreshNonce(unsigned char* nonce) {
  EnsureSodium();
  static const bool watching_forks = [] {
    return pthread_atfork(nullptr, nullptr, [] { fork_generation.fetch_add(1); }) == 0;
  }();
  (void)watching_forks;
  struct Buffer {
    std::array<unsigned char, kNonceBytes * 256> bytes{};
    size_t used = sizeof bytes;
    uint64_t generation = 0;
    ~Buffer() { sodium_memzero(bytes.data(), bytes.size()); }
  };
  thread_local Buffer buffer;
  const uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (buffer.used == buffer.bytes.size() || buffer.generation != generation) {
    randombytes_buf(buffer.bytes.data(), buffer.bytes.size());
    buffer.used = 0;
    buffer.generation = generation;
  }
  std::memcpy(nonce, buffer.bytes.data() + buffer.used, kNonceBytes);
  sodium_memzero(buffer.bytes.data() + buffer.used, kNonceBytes);  // handed out once
  buffer.used += kNonceBytes;
}

PatientKey::~PatientKey() { sodium_memzero(key_.data(), key_.size()); }

PatientKey PatientKey::Generate() {
  EnsureSodium();
  PatientKey key;
  crypto_aead_xchacha20poly1305_ietf_keygen(key.key_.data());
  return key;
}

Result<PatientKey> PatientKey::FromBytes(std::string_view bytes) {
  if (bytes.size() != kPatientKeyBytes) {
    return Error::Internal("a patient key is " + std::to_string(kPatientKeyBytes) +
                           " bytes, this one is " + std::to_string(bytes.size()));
  }
  PatientKey key;
  std::memcpy(key.key_.data(), bytes.data(), kPatientKeyBytes);
  return key;
}

std::string SealWithKey(const PatientKey& key, uint8_t format, std::string_view associated_data,
                        std::string_view plaintext) {
  EnsureSodium();
  std::string out(1 + kNonceBytes + plaintext.size() + kTagBytes, '\0');
  auto* bytes = reinterpret_cast<unsigned char*>(out.data());
  bytes[0] = format;
  unsigned char* nonce = bytes + 1;
  FreshNonce(nonce);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      nonce + kNonceBytes, &written, reinterpret_cast<const unsigned char*>(plaintext.data()),
      plaintext.size(), reinterpret_cast<const unsigned char*>(associated_data.data()),
      associated_data.size(), nullptr, nonce, key.data());
  out.resize(1 + kNonceBytes + static_cast<size_t>(written));
  return out;
}

Result<std::string> OpenWithKey(const PatientKey& key, uint8_t format,
                                std::string_view associated_data, std::string_view sealed,
                                std::string_view what) {
  EnsureSodium();
  if (sealed.size() < 1 + kNonceBytes + kTagBytes || static_cast<uint8_t>(sealed[0]) != format) {
    return Error::Internal("the " + std::string(what) + " is not in a format this build knows");
  }
  const auto* bytes = reinterpret_cast<const unsigned char*>(sealed.data());
  const unsigned char* nonce = bytes + 1;
  const unsigned char* ciphertext = nonce + kNonceBytes;
  const size_t ciphertext_bytes = sealed.size() - 1 - kNonceBytes;
  std::string plaintext(ciphertext_bytes - kTagBytes, '\0');
  unsigned long long written = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<unsigned char*>(plaintext.data()), &written, nullptr, ciphertext,
          ciphertext_bytes, reinterpret_cast<const unsigned char*>(associated_data.data()),
          associated_data.size(), nonce, key.data()) != 0) {
    return Error::Internal("the " + std::string(what) + " does not decrypt with the patient's key");
  }
  plaintext.resize(static_cast<size_t>(written));
  return plaintext;
}

std::string SealPayload(const PatientKey& key, std::string_view patient_id, int64_t version,
                        std::string_view plaintext) {
  return SealWithKey(key, kPayloadFormat, AssociatedData(patient_id, version), plaintext);
}

Result<std::string> OpenPayload(const PatientKey& key, std::string_view patient_id, int64_t version,
                                std::string_view payload) {
  return OpenWithKey(key, kPayloadFormat, AssociatedData(patient_id, version), payload, "payload");
}

// ---- The hash chain

Hash EntryHash(const EntryRow& row) {
  // The message is laid out in one buffer (per thread, reused) and hashed in one call: SHA-256
  // is most of an entry's cost on import, and OpenSSL's uses the CPU's SHA extensions where
  // there are any (libsodium's is portable C, about four times slower here).
  thread_local std::string message;
  message.clear();
  static constexpr std::string_view kTag = "isoguard.entry.v1";
  message.append(kTag);
  AppendLengthPrefixed(
      message,
      std::string_view(reinterpret_cast<const char*>(row.prev_hash.data()), row.prev_hash.size()));
  AppendLengthPrefixed(message, row.patient_id);
  AppendLengthPrefixedInt(message, row.version);
  AppendLengthPrefixed(message, row.event_id);
  AppendLengthPrefixed(message, row.type);
  AppendLengthPrefixed(message, row.payload);
  AppendLengthPrefixedInt(message, row.recorded_at_ms);
  AppendLengthPrefixed(message, row.actor.id);
  AppendLengthPrefixed(message, row.actor.role);
  AppendLengthPrefixed(message, row.actor.source);
  AppendLengthPrefixed(message, row.idempotency_key);
  return Sha256(message);
}

std::string HashHex(const Hash& hash) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(hash.size() * 2);
  for (uint8_t b : hash) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xF]);
  }
  return out;
}

Status ChainCheck::Next(const EntryRow& row) {
  if (row.version != version_ + 1) {
    return Error::Internal(RowName(row) + ": out of sequence (expected version " +
                           std::to_string(version_ + 1) + ")");
  }
  if (row.prev_hash != hash_) {
    return Error::Internal(RowName(row) + ": prev_hash does not match the hash of " +
                           (version_ == 0 ? std::string("the empty stream (zeros)")
                                          : "version " + std::to_string(version_)));
  }
  if (EntryHash(row) != row.hash) {
    return Error::Internal(RowName(row) +
                           ": hash does not match the entry (it was changed after it was "
                           "written)");
  }
  if (version_ > 0 && row.position <= position_) {
    return Error::Internal(RowName(row) + ": position " + std::to_string(row.position) +
                           " is not after the previous entry's " + std::to_string(position_));
  }
  version_ = row.version;
  position_ = row.position;
  hash_ = row.hash;
  return {};
}

Result<StoredEntry> DecodeEntry(const EntryRow& row, const PatientKey* key,
                                const ParseOptions& options) {
  StoredEntry out;
  out.position = row.position;
  out.patient_id = row.patient_id;
  out.version = row.version;
  out.event_id = row.event_id;
  out.type = row.type;
  out.recorded_at = Instant(std::chrono::milliseconds(row.recorded_at_ms));
  out.actor = row.actor;
  out.idempotency_key = row.idempotency_key;
  out.prev_hash = row.prev_hash;
  out.hash = row.hash;
  if (key == nullptr) {
    out.erased = true;
    return out;
  }
  auto json = OpenPayload(*key, row.patient_id, row.version, row.payload);
  if (!json.ok()) return Error::Internal(RowName(row) + ": " + json.error().message);
  auto entry = CheckEntry(*json, 0, row.patient_id, options, kMaxStoredEntryBytes);
  if (!entry.ok()) {
    std::string field = entry.error().field;
    if (field.starts_with("entries[0]")) field.erase(0, std::string_view("entries[0]").size());
    if (field.starts_with(".")) field.erase(0, 1);
    return Error::Internal(RowName(row) + ": the stored entry is not valid (" +
                           (field.empty() ? "" : field + ": ") + entry.error().message + ")");
  }
  if (entry->type != row.type) {
    return Error::Internal(RowName(row) + ": the row says type " + Shown(row.type) +
                           ", the payload " + Shown(entry->type));
  }
  if (!entry->is_patient && entry->event_id != row.event_id) {
    return Error::Internal(RowName(row) + ": the row says event id " + Shown(row.event_id) +
                           ", the payload " + Shown(entry->event_id));
  }
  out.json = std::move(*json);
  return out;
}

ParseOptions ReadBackOptions(const ParseOptions& options) {
  ParseOptions read = options;
  read.is_known_program = nullptr;
  return read;
}

}  // namespace isoguard::store
