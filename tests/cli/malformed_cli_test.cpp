// `isoguard evaluate` on malformed input, through RunCli: a malformed record, an oversized file
// or a missing file exits 2 with a message on stderr naming what is wrong (for a record: the
// event by index and the field); a well-formed record exits 0.
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "cli/cli.h"

namespace isoguard {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

constexpr std::string_view kAt = "2026-09-14T10:00:00-04:00";

constexpr std::string_view kPatient =
    R"("patient": {"id": "p-0001", "birth_date": "2004-02-11", "jurisdiction": "US",
                   "category": "can_get_pregnant"})";

// The contract's example: a first prescription under us-ipledge-2026, authorized at kAt.
constexpr std::string_view kWellFormedRecord = R"({
  "patient": {"id": "p-example-1", "birth_date": "2004-02-11", "jurisdiction": "US",
              "category": "can_get_pregnant"},
  "events": [
    {"type": "enrollment", "at": "2026-08-20T09:00:00-04:00"},
    {"type": "visit", "at": "2026-08-20T09:15:00-04:00", "counseled": true},
    {"type": "weight", "at": "2026-08-20T09:20:00-04:00", "kg": 58.5},
    {"type": "contraception", "at": "2026-08-20T09:30:00-04:00",
     "methods": ["implant", "male_condom"], "since": "2026-08-01"},
    {"type": "pregnancy_test", "collected_at": "2026-08-20T09:40:00-04:00", "result": "negative",
     "setting": "office", "specimen": "urine"},
    {"type": "lab", "at": "2026-08-20T10:00:00-04:00", "test": "TG", "value": 132,
     "unit": "mg/dL"},
    {"type": "lab", "at": "2026-08-20T10:00:00-04:00", "test": "ALT", "value": 22, "unit": "U/L",
     "uln": 40},
    {"type": "phq9", "at": "2026-08-20T09:25:00-04:00", "items": [0, 1, 0, 0, 1, 0, 0, 0, 0]},
    {"type": "pregnancy_test", "collected_at": "2026-09-10T08:30:00-04:00", "result": "negative",
     "setting": "lab", "specimen": "serum"},
    {"type": "visit", "at": "2026-09-11T14:00:00-04:00", "counseled": true},
    {"type": "contraception", "at": "2026-09-11T18:00:00-04:00",
     "methods": ["implant", "male_condom"], "since": "2026-08-01"},
    {"type": "comprehension", "at": "2026-09-11T18:05:00-04:00", "passed": true},
    {"type": "prescription", "id": "rx-1", "at": "2026-09-11T14:10:00-04:00",
     "product": "generic", "doses_mg": [20, 10], "days_supply": 30, "refills": 0}
  ]
})";

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

CliRun RunIsoguard(const std::vector<std::string>& args) {
  std::ostringstream out;
  std::ostringstream err;
  CliRun run;
  run.exit_code = RunCli(args, out, err);
  run.out = out.str();
  run.err = err.str();
  return run;
}

CliRun Evaluate(const fs::path& record) {
  return RunIsoguard({"evaluate", "--at", std::string(kAt), record.string()});
}

// A file in the temporary directory, removed when the test ends. Named after the test and the
// process so that tests run in parallel do not share files.
class TempRecord {
 public:
  explicit TempRecord(std::string_view text, std::string_view suffix = "") {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("isoguard-" + std::string(info->test_suite_name()) + "-" + info->name() + "-" +
             std::to_string(::getpid()) + std::string(suffix) + ".json");
    std::ofstream file(path_, std::ios::binary | std::ios::trunc);
    file.write(text.data(), static_cast<std::streamsize>(text.size()));
    EXPECT_TRUE(file.good()) << path_;
  }
  ~TempRecord() {
    std::error_code ignored;
    fs::remove(path_, ignored);
  }
  TempRecord(const TempRecord&) = delete;
  TempRecord& operator=(const TempRecord&) = delete;

  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string RecordWithEvents(std::string_view events) {
  return "{" + std::string(kPatient) + R"(, "events": [)" + std::string(events) + "]}";
}

// Exit 2, nothing on stdout, and stderr naming `field` (e.g. "events[3].kg").
void ExpectRejected(const CliRun& run, std::string_view field) {
  EXPECT_EQ(run.exit_code, kExitBadInput) << "stdout: " << run.out << "\nstderr: " << run.err;
  EXPECT_NE(run.err.find(field), std::string::npos)
      << "stderr does not name " << field << ": " << run.err;
  EXPECT_EQ(run.out, "") << "a rejected record prints no result";
}

TEST(MalformedCliTest, WellFormedRecordExitsZero) {
  TempRecord record(kWellFormedRecord);
  CliRun run = Evaluate(record.path());
  EXPECT_EQ(run.exit_code, kExitOk) << run.err;
  EXPECT_EQ(run.err, "");
  // One JSON object with the decision.
  boost::system::error_code ec;
  json::value result = json::parse(run.out, ec);
  ASSERT_FALSE(ec) << run.out;
  ASSERT_TRUE(result.is_object()) << run.out;
  const json::value* decision = result.find_pointer("/authorization/decision", ec);
  ASSERT_NE(decision, nullptr) << run.out;
  EXPECT_TRUE(decision->is_string()) << run.out;
}

TEST(MalformedCliTest, MalformedRecordsExitTwoNamingTheEventAndField) {
  struct Case {
    const char* name;
    std::string record;
    const char* field;
  };
  const std::string visit = R"({"type": "visit", "at": "2026-08-20T09:15:00-04:00",
                                "counseled": true})";
  const Case cases[] = {
      {"kg zero",
       RecordWithEvents(visit + "," + visit + "," + visit +
                        R"(, {"type": "weight", "at": "2026-08-20T09:20:00-04:00", "kg": 0})"),
       "events[3].kg"},
      {"time without offset",
       RecordWithEvents(visit + R"(, {"type": "visit", "at": "2026-08-20T09:15:00",
                                     "counseled": true})"),
       "events[1].at"},
      {"unknown event type",
       RecordWithEvents(R"({"type": "vaccination", "at": "2026-08-20T09:15:00-04:00"})"),
       "events[0].type"},
      {"unknown setting", RecordWithEvents(visit + R"(, {"type": "pregnancy_test",
                                     "collected_at": "2026-08-20T09:40:00-04:00",
                                     "result": "negative", "setting": "pharmacy",
                                     "specimen": "urine"})"),
       "events[1].setting"},
      {"dispense of a prescription not in the record",
       RecordWithEvents(R"({"type": "dispense", "at": "2026-09-12T10:00:00-04:00",
                           "prescription": "rx-404"})"),
       "events[0].prescription"},
      {"refills 13", RecordWithEvents(visit + R"(, {"type": "prescription", "id": "rx-1",
                                     "at": "2026-09-11T14:10:00-04:00", "product": "generic",
                                     "doses_mg": [40], "days_supply": 30, "refills": 13})"),
       "events[1].refills"},
      {"PHQ-9 item of 4", RecordWithEvents(R"({"type": "phq9", "at": "2026-08-20T09:25:00-04:00",
                           "items": [0, 1, 0, 0, 4, 0, 0, 0, 0]})"),
       "events[0].items[4]"},
      {"missing required field",
       RecordWithEvents(visit + R"(, {"type": "medication", "at": "2026-08-20T09:15:00-04:00",
                                     "name": "doxycycline"})"),
       "events[1].action"},
      {"enrollment in an unknown program",
       RecordWithEvents(R"({"type": "enrollment", "at": "2026-08-20T09:00:00-04:00",
                           "program": "us-ipledge-1999"})"),
       "events[0].program"},
      {"patient category unknown",
       R"({"patient": {"id": "p-1", "birth_date": "2004-02-11", "jurisdiction": "US",
                       "category": "maybe"}, "events": []})",
       "patient.category"},
      {"not JSON", "{\"patient\": ", "record"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TempRecord record(c.record);
    ExpectRejected(Evaluate(record.path()), c.field);
  }
}

// tests/data/malformed/*.json say where they are malformed: "_expect": {"field", "message"}.
TEST(MalformedCliTest, FixtureRecordsExitTwoNamingTheField) {
  fs::path dir = fs::path(ISOGUARD_TEST_DATA_DIR) / "data" / "malformed";
  size_t count = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().filename().string());
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    json::object expect = json::parse(text.str()).as_object().at("_expect").as_object();
    CliRun run = Evaluate(entry.path());
    ExpectRejected(run, expect.at("field").as_string());
    EXPECT_NE(run.err.find(std::string_view(expect.at("message").as_string())), std::string::npos)
        << run.err;
    ++count;
  }
  EXPECT_GE(count, 5u);
}

// Over the 10 MiB limit: rejected for its size, without parsing 11 MiB of JSON first.
TEST(MalformedCliTest, OversizedFileExitsTwoQuickly) {
  constexpr size_t kElevenMiB = 11 * 1024 * 1024;
  std::string text = RecordWithEvents(R"({"type": "enrollment", "at": "2026-08-20T09:00:00Z"})");
  text.insert(text.size() - 1, R"(, "padding": ")" + std::string(kElevenMiB, 'x') + "\"");
  TempRecord record(text);

  auto start = std::chrono::steady_clock::now();
  CliRun run = Evaluate(record.path());
  auto elapsed = std::chrono::steady_clock::now() - start;

  EXPECT_EQ(run.exit_code, kExitBadInput) << run.err;
  EXPECT_EQ(run.out, "");
  std::string err = run.err;
  for (char& c : err) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  bool mentions_size =
      err.find("byte") != std::string::npos || err.find("mib") != std::string::npos ||
      err.find("size") != std::string::npos || err.find("too large") != std::string::npos;
  EXPECT_TRUE(mentions_size) << "stderr does not say the record is too big: " << run.err;
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count(), 3000);
}

TEST(MalformedCliTest, UnknownProgramExitsTwo) {
  TempRecord record(kWellFormedRecord);
  CliRun run = RunIsoguard({"evaluate", "--at", std::string(kAt), "--program", "us-ipledge-1999",
                            record.path().string()});
  EXPECT_EQ(run.exit_code, kExitBadInput) << run.err;
  EXPECT_NE(run.err.find("us-ipledge-1999"), std::string::npos) << run.err;
  EXPECT_EQ(run.out, "");
}

TEST(MalformedCliTest, AtWithoutAnOffsetExitsTwo) {
  TempRecord record(kWellFormedRecord);
  CliRun run = RunIsoguard({"evaluate", "--at", "2026-09-14T10:00:00", record.path().string()});
  EXPECT_EQ(run.exit_code, kExitBadInput) << run.err;
  EXPECT_NE(run.err.find("--at"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("offset"), std::string::npos) << run.err;
  EXPECT_EQ(run.out, "");
}

TEST(MalformedCliTest, MissingFileExitsTwo) {
  fs::path missing = fs::temp_directory_path() /
                     ("isoguard-no-such-record-" + std::to_string(::getpid()) + ".json");
  ASSERT_FALSE(fs::exists(missing));
  CliRun run = Evaluate(missing);
  EXPECT_EQ(run.exit_code, kExitBadInput) << run.err;
  EXPECT_FALSE(run.err.empty());
  EXPECT_EQ(run.out, "");
}

}  // namespace
}  // namespace isoguard
