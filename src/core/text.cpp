#include "core/text.h"

#include <charconv>
#include <cmath>
#include <cstdint>

namespace isoguard {

namespace {

// Decodes one UTF-8 sequence at s[i]; returns the code point and advances i past it. A
// malformed byte is returned as itself.
uint32_t NextCodePoint(std::string_view s, size_t& i) {
  auto b = static_cast<unsigned char>(s[i]);
  int extra = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : b >= 0xC0 ? 1 : 0;
  if (extra == 0 || i + static_cast<size_t>(extra) >= s.size()) {
    ++i;
    return b;
  }
  uint32_t cp = b & (0x3Fu >> extra);
  for (int k = 1; k <= extra; ++k) {
    auto c = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
    if ((c & 0xC0) != 0x80) {
      ++i;
      return b;
    }
    cp = (cp << 6) | (c & 0x3Fu);
  }
  i += static_cast<size_t>(extra) + 1;
  return cp;
}

bool IsApostrophe(uint32_t cp) {
  return cp == '\'' || cp == 0x2018 || cp == 0x2019 || cp == 0x02BC;
}

// Non-ASCII code points that separate words: no-break space, Latin-1 punctuation and symbols,
// the General Punctuation block (dashes, spaces, quotes), ideographic space.
bool IsSeparator(uint32_t cp) {
  if (cp < 0x80) {
    bool alnum = (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
    return !alnum;
  }
  return (cp >= 0xA0 && cp <= 0xBF && cp != 0xAA && cp != 0xB5 && cp != 0xBA) || cp == 0xD7 ||
         cp == 0xF7 || (cp >= 0x2000 && cp <= 0x206F) || cp == 0x3000;
}

}  // namespace

std::string NormalizeMedicationName(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  bool pending_space = false;
  size_t i = 0;
  while (i < name.size()) {
    size_t start = i;
    uint32_t cp = NextCodePoint(name, i);
    if (IsApostrophe(cp)) continue;
    if (IsSeparator(cp)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) {
      out.push_back(' ');
      pending_space = false;
    }
    if (cp >= 'A' && cp <= 'Z') {
      out.push_back(static_cast<char>(cp - 'A' + 'a'));
    } else {
      out.append(name.substr(start, i - start));  // other letters and digits as written
    }
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

namespace {
char LowerAscii(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
}  // namespace

std::string AsciiLower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = LowerAscii(c);
  return out;
}

bool ContainsIgnoringCase(std::string_view haystack, std::string_view lowered_needle) {
  if (lowered_needle.size() > haystack.size()) return false;
  for (size_t i = 0; i + lowered_needle.size() <= haystack.size(); ++i) {
    size_t j = 0;
    while (j < lowered_needle.size() && LowerAscii(haystack[i + j]) == lowered_needle[j]) ++j;
    if (j == lowered_needle.size()) return true;
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
  static constexpr double kPowers[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
  double scale = decimals >= 0 && decimals < 10 ? kPowers[decimals] : std::pow(10.0, decimals);
  // The small nudge keeps 0.285 (stored as 0.28499999...) rounding to 0.29 as written.
  double scaled = value * scale;
  double nudged = scaled + (scaled >= 0 ? 1e-9 : -1e-9);
  return std::round(nudged) / scale;
}

}  // namespace isoguard
