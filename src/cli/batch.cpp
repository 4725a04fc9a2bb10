#include "cli/batch.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cli/cli.h"
#include "core/json_writer.h"
#include "domain/detail/record_text.h"

namespace isoguard {
namespace {

// Input is cut into chunks of about this many bytes (or lines): large enough that handing a
// chunk between threads costs little against evaluating it, small enough that a few chunks per
// worker bound the memory.
constexpr size_t kChunkTargetBytes = size_t{512} << 10;
constexpr size_t kChunkMaxLines = 2048;
constexpr size_t kReadBlockBytes = size_t{1} << 20;

struct Line {
  uint64_t number = 0;  // 1-based, counting every line of the file
  size_t offset = 0;    // into Chunk::text
  size_t length = 0;
  bool too_long = false;  // over the record size limit: its bytes were not kept
};

struct Chunk {
  uint64_t sequence = 0;
  std::string text;
  std::vector<Line> lines;
  std::string results;  // one line per answered input line
  uint64_t result_count = 0;
  std::string diagnostics;  // internal errors, for stderr
  bool internal_error = false;

  void Clear() {
    text.clear();
    lines.clear();
    results.clear();
    result_count = 0;
    diagnostics.clear();
    internal_error = false;
  }
};

void AppendErrorLine(std::string& out, const std::string* patient_id, uint64_t line_number,
                     std::string_view message) {
  out.append("{\"patient\":");
  if (patient_id != nullptr) {
    AppendJsonString(out, *patient_id);
  } else {
    out.append("null");
  }
  out.append(",\"error\":");
  AppendJsonString(out, "line " + std::to_string(line_number) + ": " + std::string(message));
  out.append("}\n");
}

bool IsBlank(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

// Evaluates one line at a time. Parsing keeps its reusable state per thread (ParseRecordText),
// so a worker holds nothing of its own.
class LineEvaluator {
 public:
  LineEvaluator(const Rulebook& rulebook, const BatchOptions& options)
      : rulebook_(rulebook), options_(options) {}

  void Evaluate(std::string_view text, uint64_t line_number, Chunk& chunk) {
    if (IsBlank(text)) return;  // like an empty line: no record, no result
    detail::RecordTextFailure failure;
    auto record = detail::ParseRecordText(text, options_.parse, detail::kRecordMaxDepth, &failure);
    if (!record.ok()) {
      using Stage = detail::RecordTextFailure::Stage;
      if (failure.stage == Stage::kNotJson) {
        AppendErrorLine(chunk.results, nullptr, line_number,
                        "not valid JSON: " + failure.json_error);
      } else if (failure.stage == Stage::kNotAnObject) {
        AppendErrorLine(chunk.results, nullptr, line_number, "a record must be a JSON object");
      } else {
        // A malformed record still names its patient when it carries a usable id.
        AppendErrorLine(chunk.results, failure.patient_id ? &*failure.patient_id : nullptr,
                        line_number, record.error().ToString());
      }
      ++chunk.result_count;
      return;
    }
    auto evaluation = isoguard::Evaluate(rulebook_, *record, options_.evaluate);
    if (!evaluation.ok()) {
      // An unknown patient time zone or --program: the record's fault or the caller's, and
      // said on the line like a malformed record.
      AppendErrorLine(chunk.results, &record->patient.id, line_number,
                      evaluation.error().ToString());
      ++chunk.result_count;
      return;
    }
    chunk.results.append(EvaluationToJson(*evaluation, *record, /*include_patient_id=*/true));
    chunk.results.push_back('\n');
    ++chunk.result_count;
  }

 private:
  const Rulebook& rulebook_;
  const BatchOptions& options_;
};

// The reader, the workers and the writer, and the queues between them. A chunk is "in flight"
// from the moment the reader takes it until the writer has written it; at most `capacity_`
// chunks are, which bounds memory and lets finished chunks wait in a ring indexed by sequence.
class Pipeline {
 public:
  Pipeline(const Rulebook& rulebook, const BatchOptions& options, unsigned workers)
      : rulebook_(rulebook),
        options_(options),
        workers_(workers),
        capacity_(2 * static_cast<size_t>(workers) + 2),
        finished_(capacity_) {}

  int Run(std::FILE* file, std::ostream& out, std::ostream& err) {
    std::vector<std::thread> threads;
    threads.reserve(workers_ + 1);
    threads.emplace_back([this, file] { ReadLoop(file); });
    for (unsigned i = 0; i < workers_; ++i) threads.emplace_back([this] { WorkLoop(); });
    WriteLoop(out, err);
    for (auto& t : threads) t.join();
    // Every thread has ended: the fields below are no longer shared.
    if (!fatal_error_.empty()) {
      err << "isoguard: " << fatal_error_ << "\n";
      return kExitInternal;
    }
    if (!read_error_.empty()) {
      err << "isoguard: --batch: cannot read '" << options_.path << "': " << read_error_ << "\n";
      return kExitBadInput;
    }
    return internal_errors_ > 0 ? kExitInternal : kExitOk;
  }

 private:
  // ---- reader

  // A chunk to fill, once one may be in flight; nullptr when the batch is being abandoned.
  std::unique_ptr<Chunk> Acquire() {
    std::unique_lock lock(mu_);
    space_cv_.wait(lock, [&] { return in_flight_ < capacity_ || stopping_; });
    if (stopping_) return nullptr;
    ++in_flight_;
    std::unique_ptr<Chunk> chunk;
    if (!spare_.empty()) {
      chunk = std::move(spare_.back());
      spare_.pop_back();
    } else {
      chunk = std::make_unique<Chunk>();
      chunk->text.reserve(kChunkTargetBytes + (size_t{64} << 10));
    }
    chunk->sequence = next_sequence_++;
    return chunk;
  }

  void Submit(std::unique_ptr<Chunk> chunk) {
    {
      std::lock_guard lock(mu_);
      work_.push_back(std::move(chunk));
    }
    work_cv_.notify_one();
  }

  void ReadLoop(std::FILE* file) {
    try {
      ReadChunks(file);
    } catch (const std::exception& e) {
      Abandon(std::string("internal error: reader: ") + e.what());
    }
    {
      std::lock_guard lock(mu_);
      reading_done_ = true;
    }
    work_cv_.notify_all();
    done_cv_.notify_all();
  }

  void ReadChunks(std::FILE* file) {
    const size_t max_bytes = options_.parse.limits.max_bytes;
    std::vector<char> block(kReadBlockBytes);
    std::unique_ptr<Chunk> chunk = Acquire();
    if (!chunk) return;
    uint64_t line_number = 0;
    size_t line_start = 0;    // the current line's offset in chunk->text
    size_t line_length = 0;   // its length so far, counting bytes not kept
    bool discarding = false;  // the current line passed the limit: its bytes are dropped

    // Ends the current line; hands the chunk over when it is full. False when abandoned.
    auto end_line = [&]() -> bool {
      ++line_number;
      if (discarding) {
        chunk->lines.push_back({line_number, 0, line_length, true});
      } else if (line_length > 0) {
        chunk->lines.push_back({line_number, line_start, line_length, false});
      }
      // An empty line is no record: it is skipped, and gives no result line. Line numbers still
      // count it, so that errors point at the right line of the file.
      discarding = false;
      line_length = 0;
      line_start = chunk->text.size();
      if (chunk->text.size() >= kChunkTargetBytes || chunk->lines.size() >= kChunkMaxLines) {
        Submit(std::move(chunk));
        chunk = Acquire();
        if (!chunk) return false;
        line_start = 0;
      }
      return true;
    };

    for (;;) {
      const size_t n = std::fread(block.data(), 1, block.size(), file);
      if (n == 0) {
        if (std::ferror(file)) {
          const int error = errno;
          std::lock_guard lock(mu_);
          read_error_ = error != 0 ? std::strerror(error) : "read error";
        }
        break;
      }
      size_t pos = 0;
      while (pos < n) {
        const char* begin = block.data() + pos;
        const auto* newline = static_cast<const char*>(std::memchr(begin, '\n', n - pos));
        const size_t segment = newline != nullptr ? static_cast<size_t>(newline - begin) : n - pos;
        if (!discarding) {
          if (line_length + segment > max_bytes) {
            // Too long to be a record: forget what was kept and skip to the line's end.
            discarding = true;
            chunk->text.resize(line_start);
          } else {
            chunk->text.append(begin, segment);
          }
        }
        line_length += segment;
        if (newline == nullptr) break;
        pos += segment + 1;
        if (!end_line()) return;
      }
    }
    if (line_length > 0 || discarding) {
      if (!end_line()) return;
    }
    Submit(std::move(chunk));
  }

  // ---- workers

  void WorkLoop() {
    try {
      LineEvaluator evaluator(rulebook_, options_);
      for (;;) {
        std::unique_ptr<Chunk> chunk;
        {
          std::unique_lock lock(mu_);
          work_cv_.wait(lock, [&] { return !work_.empty() || reading_done_ || stopping_; });
          if (stopping_ || work_.empty()) return;
          chunk = std::move(work_.front());
          work_.pop_front();
        }
        Process(evaluator, *chunk);
        const size_t slot = chunk->sequence % capacity_;
        {
          std::lock_guard lock(mu_);
          finished_[slot] = std::move(chunk);
        }
        done_cv_.notify_all();
      }
    } catch (const std::exception& e) {
      Abandon(std::string("internal error: worker: ") + e.what());
    }
  }

  void Process(LineEvaluator& evaluator, Chunk& chunk) {
    const std::string_view text(chunk.text);
    for (const Line& line : chunk.lines) {
      if (line.too_long) {
        AppendErrorLine(chunk.results, nullptr, line.number,
                        "record: is larger than the limit of " +
                            std::to_string(options_.parse.limits.max_bytes) + " bytes");
        ++chunk.result_count;
        continue;
      }
      try {
        evaluator.Evaluate(text.substr(line.offset, line.length), line.number, chunk);
      } catch (const std::exception& e) {
        // A fault of the engine on one record: answer the line, go on, and fail the run.
        const std::string message = std::string("internal error: ") + e.what();
        AppendErrorLine(chunk.results, nullptr, line.number, message);
        ++chunk.result_count;
        chunk.internal_error = true;
        chunk.diagnostics +=
            "isoguard: line " + std::to_string(line.number) + ": " + message + "\n";
      }
    }
  }

  // ---- writer (the calling thread)

  void WriteLoop(std::ostream& out, std::ostream& err) {
    using Clock = std::chrono::steady_clock;
    const auto started = Clock::now();
    auto last_report = started;
    uint64_t records = 0;
    uint64_t next = 0;
    for (;;) {
      std::unique_ptr<Chunk> chunk;
      {
        std::unique_lock lock(mu_);
        done_cv_.wait(lock, [&] {
          return finished_[next % capacity_] != nullptr || stopping_ ||
                 (reading_done_ && next == next_sequence_);
        });
        if (stopping_) break;
        if (finished_[next % capacity_] == nullptr) break;  // everything read was written
        chunk = std::move(finished_[next % capacity_]);
      }
      out.write(chunk->results.data(), static_cast<std::streamsize>(chunk->results.size()));
      records += chunk->result_count;
      if (chunk->internal_error) {
        ++internal_errors_;
        err << chunk->diagnostics;
      }
      chunk->Clear();
      {
        std::lock_guard lock(mu_);
        spare_.push_back(std::move(chunk));
        --in_flight_;
      }
      space_cv_.notify_one();
      ++next;
      if (!out) {
        Abandon("cannot write the results");
        break;
      }
      if (options_.progress) {
        const auto now = Clock::now();
        if (now - last_report >= std::chrono::milliseconds(100)) {
          last_report = now;
          ReportProgress(err, records, now - started, false);
        }
      }
    }
    out.flush();
    if (!out) Abandon("cannot write the results");
    if (options_.progress) ReportProgress(err, records, Clock::now() - started, true);
  }

  static void ReportProgress(std::ostream& err, uint64_t records,
                             std::chrono::steady_clock::duration elapsed, bool last) {
    const double seconds = std::chrono::duration<double>(elapsed).count();
    const auto rate =
        static_cast<uint64_t>(seconds > 0 ? static_cast<double>(records) / seconds : 0.0);
    err << "\r" << records << " records, " << rate << "/s" << (last ? "\n" : "") << std::flush;
  }

  // Stops every thread: a failed write or a fault outside one record.
  void Abandon(std::string reason) {
    {
      std::lock_guard lock(mu_);
      if (fatal_error_.empty()) fatal_error_ = std::move(reason);
      stopping_ = true;
    }
    space_cv_.notify_all();
    work_cv_.notify_all();
    done_cv_.notify_all();
  }

  const Rulebook& rulebook_;
  const BatchOptions& options_;
  const unsigned workers_;
  const size_t capacity_;

  std::mutex mu_;
  std::condition_variable space_cv_;  // the reader waits for a chunk to be written
  std::condition_variable work_cv_;   // workers wait for chunks to evaluate
  std::condition_variable done_cv_;   // the writer waits for the next chunk in order
  std::deque<std::unique_ptr<Chunk>> work_;
  std::vector<std::unique_ptr<Chunk>> finished_;  // slot = sequence % capacity_
  std::vector<std::unique_ptr<Chunk>> spare_;     // written chunks, reused for their buffers
  size_t in_flight_ = 0;
  uint64_t next_sequence_ = 0;
  bool reading_done_ = false;
  bool stopping_ = false;
  std::string read_error_;
  std::string fatal_error_;
  uint64_t internal_errors_ = 0;  // the writer's
};

}  // namespace

int RunBatch(const Rulebook& rulebook, const BatchOptions& options, std::ostream& out,
             std::ostream& err) {
  std::FILE* file = std::fopen(options.path.c_str(), "rb");
  if (file == nullptr) {
    err << "isoguard: --batch: cannot open '" << options.path << "': " << std::strerror(errno)
        << "\n";
    return kExitBadInput;
  }
  unsigned workers = options.threads;
  if (workers == 0) workers = std::max(1u, std::thread::hardware_concurrency());
  int code;
  try {
    Pipeline pipeline(rulebook, options, workers);
    code = pipeline.Run(file, out, err);
  } catch (const std::exception& e) {
    err << "isoguard: internal error: " << e.what() << "\n";
    code = kExitInternal;
  }
  std::fclose(file);
  return code;
}

}  // namespace isoguard
