// The entry codec: what an entry of the event store is, independent of the backend that keeps
// it. Every backend (SQLite now, PostgreSQL later) stores the same rows and calls these
// functions, so that validation, encryption and the hash chain cannot drift between them.
//
// - Checking: an append request's limits, and each entry with the engine's parser (a patient
//   entry is checked as ParseRecord checks `patient`, an event as it checks one event), with
//   errors naming the entry ("entries[2].kg").
// - Sealing: each patient has a random 32-byte key; each entry's JSON is encrypted with
//   XChaCha20-Poly1305 (libsodium) under a random 24-byte nonce, with the patient id and the
//   version as associated data, so a payload moved to another patient or version does not
//   open. Destroying the key makes the patient's payloads unreadable (crypto-shredding).
// - The hash chain: each row's hash covers the previous row's hash and every stored column
//   but the position (see EntryHash), over the ciphertext, so it can be verified without keys.
//
// Thread safety: free functions without shared state (libsodium is initialised once, under
// its own lock); PatientKey and the structs are values.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "domain/record_parser.h"
#include "store/event_store.h"

namespace isoguard::store {

// ---- Checking

// One entry of an append, checked. Views point into the request, which outlives the append.
struct CheckedEntry {
  std::string_view json;
  bool is_patient = false;
  std::string type;      // "patient" or the event type's spelling
  std::string event_id;  // the event's own "id"; empty: one is assigned when it is written
  // The entry has "id": null (which counts as absent): assigning an id rewrites the object
  // instead of inserting the key.
  bool has_null_id = false;
  std::string prescription_ref;         // a dispense: the prescription it names
  bool prescription_in_append = false;  // ...which is a prescription of the same append
};

// Checks the request's shape (patient id, actor, idempotency key, counts and sizes) and every
// entry; ids must be unique within the append. The checks that need the stream (expected
// version, ids already used, a dispense naming an earlier prescription) are the backend's.
Result<std::vector<CheckedEntry>> CheckAppend(const AppendRequest& request,
                                              const ParseOptions& options);

// One entry; `index` names it in errors. A patient entry's "id" must be `patient_id`.
Result<CheckedEntry> CheckEntry(std::string_view json, size_t index, std::string_view patient_id,
                                const ParseOptions& options, size_t max_bytes = kMaxEntryBytes);

// What a stored entry may weigh: an entry at the limit, plus the id written into it (a patient
// id of kMaxPatientIdBytes, every byte escaped, and the version).
inline constexpr size_t kMaxStoredEntryBytes = kMaxEntryBytes + 8 * kMaxPatientIdBytes;

// Whether a string can be stored as text by every backend: valid UTF-8 (no overlong forms, no
// surrogates, nothing past U+10FFFF) without NUL characters. PostgreSQL's text type refuses
// the rest, so every backend refuses them, in the same words, before anything is written.
bool IsStorableText(std::string_view s);

// The checks of an erasure request.
Status CheckErasure(std::string_view patient_id, const Actor& actor);

// The id given to an entry without one: "<patient>-<version>", or "<patient>-<version>.<n>"
// for attempt n > 0 (when an event of the stream already carries the plain form).
std::string AssignedEventId(std::string_view patient_id, int64_t version, int attempt);

// The entry's JSON as stored: an event that had no id gets `event_id` written in as "id" (the
// caller's text is kept otherwise); a patient entry is stored as given.
std::string StoredJson(const CheckedEntry& entry, std::string_view event_id);

// ---- Sealing

inline constexpr size_t kPatientKeyBytes = 32;

// A patient's key. Wiped from memory when destroyed.
class PatientKey {
 public:
  PatientKey() = default;
  ~PatientKey();
  PatientKey(const PatientKey& other) = default;
  PatientKey& operator=(const PatientKey& other) = default;

  static PatientKey Generate();
  // kInternal unless `bytes` holds exactly kPatientKeyBytes.
  static Result<PatientKey> FromBytes(std::string_view bytes);

  std::string_view bytes() const {
    return {reinterpret_cast<const char*>(key_.data()), key_.size()};
  }
  const uint8_t* data() const { return key_.data(); }

 private:
  std::array<uint8_t, kPatientKeyBytes> key_{};
};

// Writes a fresh random 24-byte XChaCha20 nonce to `nonce`: from a per-thread buffer that one
// call to the system's generator refills every 256 nonces, dropped in the child of a fork.
void FreshNonce(unsigned char* nonce);

// What payloads and states are sealed with: format byte || nonce (24) || XChaCha20-Poly1305 of
// the plaintext with `associated_data` (16 bytes longer). Opening checks the format byte and
// fails (kInternal, naming `what`) unless key and associated data are those it was sealed with.
std::string SealWithKey(const PatientKey& key, uint8_t format, std::string_view associated_data,
                        std::string_view plaintext);
Result<std::string> OpenWithKey(const PatientKey& key, uint8_t format,
                                std::string_view associated_data, std::string_view sealed,
                                std::string_view what);

// version byte (1) || nonce (24) || ciphertext with its tag (16 more than the plaintext).
std::string SealPayload(const PatientKey& key, std::string_view patient_id, int64_t version,
                        std::string_view plaintext);
// kInternal when the payload does not open with this key, patient id and version.
Result<std::string> OpenPayload(const PatientKey& key, std::string_view patient_id, int64_t version,
                                std::string_view payload);

// ---- The hash chain

// One stored row, as every backend keeps it.
struct EntryRow {
  int64_t position = 0;
  std::string patient_id;
  int64_t version = 0;
  std::string event_id;
  std::string type;
  std::string payload;  // SealPayload's output
  int64_t recorded_at_ms = 0;
  Actor actor;
  std::string idempotency_key;  // empty: none
  Hash prev_hash{};
  Hash hash{};
};

// SHA-256 over a domain tag ("isoguard.entry.v1") and then, each preceded by its length as
// 8 bytes little-endian so that fields cannot run into each other: prev_hash, patient_id,
// version (8 bytes LE), event_id, type, payload, recorded_at_ms (8 bytes LE), actor.id,
// actor.role, actor.source, idempotency_key. The position is left out: it orders the global
// log, it is not a fact of the stream.
Hash EntryHash(const EntryRow& row);

std::string HashHex(const Hash& hash);

// Walks one stream's rows in version order and checks the links: versions 1, 2, ... without
// gaps, each prev_hash equal to the previous row's hash (zeros for the first), each hash equal
// to EntryHash, positions increasing. Problems read "patient p-1 version 7: ...".
class ChainCheck {
 public:
  Status Next(const EntryRow& row);
  int64_t version() const { return version_; }

 private:
  int64_t version_ = 0;
  int64_t position_ = 0;
  Hash hash_{};
};

// A stored row as the caller sees it: the payload opened with `key` (null: the patient was
// erased, the entry is returned without JSON) and checked again with the parser; the row's
// event id and type must match the payload's. Does not check the hash (ChainCheck does).
// Errors are kInternal ("patient p-1 version 7: ..."): stored data is damaged.
Result<StoredEntry> DecodeEntry(const EntryRow& row, const PatientKey* key,
                                const ParseOptions& options);

// The options entries are checked with when read back: the same limits, but any program name
// (a program retired later does not make old entries unreadable).
ParseOptions ReadBackOptions(const ParseOptions& options);

}  // namespace isoguard::store
