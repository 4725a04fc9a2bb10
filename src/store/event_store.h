// The durable event store: every fact about a patient (the patient's own header, a test result,
// an attestation, a prescription, an authorization) is an immutable entry in that patient's
// stream. Streams are keyed by patient id, the distribution key of every query.
//
// Contract, for every implementation (SQLite, PostgreSQL):
// - Append is all-or-nothing and durable when it returns ok (fsync'd / committed).
// - Optimistic concurrency: an append with an expected version fails with kConflict when the
//   stream has moved on; it never overwrites or interleaves.
// - Idempotency: an append whose idempotency key was already used for the same patient returns
//   the first append's result (replayed = true) and writes nothing.
// - Entries are validated with the engine's parser before they are written (a rejected entry
//   names its index and field, "entries[2].kg"; nothing of the append is written) and checked
//   again when read. A stream begins with its patient entry; a dispense must name a
//   prescription of the stream (or of the same append), as in a record.
// - Entries are never updated or deleted. A correction is a new `entered_in_error` entry.
// - Each entry's hash chains to the previous entry of its stream:
//     hash = SHA-256(prev_hash || patient_id || version || type || payload ciphertext || meta)
//   so the chain stays verifiable after a patient's key is destroyed (crypto-shredding).
//   The exact byte layout is in entry_codec.h; it is shared by every backend.
// - Limits: at most kMaxEntriesPerAppend entries and kMaxAppendBytes of JSON per append,
//   kMaxEntryBytes per entry, kMaxPatientIdBytes for patient ids, kMaxNameBytes for keys and
//   actor fields; a bounded queue of pending appends (a caller waits for room rather than
//   growing memory without bound).
//
// Thread safety: an EventStore is safe to use from many threads at once; implementations batch
// concurrent appends into shared commits (group commit).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/time.h"
#include "domain/record_parser.h"

namespace isoguard::store {

// A whole record fits one append: its patient entry and up to the record format's 10,000 events.
inline constexpr size_t kMaxEntriesPerAppend = RecordLimits{}.max_events + 1;
inline constexpr size_t kMaxEntryBytes = size_t{1} << 20;    // 1 MiB
inline constexpr size_t kMaxAppendBytes = size_t{10} << 20;  // 10 MiB, a record's limit
inline constexpr size_t kMaxNameBytes = 1000;                // keys, actor fields
// Patient ids are shorter: an assigned event id ("<patient>-<version>") must stay within the
// record format's 1,000-character limit on strings.
inline constexpr size_t kMaxPatientIdBytes = 256;
inline constexpr size_t kMaxReadAllEntries = 10000;  // per ReadAll call

// Who recorded an entry, and from where. `id` and `role` are required, `source` may be empty.
struct Actor {
  std::string id;      // "dr-smith", "pharmacy-42", "import"
  std::string role;    // "prescriber", "pharmacist", "patient", "system"
  std::string source;  // "cli", "api 10.0.0.7", "fhir"
};

// The kind of entry: the record's patient object, or one event of the record format.
inline constexpr std::string_view kPatientEntryType = "patient";

struct AppendRequest {
  std::string patient_id;
  // nullopt: append whatever the stream's version; 0: the stream must not exist yet;
  // N: the stream's current version must be N.
  std::optional<int64_t> expected_version;
  // Each a JSON object: either {"type":"patient", ...the record's patient object...} (the
  // stream's first entry, or an update of the header; its "id" must be patient_id) or an event
  // of the record format. Events without an "id" get one assigned, "<patient>-<version>" (or,
  // should an event of the stream already carry that id, "<patient>-<version>.<n>"), which is
  // written into the stored JSON. A patient entry's event id is assigned the same way; its
  // JSON is stored as given. 1 to kMaxEntriesPerAppend entries.
  std::vector<std::string> entries;
  Actor actor;
  std::string idempotency_key;  // empty: none
};

struct AppendResult {
  int64_t first_version = 0;
  int64_t last_version = 0;
  int64_t last_position = 0;           // global position of the last entry written
  std::vector<std::string> event_ids;  // one per entry, in order
  bool replayed = false;               // the idempotency key was seen: nothing was written
};

using Hash = std::array<uint8_t, 32>;

struct StoredEntry {
  int64_t position = 0;  // global, increasing in commit order
  std::string patient_id;
  int64_t version = 0;  // 1, 2, ... within the stream
  std::string event_id;
  std::string type;
  std::string json;     // the entry's JSON object; empty when the patient was erased
  bool erased = false;  // the patient's key was destroyed: the payload is unreadable
  Instant recorded_at{};
  Actor actor;
  std::string idempotency_key;
  Hash prev_hash{};
  Hash hash{};
};

struct Stream {
  std::string patient_id;
  int64_t version = 0;  // 0: no such stream
  std::vector<StoredEntry> entries;
};

// A patient's state as the projection keeps it (projection.h): the stream folded into a
// record of the contract format, as of the stream's last version.
struct PatientState {
  std::string patient_id;
  int64_t version = 0;      // the last stream version folded in; 0: no such patient
  int64_t position = 0;     // that entry's global position
  std::string record_json;  // {"patient":{...},"events":[...]}; empty when erased or unknown
  bool erased = false;
};

// A stream's head as ReadVersions reports it: nothing of the payloads is read.
struct StreamVersion {
  int64_t version = 0;  // 0: no such patient
  bool erased = false;
};

// At most this many patients per ReadVersions call.
inline constexpr size_t kMaxVersionsPerRead = 1000;

// What a rebuild of the projections did.
struct RebuildReport {
  int64_t patients = 0;  // state rows recomputed from the log
  int64_t entries = 0;   // log entries read
  int64_t repaired = 0;  // rows that were missing or differed from the log, now rewritten
  int64_t removed = 0;   // rows with no stream behind them (or of an erased patient), removed
};

// The result of walking the log: the first broken link, if any.
struct VerifyReport {
  int64_t entries_checked = 0;
  int64_t streams_checked = 0;
  std::optional<std::string> first_problem;  // "patient p-1 version 7: hash does not match"
};

class EventStore {
 public:
  virtual ~EventStore() = default;

  // Errors: kBadInput (a malformed request or entry, an erased patient's stream), kConflict
  // (expected_version is stale), kUnavailable (nothing was written: the storage is full or
  // read-only, or the database server cannot be reached; the same append may succeed later),
  // kInternal (storage failure: nothing was acknowledged, and nothing of this append is visible
  // unless a retry with the same idempotency key says so).
  virtual Result<AppendResult> Append(const AppendRequest& request) = 0;
  // Decrypts, re-validates and re-checks the hash chain of every entry; kInternal naming the
  // entry when the stored data is damaged. An unknown patient is an empty stream (version 0).
  virtual Result<Stream> ReadStream(const std::string& patient_id) = 0;
  // Entries with position > after, in position order, at most min(limit, kMaxReadAllEntries).
  // Each entry's own hash is re-checked; the links between entries are Verify's.
  virtual Result<std::vector<StoredEntry>> ReadAll(int64_t after, size_t limit) = 0;
  // The patient's current state from the projection: its state row, plus whatever entries a
  // backend keeps behind the row (projection.h), decrypted and checked in one read transaction,
  // so the state is never behind the log (kInternal naming the patient when it is damaged). An
  // unknown patient has version 0; an erased one is returned with erased = true and no record.
  virtual Result<PatientState> ReadState(const std::string& patient_id) = 0;
  // The heads of the patients' streams, in the order of `patient_ids`, in one read: for views
  // over many patients that keep what they computed per version and re-read only the patients
  // whose records changed. kBadInput past kMaxVersionsPerRead ids or for an id too long.
  virtual Result<std::vector<StreamVersion>> ReadVersions(
      const std::vector<std::string>& patient_ids) = 0;
  // Recomputes every patient's state from the log and rewrites the rows that are missing or
  // differ; writers may go on meanwhile (each patient is rebuilt in a transaction of its own
  // that also holds the stream's newest entries). The result is what Append would have kept.
  virtual Result<RebuildReport> RebuildProjections() = 0;
  // Walks every stream: versions 1..N without gaps, each prev_hash the previous entry's hash,
  // each hash recomputed, each payload decrypted and validated (unless erased), and no key
  // missing without a recorded erasure. Stops at the first problem.
  virtual Result<VerifyReport> Verify() = 0;
  // Destroys the patient's key: payloads become unreadable, the chain stays verifiable. The
  // erasure is recorded (who, when) in an audit table; the stream takes no more appends.
  // kNotFound for an unknown patient; erasing an erased patient again is ok and changes nothing.
  // Deleting the key is the one deletion the store ever makes: the log is append-only so that
  // it can be trusted (the hash chain), and the law's right to erasure is met by making the
  // payloads unreadable rather than by removing rows, which would break every later link.
  // What stays readable is the structure: patient id, event ids, types, times and actors --
  // so patient ids should be pseudonyms and event ids should carry no personal data. Backups
  // taken before the erasure still hold the key.
  virtual Status ErasePatient(const std::string& patient_id, const Actor& actor) = 0;
  // A consistent online copy to `path` while writers go on: every append acknowledged before
  // the call is in it. kBadInput when `path` already exists (a backup never overwrites).
  virtual Status Backup(const std::string& path) = 0;
};

struct StoreOptions {
  // How entries are checked, on append and on read (on read, program names are not checked:
  // a program retired later does not make old entries unreadable).
  ParseOptions parse;
};

// Opens "sqlite:PATH" (or a plain path) or "postgresql://..." / "postgres://...": runs
// migrations, refuses a schema newer than this build knows.
Result<std::unique_ptr<EventStore>> OpenEventStore(const std::string& url,
                                                   const StoreOptions& options = {});

// Brings a backup written by Backup back as the store at `url`, which must not hold an
// isoguard store yet (kBadInput otherwise: a restore never overwrites), then opens it (running
// migrations, so an older backup is upgraded) and verifies every stream; kInternal naming the
// first problem when the backup is damaged. SQLite: `backup_path` is a database file, copied
// with the backup API. PostgreSQL: `backup_path` is pg_dump's custom format, loaded with
// pg_restore into the (existing, empty) database the URL names.
Result<VerifyReport> RestoreEventStore(const std::string& backup_path, const std::string& url,
                                       const StoreOptions& options = {});

}  // namespace isoguard::store
