// Structured logs: one JSON object per line, e.g.
//   {"ts":"2026-11-26T05:28:15.123Z","level":"info","msg":"request","request_id":"...",...}
// Each line is written whole with a single write() to a file descriptor (stderr by default),
// so lines from concurrent threads never interleave (for pipes, lines up to PIPE_BUF bytes; for
// files opened with O_APPEND, any line). Logger is thread-safe and has no lock.
#pragma once

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace isoguard::server {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// One key/value of a log line. Keys and string values are copied into the line at once, so
// temporaries are fine.
struct LogField {
  enum class Type { kString, kInt, kUint, kDouble, kBool };

  LogField(std::string_view k, std::string_view v) : key(k), type(Type::kString), text(v) {}
  LogField(std::string_view k, const char* v) : key(k), type(Type::kString), text(v) {}
  LogField(std::string_view k, const std::string& v) : key(k), type(Type::kString), text(v) {}
  LogField(std::string_view k, bool v) : key(k), type(Type::kBool), boolean(v) {}
  LogField(std::string_view k, double v) : key(k), type(Type::kDouble), real(v) {}
  template <std::signed_integral I>
  LogField(std::string_view k, I v) : key(k), type(Type::kInt), integer(v) {}
  template <std::unsigned_integral U>
  requires(!std::same_as<U, bool>) LogField(std::string_view k, U v)
      : key(k), type(Type::kUint), unsigned_integer(v) {}

  std::string_view key;
  Type type;
  std::string_view text;
  bool boolean = false;
  double real = 0;
  long long integer = 0;
  unsigned long long unsigned_integer = 0;
};

class Logger {
 public:
  // Writes to `fd` (not owned; -1 discards everything) lines at `min_level` and above.
  explicit Logger(int fd = 2, LogLevel min_level = LogLevel::kInfo)
      : fd_(fd), min_level_(min_level) {}

  void Log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields = {});
  void Info(std::string_view msg, std::initializer_list<LogField> fields = {}) {
    Log(LogLevel::kInfo, msg, fields);
  }
  void Warn(std::string_view msg, std::initializer_list<LogField> fields = {}) {
    Log(LogLevel::kWarn, msg, fields);
  }
  void Error(std::string_view msg, std::initializer_list<LogField> fields = {}) {
    Log(LogLevel::kError, msg, fields);
  }

  bool Enabled(LogLevel level) const { return fd_ >= 0 && level >= min_level_; }

  // The line Log would write (newline included), for tests and for other sinks.
  static std::string FormatLine(LogLevel level, std::string_view msg,
                                std::initializer_list<LogField> fields);

 private:
  int fd_;
  LogLevel min_level_;
};

// A process-wide logger to stderr at level info, for code that has none passed to it.
Logger& DefaultLogger();

// "2026-11-26T05:28:15.123Z": now, UTC, RFC 3339 with milliseconds.
std::string NowRfc3339Ms();

// True when `id` is an acceptable client-supplied request id: 1-64 chars of [A-Za-z0-9._-].
bool IsValidRequestId(std::string_view id);

// A new random request id: 32 lower-case hex digits.
std::string NewRequestId();

// The request id to use: the client's X-Request-Id when valid (`client` may be null), else new.
std::string RequestIdFor(const std::string* client);

}  // namespace isoguard::server
