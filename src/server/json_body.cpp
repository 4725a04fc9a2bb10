#include "server/json_body.h"

#include <boost/json/error.hpp>
#include <boost/json/parser.hpp>

#include "server/problem.h"
#include "server/url.h"

namespace isoguard::server {
namespace {

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The offset of the first invalid UTF-8 sequence in `text` (text.size() if none).
size_t FirstInvalidUtf8(std::string_view text) {
  // Narrow down by halves would be faster; bodies are small and this runs only on error.
  size_t i = 0;
  while (i < text.size()) {
    auto c = static_cast<unsigned char>(text[i]);
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xE  ? 3
                 : (c >> 3) == 0x1E ? 4
                                    : 0;
    if (len == 0 || i + len > text.size() || !IsValidUtf8(text.substr(i, len))) return i;
    i += len;
  }
  return text.size();
}

}  // namespace

bool IsJsonContentType(std::string_view content_type) {
  std::string media;
  for (char c : Trim(content_type.substr(0, content_type.find(';')))) media.push_back(Lower(c));
  if (media == "application/json") return true;
  return media.starts_with("application/") && media.ends_with("+json") &&
         media.size() > std::string_view("application/+json").size();
}

Result<boost::json::value> ParseJsonBody(const HttpRequest& request) {
  const std::string* content_type = request.header("content-type");
  if (content_type == nullptr) {
    return Error::BadInput(
        "the request body must be JSON, sent with Content-Type: application/json",
        std::string(kContentTypeField));
  }
  if (!IsJsonContentType(*content_type)) {
    return Error::BadInput("the request body must be JSON (application/json), not " + *content_type,
                           std::string(kContentTypeField));
  }
  boost::json::parse_options options;
  options.max_depth = kMaxJsonDepth;
  boost::json::parser parser(boost::json::storage_ptr(), options);
  boost::system::error_code ec;
  const std::string& body = request.body;
  size_t consumed = parser.write_some(body.data(), body.size(), ec);
  if (!ec && consumed < body.size()) {
    // Only whitespace may follow the value; write_some stops at the end of the value.
    size_t rest = body.find_first_not_of(" \t\r\n", consumed);
    if (rest != std::string::npos) {
      return Error::BadInput(
          "malformed JSON at byte " + std::to_string(rest) + ": text after the JSON value", "body");
    }
  }
  // On an error, `consumed` is where the parser stopped: the offending byte, or the end of the
  // body when the text ends too early.
  if (ec) {
    if (ec == boost::json::error::too_deep) {
      return Error::BadInput("JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                                 " levels at byte " + std::to_string(consumed),
                             "body");
    }
    size_t bad_utf8 = FirstInvalidUtf8(body);
    if (bad_utf8 < body.size() && bad_utf8 <= consumed) {
      return Error::BadInput("invalid UTF-8 at byte " + std::to_string(bad_utf8), "body");
    }
    return Error::BadInput(
        "malformed JSON at byte " + std::to_string(consumed) + ": " + ec.message(), "body");
  }
  return parser.release();
}

}  // namespace isoguard::server
