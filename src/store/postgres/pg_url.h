// A PostgreSQL connection URL as libpq reads it, and how it is shown in messages: never with
// its password. Shared by every libpq user of the tree (the event store, the service store).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"

namespace isoguard::store::pg {

using UrlOptionList = std::vector<std::pair<std::string, std::string>>;

// The connection options a URL sets (libpq parses it: any URI or key=value string it
// accepts). kBadInput (field "db") with libpq's message, the password masked, otherwise.
Result<UrlOptionList> UrlOptions(const std::string& url);
std::string OptionOf(const UrlOptionList& options, std::string_view keyword);
// Every copy of `secret` in `text` replaced by "***".
std::string Redact(std::string text, const std::string& secret);
// The password a URL that libpq could not parse seems to hold (libpq's message quotes the
// URL): the userinfo's after its ':' in a URI, or the value of password= in a key=value string.
std::string GuessedPassword(const std::string& url);
// "the database NAME on HOST:PORT": what names a store in messages, without the password.
std::string DatabaseName(const UrlOptionList& options);
std::string DatabaseName(const std::string& url);

}  // namespace isoguard::store::pg
