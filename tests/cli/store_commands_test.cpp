// `isoguard import`, `export` and `verify`, run in-process through RunCli against a store in a
// temporary directory.
#include "cli/store_commands.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../store/sqlite_backend.h"
#include "cli/cli.h"
#include "cli/synth.h"

namespace isoguard {
namespace {

namespace json = boost::json;
using store::testing::CorruptSqliteEntry;
using store::testing::TempDir;

struct CliRun {
  int code = 0;
  std::string out, err;
};

CliRun RunIsoguard(std::vector<std::string> args) {
  args.insert(args.begin(), {"--data-dir", ISOGUARD_SOURCE_DIR});
  std::ostringstream out, err;
  CliRun run;
  run.code = RunCli(args, out, err);
  run.out = out.str();
  run.err = err.str();
  return run;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

std::vector<std::string> Cohort(uint64_t patients, uint64_t seed) {
  SynthOptions options;
  options.patients = patients;
  options.seed = seed;
  std::ostringstream out;
  EXPECT_TRUE(WriteSynthCohort(options, out).ok());
  return Lines(out.str());
}

std::string WriteFile(const TempDir& dir, const std::string& name,
                      const std::vector<std::string>& lines) {
  const std::string path = dir.File(name);
  std::ofstream file(path, std::ios::binary);
  for (const auto& line : lines) file << line << "\n";
  return path;
}

// Records by patient id, as parsed JSON values.
std::map<std::string, json::value> ByPatient(const std::vector<std::string>& lines) {
  std::map<std::string, json::value> records;
  for (const auto& line : lines) {
    json::value v = json::parse(line);
    std::string id(v.at("patient").at("id").as_string());
    EXPECT_TRUE(records.emplace(id, std::move(v)).second) << "patient " << id << " twice";
  }
  return records;
}

class StoreCommandsTest : public ::testing::Test {
 protected:
  std::string Db() const { return "sqlite:" + dir_.File("store.db"); }
  CliRun Import(const std::string& path, bool atomic = false) {
    std::vector<std::string> args{"import", path, "--db", Db()};
    if (atomic) args.push_back("--atomic");
    return RunIsoguard(args);
  }
  std::vector<std::string> Export() {
    CliRun run = RunIsoguard({"export", "--db", Db()});
    EXPECT_EQ(run.code, kExitOk) << run.err;
    return Lines(run.out);
  }

  TempDir dir_;
};

TEST_F(StoreCommandsTest, ExportOfImportIsTheIdentity) {
  const auto cohort = Cohort(200, 11);
  const std::string path = WriteFile(dir_, "cohort.ndjson", cohort);
  CliRun run = Import(path);
  ASSERT_EQ(run.code, kExitOk) << run.err;
  EXPECT_NE(run.err.find("200 imported, 0 already present, 0 failed"), std::string::npos)
      << run.err;

  const auto exported = Export();
  ASSERT_EQ(exported.size(), cohort.size());
  // synth gives every event an id, so the store assigns none: the records are equal exactly.
  const auto in = ByPatient(cohort);
  const auto back = ByPatient(exported);
  ASSERT_EQ(in.size(), back.size());
  for (const auto& [id, record] : in) {
    auto it = back.find(id);
    ASSERT_NE(it, back.end()) << id;
    EXPECT_EQ(record, it->second) << id << "\n"
                                  << json::serialize(record) << "\n"
                                  << json::serialize(it->second);
  }
}

// Export reads each patient's state: an entry written with line breaks in its JSON whitespace
// still comes out on one line, and an erased patient is named and skipped.
TEST_F(StoreCommandsTest, ExportIsOneLineAPatientAndSkipsTheErased) {
  const auto cohort = Cohort(3, 9);
  ASSERT_EQ(Import(WriteFile(dir_, "c.ndjson", cohort)).code, kExitOk);
  const std::string erased(json::parse(cohort[1]).at("patient").at("id").as_string());
  {
    auto opened = store::OpenEventStore(Db());
    ASSERT_TRUE(opened.ok());
    ASSERT_TRUE((*opened)
                    ->Append(store::testing::Request(
                        "p-lines",
                        {"{\n  \"type\": \"patient\",\n  \"id\": \"p-lines\",\n"
                         "  \"birth_date\": \"2000-05-14\", \"jurisdiction\": \"US\",\n"
                         "  \"category\": \"cannot_get_pregnant\"\n}",
                         "{\"type\": \"weight\",\r\n \"at\": \"2026-09-01T10:00:00Z\","
                         " \"kg\": 60, \"id\": \"w-1\"}"},
                        0))
                    .ok());
    ASSERT_TRUE((*opened)->ErasePatient(erased, store::testing::TestActor()).ok());
  }
  CliRun run = RunIsoguard({"export", "--db", Db()});
  ASSERT_EQ(run.code, kExitOk) << run.err;
  const auto lines = Lines(run.out);
  ASSERT_EQ(lines.size(), 3u) << run.out;
  EXPECT_NE(run.err.find("patient " + erased + ": the patient was erased"), std::string::npos)
      << run.err;
  EXPECT_NE(run.err.find("3 patients, 1 erased and skipped"), std::string::npos) << run.err;
  // The imported lines come first, in the order their streams began (the import writes them
  // concurrently, so in either order); the stream appended afterwards comes last.
  const auto imported = ByPatient({lines[0], lines[1]});
  const auto expected = ByPatient({cohort[0], cohort[2]});
  EXPECT_EQ(imported, expected);
  EXPECT_EQ(json::parse(lines[2]),
            json::parse(R"({"patient":{"id":"p-lines","birth_date":"2000-05-14",)"
                        R"("jurisdiction":"US","category":"cannot_get_pregnant"},)"
                        R"("events":[{"type":"weight","at":"2026-09-01T10:00:00Z","kg":60,)"
                        R"("id":"w-1"}]})"));
}

TEST_F(StoreCommandsTest, EventsWithoutIdsGetTheStoresIds) {
  const std::string line =
      R"({"patient":{"id":"p-1","birth_date":"2000-05-14","jurisdiction":"US",)"
      R"("category":"cannot_get_pregnant"},"events":[{"type":"weight",)"
      R"("at":"2026-09-01T10:00:00-04:00","kg":60}]})";
  ASSERT_EQ(Import(WriteFile(dir_, "one.ndjson", {line})).code, kExitOk);
  const auto exported = Export();
  ASSERT_EQ(exported.size(), 1u);
  json::value expected = json::parse(line);
  expected.at("events").as_array()[0].as_object()["id"] = "p-1-2";
  EXPECT_EQ(json::parse(exported[0]), expected) << exported[0];
}

// A re-run (say after a crash) writes only what is missing.
TEST_F(StoreCommandsTest, ReRunImportsOnlyWhatIsMissing) {
  const auto cohort = Cohort(60, 4);
  const std::vector<std::string> first_part(cohort.begin(), cohort.begin() + 25);
  CliRun partial = Import(WriteFile(dir_, "part.ndjson", first_part));
  ASSERT_EQ(partial.code, kExitOk) << partial.err;

  const std::string path = WriteFile(dir_, "all.ndjson", cohort);
  CliRun rest = Import(path);
  ASSERT_EQ(rest.code, kExitOk) << rest.err;
  EXPECT_NE(rest.err.find("35 imported, 25 already present, 0 failed"), std::string::npos)
      << rest.err;

  CliRun again = Import(path);
  ASSERT_EQ(again.code, kExitOk) << again.err;
  EXPECT_NE(again.err.find("0 imported, 60 already present, 0 failed"), std::string::npos)
      << again.err;
  EXPECT_EQ(Export().size(), 60u);
}

std::vector<std::string> WithBadLine(std::vector<std::string> lines, size_t index) {
  // A weight of 0 kg: the record is malformed at the event's index and field.
  json::value v = json::parse(lines[index]);
  json::array& events = v.at("events").as_array();
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].at("type").as_string() == "weight") {
      events[i].as_object()["kg"] = 0;
      lines[index] = json::serialize(v);
      return lines;
    }
  }
  ADD_FAILURE() << "no weight event to break";
  return lines;
}

TEST_F(StoreCommandsTest, ABadLineIsReportedAndTheOthersAreImported) {
  auto lines = WithBadLine(Cohort(5, 8), 2);
  lines.insert(lines.begin() + 4, "");  // a blank line is no record, yet it counts as a line
  lines.push_back("not json");
  CliRun run = Import(WriteFile(dir_, "bad.ndjson", lines));
  EXPECT_EQ(run.code, kExitBadInput);
  EXPECT_NE(run.err.find("line 3: "), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("kg"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("line 7: not valid JSON"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("4 imported, 0 already present, 2 failed"), std::string::npos) << run.err;
  EXPECT_EQ(Export().size(), 4u);
}

TEST_F(StoreCommandsTest, AtomicImportWritesNothingWhenALineIsBad) {
  const auto good = Cohort(5, 8);
  CliRun run = Import(WriteFile(dir_, "bad.ndjson", WithBadLine(good, 3)), /*atomic=*/true);
  EXPECT_EQ(run.code, kExitBadInput);
  EXPECT_NE(run.err.find("line 4: "), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("nothing was written"), std::string::npos) << run.err;
  EXPECT_TRUE(Export().empty());

  CliRun ok = Import(WriteFile(dir_, "good.ndjson", good), /*atomic=*/true);
  EXPECT_EQ(ok.code, kExitOk) << ok.err;
  EXPECT_NE(ok.err.find("5 imported"), std::string::npos) << ok.err;
  EXPECT_EQ(Export().size(), 5u);
}

// A record at the format's limit (10,000 events) imports as one stream and comes back whole.
TEST_F(StoreCommandsTest, ARecordWithTheMostEventsTheFormatAllowsImports) {
  std::string line = R"({"patient":{"id":"p-big","birth_date":"2000-05-14","jurisdiction":"US",)"
                     R"("category":"cannot_get_pregnant"},"events":[)";
  for (int i = 0; i < 10000; ++i) {
    line += std::string(i == 0 ? "" : ",") + R"({"type":"weight","id":"w-)" + std::to_string(i) +
            R"(","at":"2026-09-01T10:00:00Z","kg":60})";
  }
  line += "]}";
  CliRun run = Import(WriteFile(dir_, "big.ndjson", {line}));
  ASSERT_EQ(run.code, kExitOk) << run.err;
  const auto exported = Export();
  ASSERT_EQ(exported.size(), 1u);
  EXPECT_EQ(json::parse(exported[0]), json::parse(line));
}

// Two lines for one patient: one is imported, the other is a bad line, and the report says
// truly which record was kept (the lines are processed concurrently: either may win).
TEST_F(StoreCommandsTest, APatientTwiceInTheFileIsABadLine) {
  auto lines = Cohort(3, 2);
  json::value other = json::parse(lines[1]);
  other.at("events").as_array().pop_back();
  lines.push_back(json::serialize(other));
  CliRun run = Import(WriteFile(dir_, "dup.ndjson", lines));
  EXPECT_EQ(run.code, kExitBadInput);
  EXPECT_NE(run.err.find("3 imported, 0 already present, 1 failed"), std::string::npos) << run.err;
  const std::string said = ", whose record is the one imported";
  const size_t at = run.err.find(said);
  ASSERT_NE(at, std::string::npos) << run.err;
  const size_t number_at = run.err.rfind("also on line ", at) + std::string("also on line ").size();
  const int kept = std::stoi(run.err.substr(number_at, at - number_at));
  ASSERT_TRUE(kept == 2 || kept == 4) << run.err;
  const auto exported = ByPatient(Export());
  const std::string id(other.at("patient").at("id").as_string());
  ASSERT_EQ(exported.count(id), 1u);
  EXPECT_EQ(exported.at(id), json::parse(lines[static_cast<size_t>(kept - 1)])) << run.err;
}

// A stream written by someone else is not overwritten, and not mistaken for an import's.
TEST_F(StoreCommandsTest, AStreamThatNoImportWroteIsAConflict) {
  const auto cohort = Cohort(3, 6);
  const std::string id(json::parse(cohort[0]).at("patient").at("id").as_string());
  {
    auto opened = store::OpenEventStore(Db());
    ASSERT_TRUE(opened.ok());
    ASSERT_TRUE(
        (*opened)->Append(store::testing::Request(id, {store::testing::PatientEntry(id)}, 0)).ok());
  }
  const std::string path = WriteFile(dir_, "c.ndjson", cohort);
  CliRun atomic = Import(path, /*atomic=*/true);
  EXPECT_EQ(atomic.code, kExitBadInput);
  EXPECT_NE(atomic.err.find("line 1: patient " + id), std::string::npos) << atomic.err;
  EXPECT_EQ(Export().size(), 1u);

  CliRun run = Import(path);
  EXPECT_EQ(run.code, kExitBadInput);
  EXPECT_NE(run.err.find("line 1: patient " + id), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("2 imported, 0 already present, 1 failed"), std::string::npos) << run.err;
}

TEST_F(StoreCommandsTest, VerifyIsCleanAfterImportAndFindsACorruptedRow) {
  const auto cohort = Cohort(20, 5);
  ASSERT_EQ(Import(WriteFile(dir_, "c.ndjson", cohort)).code, kExitOk);
  CliRun clean = RunIsoguard({"verify", "--db", Db()});
  ASSERT_EQ(clean.code, kExitOk) << clean.err;
  json::value report = json::parse(clean.out);
  EXPECT_EQ(report.at("ok"), true);
  EXPECT_EQ(report.at("streams_checked"), 20);
  EXPECT_GT(report.at("entries_checked").as_int64(), 20);
  EXPECT_TRUE(report.at("first_problem").is_null());

  const std::string id(json::parse(cohort[7]).at("patient").at("id").as_string());
  ASSERT_TRUE(CorruptSqliteEntry(Db(), id, 3, "payload").ok());
  CliRun broken = RunIsoguard({"verify", "--db", Db()});
  EXPECT_EQ(broken.code, kExitInternal) << broken.err;
  json::value problem = json::parse(broken.out);
  EXPECT_EQ(problem.at("ok"), false);
  ASSERT_TRUE(problem.at("first_problem").is_string()) << broken.out;
  EXPECT_NE(std::string(problem.at("first_problem").as_string()).find(id), std::string::npos)
      << broken.out;
}

TEST_F(StoreCommandsTest, ExitCodes) {
  // No store: export and verify do not create an empty one.
  EXPECT_EQ(RunIsoguard({"export", "--db", Db()}).code, kExitBadInput);
  EXPECT_EQ(RunIsoguard({"verify", "--db", Db()}).code, kExitBadInput);
  EXPECT_FALSE(std::filesystem::exists(dir_.File("store.db")));
  // No input file.
  EXPECT_EQ(Import(dir_.File("missing.ndjson")).code, kExitBadInput);
  EXPECT_EQ(RunIsoguard({"import"}).code, kExitBadInput);
  EXPECT_EQ(Import(dir_.path().string()).code, kExitBadInput);
  // An empty file imports nothing, successfully; the store then exists and verifies clean.
  CliRun empty = Import(WriteFile(dir_, "empty.ndjson", {}));
  EXPECT_EQ(empty.code, kExitOk) << empty.err;
  EXPECT_NE(empty.err.find("0 imported, 0 already present, 0 failed"), std::string::npos);
  EXPECT_EQ(RunIsoguard({"verify", "--db", Db()}).code, kExitOk);
  EXPECT_TRUE(Export().empty());
  // Not a store.
  const std::string other = WriteFile(dir_, "other.db", {"hello"});
  EXPECT_NE(RunIsoguard({"verify", "--db", other}).code, kExitOk);
}

}  // namespace
}  // namespace isoguard
