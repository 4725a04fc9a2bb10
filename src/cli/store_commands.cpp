#include "cli/store_commands.h"

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cli/cli.h"
#include "cli/cli_support.h"
#include "core/json_writer.h"
#include "store/entry_codec.h"
#include "store/event_store.h"
#include "store/sqlite/sqlite_event_store.h"

namespace isoguard {
namespace {

namespace json = boost::json;

const store::Actor& ImportActor() {
  static const store::Actor actor{"import", "system", "cli"};
  return actor;
}

std::string ImportKey(std::string_view patient_id) { return "import:" + std::string(patient_id); }

bool IsBlank(std::string_view text) {
  return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// One line turned into the append that imports it, checked as the store will check it: the
// record as the engine parses it (errors name "events[3].kg", as for evaluate), then the
// store's own limits (patient id length, entries per append).
Result<store::AppendRequest> PrepareLine(std::string_view text, const ParseOptions& parse) {
  if (text.size() > parse.limits.max_bytes) {
    return Error::BadInput("the record is larger than " + std::to_string(parse.limits.max_bytes) +
                           " bytes");
  }
  boost::system::error_code ec;
  json::value value = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec) return Error::BadInput("not valid JSON: " + ec.message());
  if (!value.is_object()) return Error::BadInput("a record must be a JSON object");
  const json::object& object = value.get_object();
  auto record = ParseRecordObject(object, parse);
  if (!record.ok()) return record.error();

  store::AppendRequest request;
  request.patient_id = record->patient.id;
  request.expected_version = 0;
  request.actor = ImportActor();
  request.idempotency_key = ImportKey(record->patient.id);
  // The patient entry is the record's patient object with "type" in front; the parser has
  // checked that "patient" is an object and "events", when present, an array of objects.
  json::object patient;
  patient["type"] =
      json::string_view(store::kPatientEntryType.data(), store::kPatientEntryType.size());
  for (const auto& field : object.at("patient").get_object()) {
    if (field.key() != "type") patient[field.key()] = field.value();
  }
  request.entries.push_back(json::serialize(patient));
  if (const json::value* events = object.if_contains("events");
      events != nullptr && events->is_array()) {
    for (const json::value& event : events->get_array()) {
      request.entries.push_back(json::serialize(event));
    }
  }
  auto checked = store::CheckAppend(request, parse);
  if (!checked.ok()) return checked.error();
  return request;
}

struct Line {
  uint64_t number = 0;
  std::string text;
};

// A bounded queue of lines from the reader to the workers: memory stays flat however long the
// file is.
class LineQueue {
 public:
  explicit LineQueue(size_t capacity) : capacity_(capacity) {}

  void Push(Line line) {
    std::unique_lock lock(mu_);
    room_.wait(lock, [&] { return lines_.size() < capacity_; });
    lines_.push_back(std::move(line));
    ready_.notify_one();
  }
  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    ready_.notify_all();
  }
  std::optional<Line> Pop() {
    std::unique_lock lock(mu_);
    ready_.wait(lock, [&] { return closed_ || !lines_.empty(); });
    if (lines_.empty()) return std::nullopt;
    Line line = std::move(lines_.front());
    lines_.pop_front();
    room_.notify_one();
    return line;
  }
  // Up to `max_lines` lines (at least one, unless the queue is closed and empty).
  bool PopMany(size_t max_lines, std::vector<Line>& out) {
    out.clear();
    std::unique_lock lock(mu_);
    ready_.wait(lock, [&] { return closed_ || !lines_.empty(); });
    while (!lines_.empty() && out.size() < max_lines) {
      out.push_back(std::move(lines_.front()));
      lines_.pop_front();
    }
    room_.notify_all();
    return !out.empty();
  }

 private:
  std::mutex mu_;
  std::condition_variable ready_, room_;
  std::deque<Line> lines_;
  size_t capacity_;
  bool closed_ = false;
};

// One pass over the file: with `write`, each good line is appended; without, lines are only
// checked (the first pass of --atomic), including against streams already in the store.
class ImportPass {
 public:
  ImportPass(const ImportOptions& options, store::EventStore& event_store, bool write,
             std::ostream& err)
      : options_(options), store_(event_store), write_(write), err_(err) {
    // The SQLite store takes whole records prepared on the workers' threads, many at a time
    // (SqliteEventStore::PrepareRecord, AppendPrepared); any other store, one append each.
    if (write_) bulk_ = dynamic_cast<store::SqliteEventStore*>(&event_store);
    record_options_.actor = ImportActor();
    record_options_.idempotency_key_prefix = "import:";
    record_options_.parse = options.parse;
  }

  // False when the file cannot be read (reported on err).
  bool Run() {
    std::error_code ec;
    if (std::filesystem::is_directory(options_.path, ec)) {
      err_ << "isoguard: " << options_.path << ": is a directory, not an NDJSON file\n";
      return false;
    }
    std::ifstream file(options_.path, std::ios::binary);
    if (!file) {
      err_ << "isoguard: " << options_.path << ": cannot open the file\n";
      return false;
    }
    const auto size = std::filesystem::file_size(options_.path, ec);
    const uint64_t total_bytes = ec ? 0 : static_cast<uint64_t>(size);

    // Bulk: several workers, each preparing a group of records while the others' groups are
    // being committed, so that the preparing (parse, seal, hash) and the writer's inserts keep
    // both cores busy (8 rather than 3: 11.0 s against 12.5 s for 30,000 records, measured
    // under load). Otherwise: one append in flight per worker.
    const unsigned threads = std::max(1u, options_.threads);
    const unsigned workers_wanted = bulk_ != nullptr ? std::min(threads, kBulkWorkers) : threads;
    LineQueue queue(bulk_ != nullptr ? 2 * kBulkGroupLines * workers_wanted : 4 * threads);
    std::vector<std::thread> workers;
    for (unsigned i = 0; i < workers_wanted; ++i) {
      if (bulk_ != nullptr) {
        workers.emplace_back([this, &queue] {
          std::vector<Line> group;
          while (queue.PopMany(kBulkGroupLines, group)) ProcessGroup(group);
        });
        continue;
      }
      workers.emplace_back([this, &queue] {
        while (auto line = queue.Pop()) {
          // An exception must not end the process from a worker thread: it fails the line.
          try {
            Process(*line);
          } catch (const std::exception& e) {
            Failed(line->number, "", std::string("internal error: ") + e.what());
          }
        }
      });
    }
    uint64_t number = 0, bytes = 0;
    auto last_progress = std::chrono::steady_clock::now();
    bool read_failed = false;
    for (std::string text; std::getline(file, text);) {
      ++number;
      bytes += text.size() + 1;
      if (IsBlank(text)) continue;
      queue.Push(Line{number, std::move(text)});
      text.clear();
      if (options_.progress) {
        const auto now = std::chrono::steady_clock::now();
        if (now - last_progress >= std::chrono::milliseconds(250)) {
          last_progress = now;
          Progress(bytes, total_bytes);
        }
      }
    }
    if (file.bad()) read_failed = true;
    queue.Close();
    for (auto& worker : workers) worker.join();
    if (options_.progress) {
      Progress(total_bytes, total_bytes);
      err_ << "\n";
    }
    if (read_failed) {
      err_ << "isoguard: " << options_.path << ": read error after line " << number << "\n";
      return false;
    }
    return true;
  }

  uint64_t imported() const { return imported_; }
  uint64_t present() const { return present_; }
  uint64_t failed() const { return failed_; }

 private:
  static constexpr unsigned kBulkWorkers = 8;
  static constexpr size_t kBulkGroupLines = 256;

  // Two lines for one patient would share an idempotency key: the second to reach the store
  // would be "already present" without being written. Lines are processed concurrently, so the
  // line that is refused is the one that comes second here, not necessarily the later one in
  // the file; the report names the line whose record was kept, so that it is true either way.
  // True when `number` is the first line of its patient seen so far.
  bool FirstLineOf(const std::string& id, uint64_t number) {
    std::optional<uint64_t> earlier;
    {
      std::lock_guard lock(mu_);
      auto [it, inserted] = first_line_.emplace(id, number);
      if (!inserted) earlier = it->second;
    }
    if (!earlier) return true;
    Failed(number, id,
           "the patient is also on line " + std::to_string(*earlier) +
               (write_ ? ", whose record is the one imported" : "") + "; one record each");
    return false;
  }

  void Appended(uint64_t number, const std::string& id, const Result<store::AppendResult>& r) {
    if (!r.ok()) {
      std::string message = r.error().ToString();
      if (r.error().kind == ErrorKind::kConflict) {
        message = "the store already holds a stream for this patient that no import wrote (" +
                  message + ")";
      }
      return Failed(number, id, message);
    }
    std::lock_guard lock(mu_);
    ++(r->replayed ? present_ : imported_);
  }

  void Process(const Line& line) {
    auto request = PrepareLine(line.text, options_.parse);
    if (!request.ok()) return Failed(line.number, "", request.error().ToString());
    const std::string& id = request->patient_id;
    if (!FirstLineOf(id, line.number)) return;
    if (!write_) return Check(line.number, *request);
    Appended(line.number, id, store_.Append(*request));
  }

  // The bulk path: each record checked once and sealed here, then the group appended at once.
  void ProcessGroup(std::vector<Line>& group) {
    std::vector<store::PreparedAppend> prepared;
    std::vector<uint64_t> numbers;
    prepared.reserve(group.size());
    numbers.reserve(group.size());
    for (Line& line : group) {
      try {
        auto p = store::SqliteEventStore::PrepareRecord(line.text, record_options_);
        if (!p.ok()) {
          Failed(line.number, "", p.error().ToString());
          continue;
        }
        if (!FirstLineOf(p->patient_id(), line.number)) continue;
        prepared.push_back(std::move(*p));
        numbers.push_back(line.number);
      } catch (const std::exception& e) {
        Failed(line.number, "", std::string("internal error: ") + e.what());
      }
      std::string().swap(line.text);  // sealed now: the text's memory can go
    }
    if (prepared.empty()) return;
    try {
      const auto results = bulk_->AppendPrepared(prepared);
      for (size_t i = 0; i < results.size(); ++i) {
        Appended(numbers[i], prepared[i].patient_id(), results[i]);
      }
    } catch (const std::exception& e) {
      // Nothing of the group is known to be written: a re-run writes what is missing.
      for (size_t i = 0; i < prepared.size(); ++i) {
        Failed(numbers[i], prepared[i].patient_id(), std::string("internal error: ") + e.what());
      }
    }
  }

  // The --atomic pass: a stream that exists already must be this import's own (replayed on
  // the write pass), else the append would be refused as a conflict.
  void Check(uint64_t number, const store::AppendRequest& request) {
    auto existing = store_.ReadStream(request.patient_id);
    if (!existing.ok()) return Failed(number, request.patient_id, existing.error().ToString());
    if (existing->version > 0 &&
        (existing->entries.empty() ||
         existing->entries.front().idempotency_key != request.idempotency_key)) {
      return Failed(number, request.patient_id,
                    "the store already holds a stream for this patient that no import wrote");
    }
    std::lock_guard lock(mu_);
    ++(existing->version > 0 ? present_ : imported_);
  }

  void Failed(uint64_t number, const std::string& patient_id, const std::string& message) {
    std::lock_guard lock(mu_);
    ++failed_;
    err_ << "isoguard: " << options_.path << ": line " << number << ": ";
    if (!patient_id.empty()) err_ << "patient " << patient_id << ": ";
    err_ << message << "\n";
  }

  void Progress(uint64_t bytes, uint64_t total_bytes) {
    std::lock_guard lock(mu_);
    err_ << "\risoguard import: ";
    if (total_bytes > 0) err_ << (100 * std::min(bytes, total_bytes) / total_bytes) << "% ";
    err_ << "(" << imported_ << " imported, " << present_ << " already present, " << failed_
         << " failed)" << std::flush;
  }

  const ImportOptions& options_;
  store::EventStore& store_;
  const bool write_;
  store::SqliteEventStore* bulk_ = nullptr;
  store::RecordAppendOptions record_options_;
  std::ostream& err_;
  std::mutex mu_;  // guards the counters, first_line_ and err_
  std::unordered_map<std::string, uint64_t> first_line_;
  uint64_t imported_ = 0, present_ = 0, failed_ = 0;
};

void Summary(std::ostream& err, uint64_t imported, uint64_t present, uint64_t failed) {
  err << "isoguard import: " << imported << " imported, " << present << " already present, "
      << failed << " failed\n";
}

}  // namespace

int RunImport(const ImportOptions& options, std::ostream& err) {
  auto opened = OpenStore(options.db, options.parse, /*must_exist=*/false);
  if (!opened.ok()) return Fail(err, opened.error());
  store::EventStore& event_store = **opened;
  if (options.atomic) {
    // Everything is checked before anything is written. What the check cannot foresee is a
    // failure of the store itself (a full disk) during the write pass; a re-run then writes
    // what is missing.
    ImportPass check(options, event_store, /*write=*/false, err);
    if (!check.Run()) return kExitBadInput;
    if (check.failed() > 0) {
      err << "isoguard import: --atomic: nothing was written\n";
      Summary(err, 0, 0, check.failed());
      return kExitBadInput;
    }
  }
  // A SQLite store writes the import with a rollback journal when the file is its alone
  // (SqliteEventStore::BulkImportScope): each page written once instead of twice.
  std::optional<store::SqliteEventStore::BulkImportScope> bulk;
  if (auto* sqlite = dynamic_cast<store::SqliteEventStore*>(&event_store)) bulk.emplace(*sqlite);
  ImportPass pass(options, event_store, /*write=*/true, err);
  const bool read = pass.Run();
  bulk.reset();
  if (!read) return kExitBadInput;
  Summary(err, pass.imported(), pass.present(), pass.failed());
  return pass.failed() == 0 ? kExitOk : kExitBadInput;
}

namespace {

// A stream as a record: the patient object of the latest patient entry (without its "type"),
// the events as stored, in stream order.
Result<std::string> StreamRecord(const store::Stream& stream) {
  json::object patient;
  json::array events;
  bool has_patient = false;
  for (const store::StoredEntry& entry : stream.entries) {
    if (entry.erased) return Error::NotFound("the patient was erased; the stream is unreadable");
    boost::system::error_code ec;
    json::value value = json::parse(entry.json, ec);
    if (ec || !value.is_object()) {
      return Error::Internal("version " + std::to_string(entry.version) + " is not a JSON object");
    }
    if (entry.type == store::kPatientEntryType) {
      patient = std::move(value.get_object());
      patient.erase("type");
      has_patient = true;
    } else {
      events.push_back(std::move(value));
    }
  }
  if (!has_patient) return Error::Internal("the stream has no patient entry");
  json::object record;
  record["patient"] = std::move(patient);
  record["events"] = std::move(events);
  return json::serialize(record);
}

}  // namespace

namespace {

// A state's record as one line: stored entries are kept as their callers wrote them, and JSON
// whitespace may hold line breaks (never a string: those are escaped), which NDJSON cannot.
std::string OneLine(std::string record_json) {
  if (record_json.find_first_of("\r\n") == std::string::npos) return record_json;
  boost::system::error_code ec;
  json::value value = json::parse(record_json, ec);
  return ec ? record_json : json::serialize(value);  // opened from a sealed state: it parses
}

// Export from the projection: the streams in the order they began, each patient's state
// read as one row (already the record, folded as the entries were appended).
int ExportStates(store::SqliteEventStore& event_store, std::ostream& out, std::ostream& err) {
  int64_t after = 0;
  uint64_t exported = 0, skipped = 0;
  for (;;) {
    auto page = event_store.ListStreams(after, store::kMaxReadAllEntries);
    if (!page.ok()) return Fail(err, page.error());
    if (page->empty()) break;
    for (const auto& start : *page) {
      after = start.position;
      auto state = event_store.ReadState(start.patient_id);
      if (!state.ok()) {
        Error e = state.error();
        if (e.field.empty()) e.field = "patient " + start.patient_id;
        return Fail(err, e);
      }
      if (state->erased) {
        err << "isoguard export: patient " << start.patient_id
            << ": the patient was erased; the stream is unreadable; skipped\n";
        ++skipped;
        continue;
      }
      out << OneLine(std::move(state->record_json)) << '\n';
      if (!out) return Fail(err, Error::Internal("cannot write the export"));
      ++exported;
    }
  }
  out.flush();
  err << "isoguard export: " << exported << " patients";
  if (skipped > 0) err << ", " << skipped << " erased and skipped";
  err << "\n";
  return kExitOk;
}

}  // namespace

int RunExport(const std::string& db, std::ostream& out, std::ostream& err) {
  auto opened = OpenStore(db, ParseOptions{}, /*must_exist=*/true);
  if (!opened.ok()) return Fail(err, opened.error());
  store::EventStore& event_store = **opened;
  if (auto* sqlite = dynamic_cast<store::SqliteEventStore*>(&event_store)) {
    return ExportStates(*sqlite, out, err);
  }
  // The log is walked for the streams' first entries (version 1), in position order; each
  // stream is then read whole. Memory holds one page of the log and one stream.
  int64_t after = 0;
  uint64_t exported = 0, skipped = 0;
  for (;;) {
    auto page = event_store.ReadAll(after, store::kMaxReadAllEntries);
    if (!page.ok()) return Fail(err, page.error());
    if (page->empty()) break;
    for (const store::StoredEntry& entry : *page) {
      after = entry.position;
      if (entry.version != 1) continue;
      auto stream = event_store.ReadStream(entry.patient_id);
      if (!stream.ok()) return Fail(err, stream.error());
      auto record = StreamRecord(*stream);
      if (!record.ok()) {
        if (record.error().kind != ErrorKind::kNotFound) {
          Error e = record.error();
          e.field = "patient " + entry.patient_id;
          return Fail(err, e);
        }
        err << "isoguard export: patient " << entry.patient_id << ": " << record.error().message
            << "; skipped\n";
        ++skipped;
        continue;
      }
      out << *record << '\n';
      if (!out) return Fail(err, Error::Internal("cannot write the export"));
      ++exported;
    }
  }
  out.flush();
  err << "isoguard export: " << exported << " patients";
  if (skipped > 0) err << ", " << skipped << " erased and skipped";
  err << "\n";
  return kExitOk;
}

int RunVerify(const std::string& db, std::ostream& out, std::ostream& err) {
  auto opened = OpenStore(db, ParseOptions{}, /*must_exist=*/true);
  if (!opened.ok()) return Fail(err, opened.error());
  auto report = (*opened)->Verify();
  if (!report.ok()) return Fail(err, report.error());
  out << VerifyReportJson(*report) << "\n";
  return report->first_problem ? kExitInternal : kExitOk;
}

}  // namespace isoguard
