// Routes (method + path pattern) to handlers.
//
// Patterns are literal segments and {name} parameters: "/v1/patients/{patient_id}/events".
// A parameter matches one whole segment; its value is percent-decoded and must be valid UTF-8
// without '/' (a request breaking this is answered 400). Where several patterns match a path,
// the one with literal segments earliest wins ("/v1/patients/search" over
// "/v1/patients/{patient_id}"). A path no pattern matches is 404; a path that matches only
// under other methods is 405 with an Allow header. Both are problem+json.
//
// Add routes before the server starts; afterwards the Router is only read (Match, Routes),
// which is thread-safe.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/http.h"

namespace isoguard::server {

struct RouteOptions {
  bool inline_on_io_thread = false;  // cheap, never-blocking handlers (/healthz, /metrics)
  size_t max_body_bytes = 0;         // 0: the server's default
};

struct RouteInfo {
  std::string method;
  std::string pattern;
};

struct RouteMatch {
  // The matched route's handler, or null when `problem` is the answer (404, 405, 400).
  const Handler* handler = nullptr;
  RouteOptions options;
  // The route's pattern, for metrics labels and logs; "unmatched" when no route matched (never
  // the raw path, which would let clients create unbounded label values).
  std::string pattern = "unmatched";
  PathParams params;
  std::optional<HttpResponse> problem;
};

class Router {
 public:
  // Adds a route. Throws std::logic_error for a malformed pattern (it must start with '/', and
  // parameters must be whole segments with distinct names) or a duplicate method + pattern.
  void Add(std::string method, std::string pattern, Handler handler, RouteOptions options = {});

  // `raw_path` is the request target's path, still percent-encoded, without the query.
  RouteMatch Match(std::string_view method, std::string_view raw_path) const;

  // Every route, in the order added.
  std::vector<RouteInfo> Routes() const;

 private:
  struct Segment {
    std::string text;  // the literal, or the parameter's name
    bool is_param = false;
  };
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<Segment> segments;
    Handler handler;
    RouteOptions options;
  };
  std::vector<Route> routes_;
};

}  // namespace isoguard::server
