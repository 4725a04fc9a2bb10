// The request and response types that handlers see: plain structs, no Boost.Beast.
//
// The server (src/server/http_server.cpp) fills an HttpRequest from the wire and writes an
// HttpResponse back; handlers (REST, FHIR, CDS Hooks) are functions from one to the other and
// never include an HTTP library. Both types are values: copy or move them freely; a request is
// read by one handler on one thread at a time.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace isoguard::server {

using NameValues = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // "GET", "POST", ... as sent (methods are case-sensitive)
  std::string target;  // raw request target: "/v1/patients/P%2D1?x=1"
  std::string path;    // percent-decoded path without the query: "/v1/patients/P-1"
  NameValues query;    // decoded query parameters in order ('+' read as a space)
  NameValues headers;  // names lower-cased, values as sent, in order
  std::string body;    // the whole body (the server enforces the size limit)
  std::string remote;  // peer address "ip:port"
  // The client's address, without port: the peer's host, or, when the peer is a trusted
  // proxy, the client its X-Forwarded-For names (client_address.h). Empty: the peer's.
  std::string client;
  std::string request_id;  // the client's valid X-Request-Id, or a generated one

  // The first header with this (lower-case) name, or null.
  const std::string* header(std::string_view lower_name) const;
  // The first query parameter with this name, or null.
  const std::string* query_param(std::string_view name) const;
  // The address a request is attributed to, for limits: `client`, or the peer's host.
  std::string client_address() const;
  // Where a request came from, for the audit and the actor of what it records: the peer
  // ("ip:port"), or "client via ip:port" when a trusted proxy forwarded it.
  std::string source() const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  NameValues headers;  // extra headers; the server adds Content-Length, X-Request-Id, ...
  std::string body;
};

// The values of a route pattern's {name} segments, decoded, in pattern order.
using PathParams = NameValues;

// The value of path parameter `name`, or null.
const std::string* FindParam(const PathParams& params, std::string_view name);

// A handler may block (storage); it runs on a worker thread unless its route is marked
// inline_on_io_thread. An exception thrown by a handler becomes a 500 problem response.
using Handler = std::function<HttpResponse(const HttpRequest&, const PathParams&)>;

}  // namespace isoguard::server
