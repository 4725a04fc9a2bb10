#include "cli/admin_commands.h"

#include <cstdlib>
#include <filesystem>
#include <istream>
#include <ostream>
#include <string_view>

#include "cli/cli.h"
#include "cli/cli_support.h"
#include "core/json_writer.h"

namespace isoguard {

namespace {

// Who the audit table names when --actor is not given: the login user, as a shell knows it.
std::string DefaultActor() {
  for (const char* name : {"SUDO_USER", "USER", "LOGNAME"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') return value;
  }
  return "unknown-user";
}

// The line as typed, without the surrounding blanks a terminal or a pipe may add.
std::string_view Stripped(std::string_view line) {
  const size_t first = line.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const size_t last = line.find_last_not_of(" \t\r");
  return line.substr(first, last - first + 1);
}

}  // namespace

int RunRebuild(const std::string& db, std::ostream& out, std::ostream& err) {
  auto opened = OpenStore(db, ParseOptions{}, /*must_exist=*/true);
  if (!opened.ok()) return Fail(err, opened.error());
  auto report = (*opened)->RebuildProjections();
  if (!report.ok()) return Fail(err, report.error());
  std::string text;
  JsonWriter w(text);
  w.BeginObject();
  w.Key("patients").Integer(report->patients);
  w.Key("entries").Integer(report->entries);
  w.Key("repaired").Integer(report->repaired);
  w.Key("removed").Integer(report->removed);
  w.EndObject();
  out << text << "\n";
  return kExitOk;
}

int RunErase(const EraseOptions& options, std::istream& in, std::ostream& out, std::ostream& err) {
  if (options.patient_id.empty()) {
    return Fail(err, Error::BadInput("names no patient", "--patient"));
  }
  auto opened = OpenStore(options.db, ParseOptions{}, /*must_exist=*/true);
  if (!opened.ok()) return Fail(err, opened.error());
  store::EventStore& event_store = **opened;
  auto state = event_store.ReadState(options.patient_id);
  if (!state.ok()) return Fail(err, state.error());
  if (state->version == 0) {
    return Fail(
        err, Error::NotFound("no patient '" + options.patient_id + "' in the store", "--patient"));
  }
  if (!options.confirmed) {
    err << "Erasing patient " << options.patient_id << " destroys the patient's key: every one of"
        << " the " << state->version << " entries of the stream becomes unreadable, for good"
        << " (backups taken before now still hold it).\n"
        << "Type the patient id again to confirm: " << std::flush;
    // One line, read up to a bound: whatever is typed, memory stays small.
    std::string typed;
    for (char c = 0; typed.size() <= store::kMaxPatientIdBytes + 8 && in.get(c) && c != '\n';) {
      typed.push_back(c);
    }
    if (typed.size() > store::kMaxPatientIdBytes + 8 || Stripped(typed) != options.patient_id) {
      err << "isoguard erase: not confirmed; nothing was erased\n";
      return kExitBadInput;
    }
  }
  store::Actor actor{options.actor.empty() ? DefaultActor() : options.actor, "administrator",
                     "cli"};
  if (auto status = event_store.ErasePatient(options.patient_id, actor); !status.ok()) {
    Error e = status.error();
    if (e.field == "patient_id") e.field = "--patient";
    if (e.field.starts_with("actor")) e.field = "--actor";
    return Fail(err, e);
  }
  std::string text;
  JsonWriter w(text);
  w.BeginObject();
  w.Key("erased").String(options.patient_id);
  w.Key("entries").Integer(state->version);
  w.Key("by").String(actor.id);
  w.EndObject();
  out << text << "\n";
  return kExitOk;
}

int RunBackup(const std::string& db, const std::string& to, std::ostream& out, std::ostream& err) {
  if (to.empty()) return Fail(err, Error::BadInput("names no file", "--to"));
  std::error_code ec;
  if (std::filesystem::exists(to, ec)) {
    return Fail(err, Error::BadInput("'" + to + "' exists; a backup never overwrites", "--to"));
  }
  auto opened = OpenStore(db, ParseOptions{}, /*must_exist=*/true);
  if (!opened.ok()) return Fail(err, opened.error());
  if (auto status = (*opened)->Backup(to); !status.ok()) {
    Error e = status.error();
    if (e.field.empty() || e.field == "path") e.field = "--to";
    return Fail(err, e);
  }
  std::string text;
  JsonWriter w(text);
  w.BeginObject();
  w.Key("backup").String(to);
  w.Key("bytes").Integer(static_cast<int64_t>(std::filesystem::file_size(to, ec)));
  w.EndObject();
  out << text << "\n";
  return kExitOk;
}

int RunRestore(const std::string& from, const std::string& db, std::ostream& out,
               std::ostream& err) {
  std::error_code ec;
  if (from.empty() || !std::filesystem::is_regular_file(from, ec)) {
    return Fail(err, Error::BadInput("no backup file '" + from + "'", "--from"));
  }
  auto report = store::RestoreEventStore(from, db);
  if (!report.ok()) {
    Error e = report.error();
    if (e.field.empty() || e.field == "db") e.field = e.kind == ErrorKind::kInternal ? "" : "--db";
    return Fail(err, e);
  }
  out << VerifyReportJson(*report) << "\n";
  return report->first_problem ? kExitInternal : kExitOk;
}

}  // namespace isoguard
