// The record parser's text entry point with what a caller needs to word failures its own way.
//
// ParseRecord (record_parser.h) is this with Boost.JSON's depth limit of 64 and no report.
// Batch evaluation answers every line of a file and says of a bad one whether it was JSON at
// all and, when it was, whose record it was; it uses this to learn both without parsing the
// line twice.
//
// Thread safety: as ParseRecord; each thread reuses its own scratch tables.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "domain/record.h"
#include "domain/record_parser.h"

namespace isoguard::detail {

// How ParseRecordText failed.
struct RecordTextFailure {
  enum class Stage {
    kNone,         // it did not fail
    kTooLarge,     // over RecordLimits::max_bytes; the text was not read
    kNotJson,      // not valid JSON; `json_error` is Boost.JSON's message
    kNotAnObject,  // valid JSON, but not an object
    kMalformed,    // a JSON object that breaks the record format
  };
  Stage stage = Stage::kNone;
  std::string json_error;
  // kMalformed: the record's "patient"."id" when it is a non-empty string of at most
  // 4 × max_string_chars bytes (a usable name for the record even though the record is
  // malformed, perhaps in that very field); nullopt otherwise.
  std::optional<std::string> patient_id;
};

// ParseRecord with a chosen JSON nesting limit. `failure`, when not null, says how it failed.
Result<Record> ParseRecordText(std::string_view text, const ParseOptions& options, size_t max_depth,
                               RecordTextFailure* failure);

// The nesting limit ParseRecord applies.
inline constexpr size_t kRecordMaxDepth = 64;

}  // namespace isoguard::detail
