#include "server/problem.h"

#include <algorithm>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "server/log.h"

namespace isoguard::server {
namespace {

std::string_view ProblemSlug(int status) {
  switch (status) {
    case 400:
      return "bad-input";
    case 401:
      return "unauthenticated";
    case 403:
      return "forbidden";
    case 404:
      return "not-found";
    case 405:
      return "method-not-allowed";
    case 408:
      return "request-timeout";
    case 409:
      return "conflict";
    case 412:
      return "precondition-failed";
    case 413:
      return "payload-too-large";
    case 415:
      return "unsupported-media-type";
    case 431:
      return "headers-too-large";
    case 500:
      return "internal";
    case 501:
      return "not-implemented";
    case 503:
      return "unavailable";
    case 507:
      return "insufficient-storage";
    default:
      return {};
  }
}

}  // namespace

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 428:
      return "Precondition Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 507:
      return "Insufficient Storage";
    default:
      return "Unknown";
  }
}

std::string ProblemType(int status) {
  std::string_view slug = ProblemSlug(status);
  if (slug.empty()) return "about:blank";
  return "https://isoguard.example/problems/" + std::string(slug);
}

HttpResponse Problem(int status, std::string title, std::string detail, std::string field) {
  boost::json::object body;
  body["type"] = ProblemType(status);
  body["title"] = title.empty() ? std::string(ReasonPhrase(status)) : std::move(title);
  body["status"] = status;
  body["detail"] = std::move(detail);
  if (!field.empty()) body["field"] = std::move(field);
  HttpResponse response;
  response.status = status;
  response.content_type = std::string(kProblemContentType);
  response.body = boost::json::serialize(body);
  return response;
}

int StatusFor(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kBadInput:
      return 400;
    case ErrorKind::kNotFound:
      return 404;
    case ErrorKind::kConflict:
      return 409;
    case ErrorKind::kInternal:
      return 500;
    case ErrorKind::kUnauthenticated:
      return 401;
    case ErrorKind::kForbidden:
      return 403;
    case ErrorKind::kPreconditionFailed:
      return 412;
    case ErrorKind::kUnavailable:
      return 503;
    case ErrorKind::kRateLimited:
      return 429;
  }
  return 500;
}

int StatusFor(const Error& error) {
  if (error.kind == ErrorKind::kBadInput && error.field == kContentTypeField) return 415;
  return StatusFor(error.kind);
}

HttpResponse ProblemFromError(const Error& error, std::string_view request_id) {
  return ProblemFromError(error, request_id, DefaultLogger());
}

HttpResponse ProblemFromError(const Error& error, std::string_view request_id, Logger& logger) {
  const int status = StatusFor(error);
  if (status == 500) {
    logger.Log(LogLevel::kError, "internal error",
               {{"request_id", request_id}, {"error", error.message}, {"field", error.field}});
    return Problem(500, "Internal Server Error",
                   "The server could not complete the request; it has been logged.");
  }
  std::string title;
  switch (error.kind) {
    case ErrorKind::kBadInput:
      title = status == 415 ? "Unsupported media type" : "Bad input";
      break;
    case ErrorKind::kNotFound:
      title = "Not found";
      break;
    case ErrorKind::kConflict:
      title = "Conflict";
      break;
    case ErrorKind::kUnauthenticated:
      title = "Unauthenticated";
      break;
    case ErrorKind::kForbidden:
      title = "Forbidden";
      break;
    case ErrorKind::kPreconditionFailed:
      title = "Precondition failed";
      break;
    case ErrorKind::kUnavailable:
      title = "Unavailable";
      break;
    case ErrorKind::kRateLimited:
      title = "Too many requests";
      break;
    case ErrorKind::kInternal:
      break;
  }
  HttpResponse response = Problem(status, std::move(title), error.message, error.field);
  if (error.kind == ErrorKind::kUnauthenticated) {
    response.headers.emplace_back("WWW-Authenticate", "Bearer");
  } else if (error.kind == ErrorKind::kUnavailable || error.kind == ErrorKind::kRateLimited) {
    response.headers.emplace_back("Retry-After",
                                  std::to_string(std::max(error.retry_after_seconds, 1)));
  }
  return response;
}

HttpResponse NotFoundProblem(std::string_view path) {
  return Problem(404, "Not found", "No resource at " + std::string(path) + ".");
}

HttpResponse MethodNotAllowedProblem(std::string_view method,
                                     const std::vector<std::string>& allow) {
  std::string allow_text;
  for (const auto& m : allow) {
    if (!allow_text.empty()) allow_text += ", ";
    allow_text += m;
  }
  HttpResponse response =
      Problem(405, "Method not allowed",
              std::string(method) + " is not allowed here; allowed: " + allow_text + ".");
  response.headers.emplace_back("Allow", allow_text);
  return response;
}

HttpResponse PayloadTooLargeProblem(size_t limit_bytes) {
  return Problem(
      413, "Content too large",
      "The request body exceeds the limit of " + std::to_string(limit_bytes) + " bytes.");
}

HttpResponse UnsupportedMediaTypeProblem(std::string_view detail) {
  return Problem(415, "Unsupported media type", std::string(detail),
                 std::string(kContentTypeField));
}

HttpResponse HeadersTooLargeProblem(size_t limit_bytes) {
  return Problem(431, "Request header fields too large",
                 "The request line and headers exceed the limit of " + std::to_string(limit_bytes) +
                     " bytes.");
}

HttpResponse UnavailableProblem(std::string detail, int retry_after_seconds) {
  HttpResponse response = Problem(503, "Unavailable", std::move(detail));
  response.headers.emplace_back("Retry-After", std::to_string(retry_after_seconds));
  return response;
}

HttpResponse InsufficientStorageProblem(std::string detail) {
  return Problem(507, "Insufficient storage", std::move(detail));
}

void SetProblemInstance(HttpResponse& response, std::string_view request_id) {
  if (request_id.empty() || response.content_type != kProblemContentType) return;
  boost::system::error_code ec;
  boost::json::value body = boost::json::parse(response.body, ec);
  if (ec || !body.is_object()) return;
  auto& object = body.as_object();
  if (object.contains("instance")) return;
  object["instance"] = request_id;
  response.body = boost::json::serialize(body);
}

}  // namespace isoguard::server
