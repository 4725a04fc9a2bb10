// `isoguard rebuild`, `erase`, `backup` and `restore`, run in-process through RunCli against
// SQLite stores in a temporary directory (the PostgreSQL half of backup and restore is in the
// PostgreSQL suite).
#include "cli/admin_commands.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../store/sqlite_backend.h"
#include "cli/cli.h"
#include "cli/synth.h"
#include "store/event_store.h"

namespace isoguard {
namespace {

namespace json = boost::json;
using store::testing::Ok;
using store::testing::RawSqlite;
using store::testing::TempDir;

struct CliRun {
  int code = 0;
  std::string out, err;
};

CliRun Isoguard(std::vector<std::string> args, const std::string& typed = "") {
  args.insert(args.begin(), {"--data-dir", ISOGUARD_SOURCE_DIR});
  std::istringstream in(typed);
  std::ostringstream out, err;
  CliRun run;
  run.code = RunCli(args, in, out, err);
  run.out = out.str();
  run.err = err.str();
  return run;
}

class AdminCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SynthOptions options;
    options.patients = 30;
    options.seed = 7;
    std::ostringstream cohort;
    ASSERT_TRUE(WriteSynthCohort(options, cohort).ok());
    std::istringstream lines(cohort.str());
    for (std::string line; std::getline(lines, line);) {
      if (patients_.size() < 3) {
        patients_.emplace_back(json::parse(line).at("patient").at("id").as_string());
      }
    }
    const std::string file = dir_.File("cohort.ndjson");
    {
      std::ofstream out(file);
      out << cohort.str();
    }
    CliRun imported = Isoguard({"import", file, "--db", Db()});
    ASSERT_EQ(imported.code, kExitOk) << imported.err;
  }

  std::string Path() const { return dir_.File("store.db"); }
  std::string Db() const { return "sqlite:" + Path(); }

  std::unique_ptr<store::EventStore> Open(const std::string& db) {
    auto opened = store::OpenEventStore(db);
    EXPECT_TRUE(opened.ok()) << opened.error().ToString();
    return opened.ok() ? std::move(*opened) : nullptr;
  }

  TempDir dir_;
  std::vector<std::string> patients_;
};

TEST_F(AdminCommandsTest, EraseAsksForThePatientIdAndErasesNothingWithoutIt) {
  const std::string& patient = patients_[0];
  for (const std::string& typed :
       std::vector<std::string>{"", "no\n", patient + "x\n", std::string(5000, 'a')}) {
    CliRun run = Isoguard({"erase", "--patient", patient, "--db", Db()}, typed);
    EXPECT_EQ(run.code, kExitBadInput) << typed;
    EXPECT_NE(run.err.find("Type the patient id again"), std::string::npos) << run.err;
    EXPECT_NE(run.err.find("not confirmed; nothing was erased"), std::string::npos) << run.err;
  }
  auto state = Open(Db())->ReadState(patient);
  ASSERT_TRUE(Ok(state));
  EXPECT_FALSE(state->erased);
  EXPECT_FALSE(state->record_json.empty());
}

TEST_F(AdminCommandsTest, EraseConfirmedShredsThePatientAndIsAudited) {
  const std::string& patient = patients_[1];
  CliRun run = Isoguard({"erase", "--patient", patient, "--db", Db(), "--actor", "dpo-anna"},
                        patient + "\n");
  ASSERT_EQ(run.code, kExitOk) << run.err;
  json::value out = json::parse(run.out);
  EXPECT_EQ(out.at("erased"), patient.c_str());
  EXPECT_EQ(out.at("by"), "dpo-anna");

  auto event_store = Open(Db());
  auto state = event_store->ReadState(patient);
  ASSERT_TRUE(Ok(state));
  EXPECT_TRUE(state->erased);
  auto stream = event_store->ReadStream(patient);
  ASSERT_TRUE(Ok(stream));
  for (const store::StoredEntry& e : stream->entries) EXPECT_TRUE(e.erased);
  event_store.reset();
  {
    RawSqlite raw(Path());
    EXPECT_EQ(raw.Text("SELECT actor_id || ' ' || actor_role || ' ' || actor_source || ' ' || "
                       "action FROM audit WHERE patient_id = '" +
                       patient + "'"),
              "dpo-anna administrator cli erasure");
  }
  // The log still verifies; export names the erased patient and writes the others.
  CliRun verify = Isoguard({"verify", "--db", Db()});
  EXPECT_EQ(verify.code, kExitOk) << verify.out << verify.err;
  CliRun exported = Isoguard({"export", "--db", Db()});
  EXPECT_EQ(exported.out.find("\"" + patient + "\""), std::string::npos);
  EXPECT_NE(exported.err.find(patient), std::string::npos);
  // --yes for scripts; erasing again is fine; an unknown patient is named.
  EXPECT_EQ(Isoguard({"erase", "--patient", patient, "--db", Db(), "--yes"}).code, kExitOk);
  CliRun unknown = Isoguard({"erase", "--patient", "nobody", "--db", Db(), "--yes"});
  EXPECT_EQ(unknown.code, kExitBadInput);
  EXPECT_NE(unknown.err.find("--patient"), std::string::npos) << unknown.err;
  CliRun no_store =
      Isoguard({"erase", "--patient", patient, "--db", dir_.File("none.db"), "--yes"});
  EXPECT_EQ(no_store.code, kExitBadInput);
  EXPECT_NE(no_store.err.find("--db"), std::string::npos) << no_store.err;
}

TEST_F(AdminCommandsTest, RebuildRepairsADeletedAndAGarbledStateAndNothingElse) {
  CliRun clean = Isoguard({"rebuild", "--db", Db()});
  ASSERT_EQ(clean.code, kExitOk) << clean.err;
  json::value report = json::parse(clean.out);
  EXPECT_EQ(report.at("patients"), 30);
  EXPECT_EQ(report.at("repaired"), 0);
  EXPECT_EQ(report.at("removed"), 0);

  const std::string before = Open(Db())->ReadState(patients_[2])->record_json;
  {
    RawSqlite raw(Path());
    ASSERT_TRUE(
        Ok(raw.Exec("DELETE FROM patient_state WHERE patient_id = '" + patients_[0] + "'")));
    ASSERT_TRUE(Ok(raw.Exec("UPDATE patient_state SET state = x'0200' WHERE patient_id = '" +
                            patients_[2] + "'")));
  }
  auto damaged = Open(Db())->ReadState(patients_[2]);
  EXPECT_FALSE(damaged.ok());

  CliRun repaired = Isoguard({"rebuild", "--db", Db()});
  ASSERT_EQ(repaired.code, kExitOk) << repaired.err;
  report = json::parse(repaired.out);
  EXPECT_EQ(report.at("repaired"), 2);
  auto event_store = Open(Db());
  auto state = event_store->ReadState(patients_[2]);
  ASSERT_TRUE(Ok(state));
  EXPECT_EQ(state->record_json, before);
  EXPECT_GT(event_store->ReadState(patients_[0])->version, 0);
  event_store.reset();
  EXPECT_EQ(json::parse(Isoguard({"rebuild", "--db", Db()}).out).at("repaired"), 0);
}

// A backup taken while writers append is a consistent store: it restores, verifies, and holds
// every append acknowledged before the backup began.
TEST_F(AdminCommandsTest, BackupTakenUnderLoadRestoresAndVerifies) {
  auto event_store = Open(Db());
  std::mutex mu;
  std::map<std::string, int64_t> acknowledged;
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, appends{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 3; ++t) {
    writers.emplace_back([&, t] {
      const std::string& patient = patients_[static_cast<size_t>(t)];
      while (!stop.load()) {
        auto r = event_store->Append(store::testing::Request(
            patient, {store::testing::WeightEntry(60 + t, "2026-11-01T10:00:00Z")}));
        if (!r.ok()) {
          ++failures;
          return;
        }
        std::lock_guard lock(mu);
        acknowledged[patient] = r->last_version;
        ++appends;
      }
    });
  }
  while (appends.load() < 30 && failures.load() == 0) std::this_thread::yield();
  std::map<std::string, int64_t> before;
  {
    std::lock_guard lock(mu);
    before = acknowledged;
  }
  const std::string backup = dir_.File("backup.db");
  CliRun backed_up = Isoguard({"backup", "--db", Db(), "--to", backup});
  const int during = appends.load();
  while (appends.load() < during + 30 && failures.load() == 0) std::this_thread::yield();
  stop = true;
  for (std::thread& w : writers) w.join();
  ASSERT_EQ(failures.load(), 0);
  ASSERT_EQ(backed_up.code, kExitOk) << backed_up.err;
  EXPECT_EQ(json::parse(backed_up.out).at("backup"), backup.c_str());

  const std::string restored = "sqlite:" + dir_.File("restored.db");
  CliRun restore = Isoguard({"restore", "--from", backup, "--db", restored});
  ASSERT_EQ(restore.code, kExitOk) << restore.out << restore.err;
  json::value report = json::parse(restore.out);
  EXPECT_EQ(report.at("ok"), true);
  EXPECT_EQ(report.at("streams_checked"), 30);
  auto copy = Open(restored);
  for (const auto& [patient, version] : before) {
    auto state = copy->ReadState(patient);
    ASSERT_TRUE(Ok(state));
    EXPECT_GE(state->version, version) << patient;
  }
  // The copy is a working store: it takes appends and its states follow.
  const std::string& first = patients_[0];
  const int64_t copied = copy->ReadState(first)->version;
  ASSERT_TRUE(Ok(copy->Append(store::testing::Request(first, {store::testing::WeightEntry(61)}))));
  EXPECT_EQ(copy->ReadState(first)->version, copied + 1);
}

TEST_F(AdminCommandsTest, BackupAndRestoreNeverOverwrite) {
  const std::string backup = dir_.File("backup.db");
  ASSERT_EQ(Isoguard({"backup", "--db", Db(), "--to", backup}).code, kExitOk);
  CliRun again = Isoguard({"backup", "--db", Db(), "--to", backup});
  EXPECT_EQ(again.code, kExitBadInput);
  EXPECT_NE(again.err.find("--to"), std::string::npos) << again.err;
  // Restoring over a store refuses and leaves it as it was.
  const std::string before = Isoguard({"export", "--db", Db()}).out;
  CliRun over = Isoguard({"restore", "--from", backup, "--db", Db()});
  EXPECT_EQ(over.code, kExitBadInput) << over.out << over.err;
  EXPECT_EQ(Isoguard({"export", "--db", Db()}).out, before);
  CliRun missing = Isoguard(
      {"restore", "--from", dir_.File("none.db"), "--db", "sqlite:" + dir_.File("new.db")});
  EXPECT_EQ(missing.code, kExitBadInput);
  EXPECT_NE(missing.err.find("--from"), std::string::npos) << missing.err;
  EXPECT_FALSE(std::filesystem::exists(dir_.File("new.db")));
  CliRun no_store = Isoguard({"backup", "--db", dir_.File("none.db"), "--to", dir_.File("b2.db")});
  EXPECT_EQ(no_store.code, kExitBadInput);
}

}  // namespace
}  // namespace isoguard
