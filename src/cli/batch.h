// Batch evaluation: `isoguard evaluate --batch FILE.ndjson`. One record per line in, one result
// per line out, in the input's order (docs/record-format.md, "Batch").
//
// Streaming with bounded memory: a reader thread cuts the file into chunks of lines, a pool of
// workers parses and evaluates the chunks, and the calling thread writes the results in input
// order. At most a fixed number of chunks are in flight, so memory does not grow with the file;
// a line longer than the record size limit is reported as an error without being held whole.
//
// Thread safety: RunBatch may be called from several threads with different options; the
// rulebook is only read.
#pragma once

#include <iosfwd>
#include <string>

#include "domain/record_parser.h"
#include "rules/evaluate.h"
#include "rules/rulebook.h"

namespace isoguard {

struct BatchOptions {
  std::string path;
  EvaluateOptions evaluate;
  ParseOptions parse;
  unsigned threads = 0;   // workers; 0 = std::thread::hardware_concurrency()
  bool progress = false;  // a progress line on `err` (the CLI sets it when stderr is a TTY)
};

// Writes one result line per non-empty input line to `out`: the evaluation with "patient", or
// {"patient": <id or null>, "error": "line N: ..."} for a line that is not a valid record.
// Returns the exit code: 0 when every line was answered (malformed lines included), 2 when the
// file cannot be opened or read, 1 on an internal error (a failed write, an engine fault).
int RunBatch(const Rulebook& rulebook, const BatchOptions& options, std::ostream& out,
             std::ostream& err);

}  // namespace isoguard
