// Batch evaluation: order, malformed and oversized lines, threads, files that cannot be read.
#include "cli/batch.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/synth.h"
#include "rules/rulebook_loader.h"

namespace isoguard {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class BatchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto rulebook = LoadRulebook(ISOGUARD_SOURCE_DIR);
    ASSERT_TRUE(rulebook.ok()) << rulebook.error().ToString();
    rulebook_ = new Rulebook(std::move(rulebook).value());
  }
  static void TearDownTestSuite() { delete rulebook_; }

  void TearDown() override {
    for (const auto& path : files_) std::filesystem::remove(path);
  }

  std::string WriteFile(const std::string& content) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string path = (std::filesystem::temp_directory_path() /
                        ("isoguard_batch_test_" + std::string(info->name()) + "_" +
                         std::to_string(files_.size()) + ".ndjson"))
                           .string();
    std::ofstream(path, std::ios::binary) << content;
    files_.push_back(path);
    return path;
  }

  BatchOptions Options(const std::string& path, unsigned threads) const {
    BatchOptions options;
    options.path = path;
    options.evaluate.at = ParseOffsetTime("2026-11-01T12:00:00Z").value().instant;
    const Rulebook* rb = rulebook_;
    options.parse.is_known_program = [rb](std::string_view id) {
      return rb->FindProgram(id) != nullptr;
    };
    options.threads = threads;
    return options;
  }

  struct Run {
    int code;
    std::string out;
    std::string err;
  };
  Run Batch(const BatchOptions& options) const {
    std::ostringstream out, err;
    const int code = RunBatch(*rulebook_, options, out, err);
    return {code, out.str(), err.str()};
  }

  // What `isoguard evaluate` says of one record, with the patient id, as batch must.
  std::string Expected(const std::string& text, const BatchOptions& options) const {
    auto record = ParseRecord(text, options.parse);
    EXPECT_TRUE(record.ok());
    auto evaluation = Evaluate(*rulebook_, *record, options.evaluate);
    EXPECT_TRUE(evaluation.ok());
    return EvaluationToJson(*evaluation, *record, true);
  }

  static std::string Synth(uint64_t patients, uint64_t seed) {
    SynthOptions options;
    options.patients = patients;
    options.seed = seed;
    std::ostringstream out;
    EXPECT_TRUE(WriteSynthCohort(options, out).ok());
    return out.str();
  }

  static Rulebook* rulebook_;
  std::vector<std::string> files_;
};
Rulebook* BatchTest::rulebook_ = nullptr;

constexpr const char* kRecord =
    R"({"patient":{"id":"p-%ID%","birth_date":"2004-02-11","jurisdiction":"US","category":"can_get_pregnant"},)"
    R"("events":[{"type":"enrollment","at":"2026-08-20T09:00:00-04:00"},)"
    R"({"type":"visit","at":"2026-08-20T09:15:00-04:00","counseled":true},)"
    R"({"type":"weight","at":"2026-08-20T09:20:00-04:00","kg":%KG%},)"
    R"({"type":"prescription","id":"rx-1","at":"2026-09-11T14:10:00-04:00","product":"generic","doses_mg":[20,10],"days_supply":30,"refills":0}]})";

std::string Record(const std::string& id, const std::string& kg = "58.5") {
  std::string text = kRecord;
  text.replace(text.find("%ID%"), 4, id);
  text.replace(text.find("%KG%"), 4, kg);
  return text;
}

TEST_F(BatchTest, OneResultPerRecordInOrder) {
  const std::string input = Synth(300, 5);
  const auto path = WriteFile(input);
  const auto options = Options(path, 2);
  const Run run = Batch(options);
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_EQ(run.err, "");
  const auto in = Lines(input);
  const auto out = Lines(run.out);
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    ASSERT_EQ(out[i], Expected(in[i], options)) << "line " << i + 1;
  }
}

TEST_F(BatchTest, MalformedLinesAreReportedAndTheBatchGoesOn) {
  const std::string input = Record("a") + "\n" +        // 1
                            "not json\n" +              // 2
                            "[1, 2]\n" +                // 3
                            Record("b", "-3") + "\n" +  // 4: kg out of range
                            "\n" +                      // 5: empty, skipped
                            "   \t\n" +                 // 6: blank, skipped
                            R"({"patient": {"id": 7}})"
                            "\n" +  // 7: an id that is no string
                            Record("c") +
                            "\r\n" +      // 8: CRLF
                            Record("d");  // 9: no final newline
  const Run run = Batch(Options(WriteFile(input), 2));
  ASSERT_EQ(run.code, 0) << run.err;
  const auto out = Lines(run.out);
  ASSERT_EQ(out.size(), 7u) << run.out;

  auto json = [](const std::string& line) { return boost::json::parse(line).as_object(); };
  EXPECT_EQ(json(out[0]).at("patient"), "p-a");
  EXPECT_TRUE(json(out[0]).contains("authorization"));

  EXPECT_TRUE(json(out[1]).at("patient").is_null());
  EXPECT_EQ(std::string(json(out[1]).at("error").as_string()).rfind("line 2: ", 0), 0u) << out[1];
  EXPECT_TRUE(json(out[2]).at("patient").is_null());
  EXPECT_EQ(std::string(json(out[2]).at("error").as_string()).rfind("line 3: ", 0), 0u) << out[2];

  EXPECT_EQ(json(out[3]).at("patient"), "p-b");
  const std::string kg_error(json(out[3]).at("error").as_string());
  EXPECT_EQ(kg_error.rfind("line 4: ", 0), 0u) << kg_error;
  EXPECT_NE(kg_error.find("events[2].kg"), std::string::npos) << kg_error;

  EXPECT_TRUE(json(out[4]).at("patient").is_null());
  EXPECT_EQ(std::string(json(out[4]).at("error").as_string()).rfind("line 7: ", 0), 0u) << out[4];
  EXPECT_EQ(json(out[5]).at("patient"), "p-c");
  EXPECT_FALSE(json(out[5]).contains("error"));
  EXPECT_EQ(json(out[6]).at("patient"), "p-d");
  EXPECT_FALSE(json(out[6]).contains("error"));
}

// A line over the record size limit is answered with an error, without being held whole, and
// the lines around it are evaluated.
TEST_F(BatchTest, OversizedLineIsAnErrorAndTheBatchGoesOn) {
  auto options = Options("", 1);
  const std::string small = Record("small");
  options.parse.limits.max_bytes = small.size() + 10;
  std::string huge = Record("huge");
  huge.insert(huge.size() - 2, ",\"padding\":\"" + std::string(5'000'000, 'x') + "\"");
  options.path = WriteFile(small + "\n" + huge + "\n" + small + "\n" + huge);
  const Run run = Batch(options);
  ASSERT_EQ(run.code, 0) << run.err;
  const auto out = Lines(run.out);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_NE(out[0].find("\"authorization\""), std::string::npos);
  EXPECT_NE(out[1].find("\"error\":\"line 2: "), std::string::npos) << out[1];
  EXPECT_NE(out[1].find("limit"), std::string::npos) << out[1];
  EXPECT_NE(out[2].find("\"authorization\""), std::string::npos);
  EXPECT_NE(out[3].find("\"error\":\"line 4: "), std::string::npos) << out[3];
}

// At the limit a line is a record; one byte past it, it is not.
TEST_F(BatchTest, LineAtTheLimitIsEvaluatedOnePastIsNot) {
  auto options = Options("", 2);
  const std::string record = Record("edge");
  options.parse.limits.max_bytes = record.size() + 100;
  const std::string at_limit = record + std::string(100, ' ');
  const std::string past_limit = record + std::string(101, ' ');
  options.path = WriteFile(at_limit + "\n" + past_limit + "\n");
  const Run run = Batch(options);
  ASSERT_EQ(run.code, 0) << run.err;
  const auto out = Lines(run.out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_NE(out[0].find("\"authorization\""), std::string::npos) << out[0];
  EXPECT_NE(out[1].find("\"error\":\"line 2: "), std::string::npos) << out[1];
}

TEST_F(BatchTest, FailedWriteExitsOne) {
  const auto path = WriteFile(Synth(20, 4));
  std::ostream broken(nullptr);  // every write fails
  std::ostringstream err;
  EXPECT_EQ(RunBatch(*rulebook_, Options(path, 2), broken, err), 1);
  EXPECT_NE(err.str().find("cannot write"), std::string::npos) << err.str();
}

TEST_F(BatchTest, OneAndTwoThreadsGiveTheSameOutput) {
  // Enough records for many chunks, and malformed lines among them.
  std::string input = Synth(2500, 11);
  input.insert(input.find('\n', input.size() / 3) + 1, "{\"broken\": \n");
  input.insert(input.find('\n', input.size() / 2) + 1, "\n\n");
  const auto path = WriteFile(input);
  const Run one = Batch(Options(path, 1));
  const Run two = Batch(Options(path, 2));
  const Run four = Batch(Options(path, 4));
  ASSERT_EQ(one.code, 0) << one.err;
  ASSERT_EQ(two.code, 0) << two.err;
  EXPECT_EQ(Lines(one.out).size(), 2501u);
  EXPECT_EQ(one.out, two.out);
  EXPECT_EQ(one.out, four.out);
}

TEST_F(BatchTest, EmptyFileGivesNoOutput) {
  const Run run = Batch(Options(WriteFile(""), 2));
  EXPECT_EQ(run.code, 0);
  EXPECT_EQ(run.out, "");
}

TEST_F(BatchTest, MissingFileExitsTwo) {
  const Run run = Batch(Options("/nonexistent/isoguard/cohort.ndjson", 2));
  EXPECT_EQ(run.code, 2);
  EXPECT_EQ(run.out, "");
  EXPECT_NE(run.err.find("cannot open"), std::string::npos) << run.err;
}

TEST_F(BatchTest, DirectoryExitsTwo) {
  const Run run = Batch(Options(std::filesystem::temp_directory_path().string(), 2));
  EXPECT_EQ(run.code, 2) << run.err;
}

TEST_F(BatchTest, ProgressGoesToErrOnly) {
  const std::string input = Synth(50, 3);
  auto options = Options(WriteFile(input), 2);
  const Run quiet = Batch(options);
  options.progress = true;
  const Run loud = Batch(options);
  EXPECT_EQ(quiet.out, loud.out);
  EXPECT_EQ(quiet.err, "");
  EXPECT_NE(loud.err.find("50 records"), std::string::npos) << loud.err;
}

}  // namespace
}  // namespace isoguard
