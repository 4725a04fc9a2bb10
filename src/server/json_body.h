// Reading a request body as JSON, for handlers. Kept apart from the server so that handlers
// that take JSON need not compile anything of the transport.
#pragma once

#include <boost/json/value.hpp>

#include "core/result.h"
#include "server/http.h"

namespace isoguard::server {

inline constexpr int kMaxJsonDepth = 64;

// True for "application/json" and "application/<anything>+json", with any parameters
// ("; charset=utf-8"), case-insensitively.
bool IsJsonContentType(std::string_view content_type);

// The body parsed as one JSON value. Errors (all kBadInput, so ProblemFromError answers them):
//  - missing or non-JSON Content-Type: field kContentTypeField ("Content-Type"), which
//    StatusFor maps to 415;
//  - malformed JSON: "malformed JSON at byte N: <reason>", field "body";
//  - invalid UTF-8 in a string: "invalid UTF-8 at byte N", field "body";
//  - nesting deeper than kMaxJsonDepth: "JSON nested deeper than 64 levels at byte N".
Result<boost::json::value> ParseJsonBody(const HttpRequest& request);

}  // namespace isoguard::server
