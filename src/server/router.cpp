#include "server/router.h"

#include <algorithm>
#include <stdexcept>

#include "server/problem.h"
#include "server/url.h"

namespace isoguard::server {
namespace {

// "/a/b/" -> {"a", "b", ""}; "/" -> {""}.
std::vector<std::string_view> SplitSegments(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.empty() || path.front() != '/') return out;
  path.remove_prefix(1);
  while (true) {
    size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

}  // namespace

void Router::Add(std::string method, std::string pattern, Handler handler, RouteOptions options) {
  if (pattern.empty() || pattern.front() != '/') {
    throw std::logic_error("route pattern must start with '/': " + pattern);
  }
  Route route;
  for (std::string_view part : SplitSegments(pattern)) {
    Segment segment;
    if (part.size() >= 2 && part.front() == '{' && part.back() == '}') {
      segment.is_param = true;
      segment.text = std::string(part.substr(1, part.size() - 2));
      if (segment.text.empty() || segment.text.find_first_of("{}") != std::string::npos) {
        throw std::logic_error("malformed parameter in route pattern: " + pattern);
      }
      for (const Segment& other : route.segments) {
        if (other.is_param && other.text == segment.text) {
          throw std::logic_error("parameter named twice in route pattern: " + pattern);
        }
      }
    } else if (part.find_first_of("{}") != std::string_view::npos) {
      throw std::logic_error("a parameter must be a whole segment: " + pattern);
    } else {
      segment.text = std::string(part);
    }
    route.segments.push_back(std::move(segment));
  }
  for (const Route& other : routes_) {
    if (other.method == method && other.pattern == pattern) {
      throw std::logic_error("route added twice: " + method + " " + pattern);
    }
  }
  route.method = std::move(method);
  route.pattern = std::move(pattern);
  route.handler = std::move(handler);
  route.options = options;
  routes_.push_back(std::move(route));
}

RouteMatch Router::Match(std::string_view method, std::string_view raw_path) const {
  RouteMatch match;
  std::vector<std::string_view> raw_segments = SplitSegments(raw_path);
  if (raw_segments.empty()) {
    match.problem = NotFoundProblem(raw_path);
    return match;
  }
  // Decode lazily: a segment that cannot be decoded fails the request only when a route's
  // parameter would take it; a literal never matches it.
  std::vector<std::optional<std::string>> decoded(raw_segments.size());
  std::vector<bool> decoded_done(raw_segments.size(), false);
  auto decode = [&](size_t i) -> const std::optional<std::string>& {
    if (!decoded_done[i]) {
      decoded[i] = PercentDecode(raw_segments[i]);
      decoded_done[i] = true;
    }
    return decoded[i];
  };

  // The best route matching the path, for this method and for any method.
  const Route* best = nullptr;
  std::vector<bool> best_key;
  std::vector<std::string> allow;
  bool bad_param = false;
  std::string bad_param_name;
  for (const Route& route : routes_) {
    if (route.segments.size() != raw_segments.size()) continue;
    bool matches = true;
    bool route_bad_param = false;
    std::string route_bad_name;
    std::vector<bool> key;
    key.reserve(route.segments.size());
    for (size_t i = 0; i < route.segments.size() && matches; ++i) {
      const Segment& segment = route.segments[i];
      key.push_back(!segment.is_param);
      const auto& value = decode(i);
      if (segment.is_param) {
        if (!value || value->empty() || value->find('/') != std::string::npos) {
          // An empty segment does not match a parameter; a malformed one matches but is bad.
          if (!value || !value->empty()) {
            route_bad_param = true;
            if (route_bad_name.empty()) route_bad_name = segment.text;
          } else {
            matches = false;
          }
        }
      } else {
        matches = value && *value == segment.text;
      }
    }
    if (!matches) continue;
    if (std::find(allow.begin(), allow.end(), route.method) == allow.end()) {
      allow.push_back(route.method);
    }
    if (route.method != method) continue;
    if (best == nullptr || key > best_key) {
      best = &route;
      best_key = std::move(key);
      bad_param = route_bad_param;
      bad_param_name = route_bad_name;
    }
  }

  if (best == nullptr) {
    if (allow.empty()) {
      match.problem = NotFoundProblem(raw_path);
    } else {
      std::sort(allow.begin(), allow.end());
      match.problem = MethodNotAllowedProblem(method, allow);
    }
    return match;
  }
  match.pattern = best->pattern;
  match.options = best->options;
  if (bad_param) {
    match.problem = Problem(400, "Bad input",
                            "The path parameter must be percent-encoded UTF-8 and contain no '/'.",
                            bad_param_name);
    return match;
  }
  match.handler = &best->handler;
  for (size_t i = 0; i < best->segments.size(); ++i) {
    if (best->segments[i].is_param) {
      match.params.emplace_back(best->segments[i].text, *decode(i));
    }
  }
  return match;
}

std::vector<RouteInfo> Router::Routes() const {
  std::vector<RouteInfo> out;
  out.reserve(routes_.size());
  for (const Route& route : routes_) out.push_back({route.method, route.pattern});
  return out;
}

}  // namespace isoguard::server
