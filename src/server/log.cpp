#include "server/log.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <ctime>
#include <random>

#include "core/json_writer.h"

namespace isoguard::server {
namespace {

std::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

template <typename T>
void AppendNumber(std::string& out, T value) {
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  if (ec != std::errc()) return;
  out.append(buffer, end);
}

}  // namespace

std::string NowRfc3339Ms() {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count();
  std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[96];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buffer;
}

std::string Logger::FormatLine(LogLevel level, std::string_view msg,
                               std::initializer_list<LogField> fields) {
  std::string line;
  line.reserve(160);
  line += "{\"ts\":\"";
  line += NowRfc3339Ms();
  line += "\",\"level\":\"";
  line += LevelName(level);
  line += "\",\"msg\":";
  AppendJsonString(line, msg);
  for (const LogField& field : fields) {
    line.push_back(',');
    AppendJsonString(line, field.key);
    line.push_back(':');
    switch (field.type) {
      case LogField::Type::kString:
        AppendJsonString(line, field.text);
        break;
      case LogField::Type::kBool:
        line += field.boolean ? "true" : "false";
        break;
      case LogField::Type::kInt:
        AppendNumber(line, field.integer);
        break;
      case LogField::Type::kUint:
        AppendNumber(line, field.unsigned_integer);
        break;
      case LogField::Type::kDouble:
        if (std::isfinite(field.real)) {
          AppendNumber(line, field.real);
        } else {
          line += "null";
        }
        break;
    }
  }
  line += "}\n";
  return line;
}

void Logger::Log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields) {
  if (!Enabled(level)) return;
  std::string line = FormatLine(level, msg, fields);
  // One write() for the whole line; the loop only matters when a write is cut short (a full
  // pipe, a signal), which a log line must survive rather than lose its tail.
  const char* data = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    data += n;
    left -= static_cast<size_t>(n);
  }
}

Logger& DefaultLogger() {
  static Logger logger(2, LogLevel::kInfo);
  return logger;
}

bool IsValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string NewRequestId() {
  thread_local std::mt19937_64 engine = [] {
    std::random_device device;
    std::seed_seq seed{device(), device(), device(), device()};
    return std::mt19937_64(seed);
  }();
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  id.reserve(32);
  for (int word = 0; word < 2; ++word) {
    uint64_t bits = engine();
    for (int i = 0; i < 16; ++i) {
      id.push_back(kHex[bits & 0xF]);
      bits >>= 4;
    }
  }
  return id;
}

std::string RequestIdFor(const std::string* client) {
  if (client != nullptr && IsValidRequestId(*client)) return *client;
  return NewRequestId();
}

}  // namespace isoguard::server
