// RFC 9457 problem details, and THE one mapping from isoguard's ErrorKind to an HTTP status.
//
// Every error answer of the service is `application/problem+json`:
//   {"type":"https://isoguard.example/problems/bad-input","title":"Bad input","status":400,
//    "detail":"must be in (0, 500] kg","field":"events[3].kg","instance":"<request id>"}
// "field" is present only when known; "instance" (the request id) is added by the server.
// Bodies are written with Boost.JSON, so any text is escaped correctly. Thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "server/http.h"

namespace isoguard::server {

class Logger;

inline constexpr std::string_view kProblemContentType = "application/problem+json";

// The stable problem type URI for a status ("https://isoguard.example/problems/not-found"), or
// "about:blank" for a status without one of its own.
std::string ProblemType(int status);

// A problem response. An empty title uses the status's reason phrase.
HttpResponse Problem(int status, std::string title, std::string detail, std::string field = {});

// The status for an error kind: kBadInput 400, kNotFound 404, kConflict 409, kInternal 500,
// kUnauthenticated 401, kForbidden 403, kPreconditionFailed 412, kUnavailable 503.
int StatusFor(ErrorKind kind);

// As StatusFor(kind), refined by the field: a kBadInput error whose field is
// kContentTypeField ("Content-Type" — the request's media type) is 415 Unsupported Media Type.
inline constexpr std::string_view kContentTypeField = "Content-Type";
int StatusFor(const Error& error);

// The problem response for an error. A kInternal error's message is never sent (it may name
// files, SQL, or a patient): the body says only that something went wrong, and the message is
// logged at level error with the request id. kUnauthenticated adds `WWW-Authenticate: Bearer`,
// kUnavailable adds `Retry-After: 1`.
HttpResponse ProblemFromError(const Error& error, std::string_view request_id = {});
HttpResponse ProblemFromError(const Error& error, std::string_view request_id, Logger& logger);

// Ready-made problems for the transport's own limits.
HttpResponse NotFoundProblem(std::string_view path);
HttpResponse MethodNotAllowedProblem(std::string_view method,
                                     const std::vector<std::string>& allow);
HttpResponse PayloadTooLargeProblem(size_t limit_bytes);                       // 413
HttpResponse UnsupportedMediaTypeProblem(std::string_view detail);             // 415
HttpResponse HeadersTooLargeProblem(size_t limit_bytes);                       // 431
HttpResponse UnavailableProblem(std::string detail, int retry_after_seconds);  // 503 + Retry-After
HttpResponse InsufficientStorageProblem(std::string detail);                   // 507

// Adds "instance": request_id to a problem+json body that has none (the server calls this for
// every problem response, so handlers need not). Other responses are left alone.
void SetProblemInstance(HttpResponse& response, std::string_view request_id);

// The reason phrase of a status code ("Not Found"), or "Unknown".
std::string_view ReasonPhrase(int status);

}  // namespace isoguard::server
