#include "core/text.h"

#include <charconv>
#include <cmath>

namespace isoguard {

std::string NormalizeMedicationName(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  bool pending_space = false;
  for (size_t i = 0; i < name.size(); ++i) {
    auto c = static_cast<unsigned char>(name[i]);
    if (c == '\'') continue;
    // U+2019 (right single quotation mark) is an apostrophe too: E2 80 99.
    if (c == 0xE2 && i + 2 < name.size() && static_cast<unsigned char>(name[i + 1]) == 0x80 &&
        static_cast<unsigned char>(name[i + 2]) == 0x99) {
      i += 2;
      continue;
    }
    bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 c >= 0x80;  // other UTF-8 bytes are kept as letters
    if (!alnum) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) {
      out.push_back(' ');
      pending_space = false;
    }
    out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : static_cast<char>(c));
  }
  return out;
}

bool ContainsWholeWords(std::string_view text, std::string_view words) {
  if (words.empty() || words.size() > text.size()) return false;
  size_t pos = 0;
  while ((pos = text.find(words, pos)) != std::string_view::npos) {
    bool starts = pos == 0 || text[pos - 1] == ' ';
    size_t end = pos + words.size();
    bool ends = end == text.size() || text[end] == ' ';
    if (starts && ends) return true;
    ++pos;
  }
  return false;
}

std::string NormalizeAtc(std::string_view atc) {
  std::string out;
  out.reserve(atc.size());
  for (char c : atc) {
    if (c == ' ') continue;
    out.push_back(c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c);
  }
  return out;
}

std::string FormatNumber(double value) {
  if (std::isfinite(value) && std::fabs(value) < 1e15 && value == std::floor(value)) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, static_cast<long long>(value));
    return std::string(buf, r.ptr);
  }
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, r.ptr);
}

double RoundHalfUp(double value, int decimals) {
  double scale = std::pow(10.0, decimals);
  // The small nudge keeps 0.285 (stored as 0.28499999...) rounding to 0.29 as written.
  double scaled = value * scale;
  double nudged = scaled + (scaled >= 0 ? 1e-9 : -1e-9);
  return std::round(nudged) / scale;
}

}  // namespace isoguard
