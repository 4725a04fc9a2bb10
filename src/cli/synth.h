// A synthetic cohort of isotretinoin patient records, for load tests, benchmarks and demos.
//
// The records follow the contract (docs/record-format.md) and tell plausible stories: patients
// in the US (about 70%), the EU and the UK, who can or cannot get pregnant, at every stage from
// just enrolled through monthly treatment cycles to ended courses and second courses. Each story
// is dated, and follows the rules of the program in force on each date (US tests in a lab before
// 2026-08-08, home tests after; the UK second prescriber before 2026-01-22), so that records of
// both generations of a jurisdiction's program are in the cohort. Lapses are mixed in at
// realistic rates: late or missing tests, missed windows, missing attestations, insufficient
// contraception, abnormal labs, low mood, interacting medications, corrections.
//
// Deterministic: the record of patient i depends only on (seed, i, as_of), through the
// generator's own PRNG (std:: distributions differ between standard libraries), so a cohort can
// be generated in parallel and reproduced anywhere.
//
// Thread safety: a SynthCohort is immutable after Create; AppendRecord may be called from many
// threads at once.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/time.h"

namespace isoguard {

struct SynthOptions {
  uint64_t patients = 1000;
  uint64_t seed = 1;
  // The cohort's "today": no event is later than the day before it. Fixed by default so that
  // the output does not depend on when it is generated.
  LocalDate as_of = LocalDate::FromYmd(2026, 11, 1);
};

class SynthCohort {
 public:
  // Errors (kInternal) when a time zone the generator uses is missing from the tz database.
  static Result<SynthCohort> Create(const SynthOptions& options);

  // Appends patient `index`'s record as one line of JSON, without the newline.
  void AppendRecord(uint64_t index, std::string& out) const;
  std::string Record(uint64_t index) const;

  const SynthOptions& options() const { return options_; }

  struct ZoneTable;  // the generator's time zones, with their offsets by local date

 private:
  SynthCohort(SynthOptions options, std::shared_ptr<const std::vector<ZoneTable>> zones);

  SynthOptions options_;
  std::shared_ptr<const std::vector<ZoneTable>> zones_;
};

// Writes options.patients records as NDJSON: one record per line, patient 0 first.
Status WriteSynthCohort(const SynthOptions& options, std::ostream& out);

}  // namespace isoguard
