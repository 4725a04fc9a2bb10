#include "store/postgres/pg_url.h"

#include <libpq-fe.h>

namespace isoguard::store::pg {

Result<UrlOptionList> UrlOptions(const std::string& url) {
  char* message = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &message);
  if (options == nullptr) {
    std::string text = message != nullptr ? message : "out of memory";
    PQfreemem(message);
    while (!text.empty() && text.back() == '\n') text.pop_back();
    return Error::BadInput(
        "is not a PostgreSQL URL libpq accepts: " + Redact(std::move(text), GuessedPassword(url)),
        "db");
  }
  UrlOptionList out;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val != nullptr) out.emplace_back(o->keyword, o->val);
  }
  PQconninfoFree(options);
  return out;
}

std::string OptionOf(const UrlOptionList& options, std::string_view keyword) {
  for (const auto& [k, v] : options) {
    if (k == keyword) return v;
  }
  return {};
}

std::string Redact(std::string text, const std::string& secret) {
  if (secret.empty()) return text;
  for (size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 3)) {
    text.replace(at, secret.size(), "***");
  }
  return text;
}

std::string GuessedPassword(const std::string& url) {
  const size_t scheme = url.find("://");
  if (scheme != std::string::npos) {
    const size_t start = scheme + 3;
    const size_t at = url.rfind('@', url.find_first_of("/?", start));
    if (at == std::string::npos || at < start) return {};
    const size_t colon = url.find(':', start);
    if (colon == std::string::npos || colon > at) return {};
    return url.substr(colon + 1, at - colon - 1);
  }
  const size_t key = url.find("password=");
  if (key == std::string::npos) return {};
  const size_t start = key + std::string_view("password=").size();
  return url.substr(start, url.find(' ', start) - start);
}

std::string DatabaseName(const UrlOptionList& options) {
  const std::string db = OptionOf(options, "dbname");
  const std::string host = OptionOf(options, "host");
  const std::string port = OptionOf(options, "port");
  std::string out = "the database " + (db.empty() ? std::string("(default)") : db);
  if (!host.empty()) out += " on " + host + (port.empty() ? "" : ":" + port);
  return out;
}

std::string DatabaseName(const std::string& url) {
  auto options = UrlOptions(url);
  if (!options.ok()) return "the PostgreSQL database";
  return DatabaseName(*options);
}

}  // namespace isoguard::store::pg
