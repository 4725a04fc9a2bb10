// Small text helpers shared by the parser and the rules.
#pragma once

#include <string>
#include <string_view>

namespace isoguard {

// The matching form of a medication name: lower case, apostrophes dropped, every run of other
// non-alphanumeric characters read as one space, trimmed. "St. John's Wort" -> "st johns wort".
std::string NormalizeMedicationName(std::string_view name);

// True when `words` (normalized) occurs in `text` (normalized) as whole words.
bool ContainsWholeWords(std::string_view text, std::string_view words);

// Lower-cases ASCII letters: "iPLEDGE" -> "ipledge".
std::string AsciiLower(std::string_view text);

// True when `lowered_needle` (already AsciiLower'd) occurs in `haystack` ignoring ASCII case;
// an empty needle occurs everywhere.
bool ContainsIgnoringCase(std::string_view haystack, std::string_view lowered_needle);

// Upper-cases ASCII letters and drops spaces: " j01aa02 " -> "J01AA02".
std::string NormalizeAtc(std::string_view atc);

// Shortest decimal form of a number that reads back to the same double; integers print
// without a fraction ("3600", "0.51").
std::string FormatNumber(double value);

// Rounds half away from zero to `decimals` places.
double RoundHalfUp(double value, int decimals);

}  // namespace isoguard
