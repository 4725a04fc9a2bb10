// A checker for the Prometheus text exposition format 0.0.4, shared by the metrics tests.
// Hand-written rather than std::regex: libstdc++'s regex draws -Wmaybe-uninitialized false
// positives under some optimisation and sanitizer settings, and warnings are errors here.
#pragma once

#include <cstdlib>
#include <sstream>
#include <string>
#include <string_view>

namespace isoguard::server::testing {

namespace detail {

inline bool IsNameChar(char c, bool first, bool allow_colon) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         (allow_colon && c == ':') || (!first && c >= '0' && c <= '9');
}

// Consumes a metric (or label) name from the front of `s`.
inline bool TakeName(std::string_view& s, bool allow_colon) {
  size_t n = 0;
  while (n < s.size() && IsNameChar(s[n], n == 0, allow_colon)) ++n;
  if (n == 0) return false;
  s.remove_prefix(n);
  return true;
}

// Consumes `"value"` with only \\, \" and \n escapes.
inline bool TakeQuoted(std::string_view& s) {
  if (s.empty() || s.front() != '"') return false;
  size_t i = 1;
  while (i < s.size() && s[i] != '"') {
    if (s[i] == '\n') return false;
    if (s[i] == '\\') {
      if (i + 1 >= s.size() || (s[i + 1] != '\\' && s[i + 1] != '"' && s[i + 1] != 'n')) {
        return false;
      }
      ++i;
    }
    ++i;
  }
  if (i >= s.size()) return false;
  s.remove_prefix(i + 1);
  return true;
}

inline bool IsValue(std::string_view s) {
  if (s == "+Inf" || s == "-Inf" || s == "NaN") return true;
  if (s.empty()) return false;
  std::string text(s);
  char* end = nullptr;
  std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size();
}

inline bool IsSampleLine(std::string_view s) {
  if (!TakeName(s, true)) return false;
  if (!s.empty() && s.front() == '{') {
    s.remove_prefix(1);
    while (true) {
      if (!TakeName(s, false) || s.empty() || s.front() != '=') return false;
      s.remove_prefix(1);
      if (!TakeQuoted(s) || s.empty()) return false;
      char c = s.front();
      s.remove_prefix(1);
      if (c == '}') break;
      if (c != ',') return false;
    }
  }
  if (s.empty() || s.front() != ' ') return false;
  s.remove_prefix(1);
  return IsValue(s);
}

inline bool IsCommentLine(std::string_view s) {
  bool help = s.starts_with("# HELP ");
  if (!help && !s.starts_with("# TYPE ")) return false;
  s.remove_prefix(7);
  if (!TakeName(s, true) || s.empty() || s.front() != ' ') return false;
  s.remove_prefix(1);
  if (help) return true;
  return s == "counter" || s == "gauge" || s == "histogram" || s == "summary" || s == "untyped";
}

}  // namespace detail

// Empty when every line of `text` is a HELP or TYPE comment or a sample line with properly
// quoted and escaped label values; otherwise the first bad line.
inline std::string FirstInvalidExpositionLine(const std::string& text) {
  if (!text.empty() && text.back() != '\n') return "(no final newline)";
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (detail::IsCommentLine(line) || detail::IsSampleLine(line)) continue;
    return line.empty() ? "(empty line)" : line;
  }
  return {};
}

}  // namespace isoguard::server::testing
