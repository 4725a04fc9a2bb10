// The event store's maintenance commands (README, "Event store"):
//
// rebuild: recomputes every patient's projection (current state) from the log and rewrites the
//   rows that were missing or differed; prints what it did as JSON.
// erase: crypto-shredding of one patient where the law grants erasure (GDPR art. 17): destroys
//   the patient's key, so every payload of the stream becomes unreadable for good, while the
//   log's structure and hash chain stay verifiable. It asks for the patient id to be typed
//   again (or --yes, for scripts) and the store records who erased whom and when.
// backup: a consistent online copy of the store while it is being written (SQLite's backup
//   API; pg_dump for PostgreSQL). Never overwrites a file.
// restore: brings a backup back as a new store and verifies every stream of it.
//
// Thread safety: each function may run beside others with different options.
#pragma once

#include <iosfwd>
#include <string>

namespace isoguard {

// Exit code 0, 1 when the store fails, 2 when there is no store.
int RunRebuild(const std::string& db, std::ostream& out, std::ostream& err);

struct EraseOptions {
  std::string db;
  std::string patient_id;
  bool confirmed = false;  // --yes: do not ask
  std::string actor;       // who erases (recorded in the audit table)
};
// Reads the confirmation from `in` unless `confirmed`. Exit code 0 when erased (or already
// erased), 2 when not confirmed (nothing is erased), the patient is unknown or there is no
// store, 1 when the store fails.
int RunErase(const EraseOptions& options, std::istream& in, std::ostream& out, std::ostream& err);

// Exit code 0, 2 when the target exists or there is no store, 1 when the copy fails.
int RunBackup(const std::string& db, const std::string& to, std::ostream& out, std::ostream& err);

// Prints the restored store's verify report. Exit code 0 when restored and clean, 2 when the
// target already holds a store or the backup is missing, 1 when the backup is damaged.
int RunRestore(const std::string& from, const std::string& db, std::ostream& out,
               std::ostream& err);

}  // namespace isoguard
