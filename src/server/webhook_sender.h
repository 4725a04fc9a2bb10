// Posts a webhook delivery: one HTTP/1.1 POST of a JSON body to an http:// or https:// URL,
// with a deadline for the whole exchange. https verifies the server's certificate against the
// system's CA store and its host name. A 2xx answer is success; anything else (a refused
// connection, a timeout, another status) is an Error naming what happened, and the caller
// retries later.
//
// Thread-safe: each call is independent.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "core/result.h"

namespace isoguard::server {

struct ParsedUrl {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;  // path and query, "/" when empty
};
// kBadInput naming `field` when the URL is not http(s)://host[:port][/path] (no user info).
Result<ParsedUrl> ParseWebhookUrl(const std::string& url, const std::string& field = "url");

Status PostJson(const std::string& url, const std::string& body,
                const std::vector<std::pair<std::string, std::string>>& headers,
                std::chrono::milliseconds timeout);

}  // namespace isoguard::server
