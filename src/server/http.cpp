#include "server/http.h"

#include "server/client_address.h"

namespace isoguard::server {
namespace {

const std::string* Find(const NameValues& values, std::string_view name) {
  for (const auto& [n, v] : values) {
    if (n == name) return &v;
  }
  return nullptr;
}

}  // namespace

const std::string* HttpRequest::header(std::string_view lower_name) const {
  return Find(headers, lower_name);
}

const std::string* HttpRequest::query_param(std::string_view name) const {
  return Find(query, name);
}

std::string HttpRequest::client_address() const {
  return client.empty() ? std::string(PeerHost(remote)) : client;
}

std::string HttpRequest::source() const {
  if (client.empty() || client == PeerHost(remote)) return remote;
  return client + " via " + remote;
}

const std::string* FindParam(const PathParams& params, std::string_view name) {
  return Find(params, name);
}

}  // namespace isoguard::server
