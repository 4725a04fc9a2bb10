// Percent-decoding and query parsing for request targets (RFC 3986), with UTF-8 validation.
// Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "server/http.h"

namespace isoguard::server {

// Decodes %XX escapes (and '+' as a space when `plus_as_space`, for query strings). Returns
// nothing when an escape is malformed ("%4", "%zz") or the result is not valid UTF-8.
std::optional<std::string> PercentDecode(std::string_view text, bool plus_as_space = false);

// Percent-encodes every byte but the unreserved characters (A-Z a-z 0-9 - . _ ~) and those of
// `also_keep` ("/?=&:" for a template whose structure must stay): "a|b c" -> "a%7Cb%20c".
std::string PercentEncode(std::string_view text, std::string_view also_keep = {});

// True when `text` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool IsValidUtf8(std::string_view text);

// Splits a raw target "/a/b?x=1&y" into its path and query parts (the '?' dropped).
std::pair<std::string_view, std::string_view> SplitTarget(std::string_view target);

// Parses "a=1&b=x%20y&c" into decoded pairs ("c" -> ""). Returns nothing when a name or value
// is not valid percent-encoded UTF-8.
std::optional<NameValues> ParseQuery(std::string_view query);

}  // namespace isoguard::server
