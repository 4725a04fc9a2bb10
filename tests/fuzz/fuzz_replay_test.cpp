// Every seed of the fuzz corpora and every input that once failed a fuzz target
// (fuzz/regressions/<target>/) goes through the target again here, under this build's
// sanitizers: a crash, a sanitizer report or a finding (an HTTP 500, a hang) fails the suite.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz/fuzz_targets.h"

namespace isoguard::fuzz {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> Inputs(const std::string& target) {
  std::vector<fs::path> files;
  for (const char* kind : {"corpus", "regressions"}) {
    const fs::path dir = fs::path(ISOGUARD_SOURCE_DIR) / "fuzz" / kind / target;
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string Slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void Replay(const std::string& target, int (*fn)(std::string_view), size_t at_least) {
  SetDataDir(ISOGUARD_SOURCE_DIR);
  const auto files = Inputs(target);
  EXPECT_GE(files.size(), at_least) << "the seed corpus of '" << target << "' is missing";
  for (const fs::path& file : files) {
    SCOPED_TRACE(file.string());
    EXPECT_EQ(fn(Slurp(file)), 0);
  }
}

TEST(FuzzReplay, RecordCorpusAndRegressions) { Replay("record", FuzzRecord, 20); }

TEST(FuzzReplay, ProgramCorpusAndRegressions) { Replay("program", FuzzProgram, 5); }

TEST(FuzzReplay, FhirCorpusAndRegressions) { Replay("fhir", FuzzFhir, 5); }

TEST(FuzzReplay, HttpCorpusAndRegressions) {
  Replay("http", FuzzHttp, 30);
  StopHttpTarget();
}

}  // namespace
}  // namespace isoguard::fuzz
