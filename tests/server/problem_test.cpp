#include "server/problem.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "server/log.h"

namespace isoguard::server {
namespace {

boost::json::object Body(const HttpResponse& response) {
  return boost::json::parse(response.body).as_object();
}

const std::string* Header(const HttpResponse& response, std::string_view name) {
  for (const auto& [n, v] : response.headers) {
    if (n == name) return &v;
  }
  return nullptr;
}

TEST(ProblemTest, MapsEveryErrorKindToOneStatus) {
  EXPECT_EQ(StatusFor(ErrorKind::kBadInput), 400);
  EXPECT_EQ(StatusFor(ErrorKind::kNotFound), 404);
  EXPECT_EQ(StatusFor(ErrorKind::kConflict), 409);
  EXPECT_EQ(StatusFor(ErrorKind::kInternal), 500);
  EXPECT_EQ(StatusFor(ErrorKind::kUnauthenticated), 401);
  EXPECT_EQ(StatusFor(ErrorKind::kForbidden), 403);
  EXPECT_EQ(StatusFor(ErrorKind::kPreconditionFailed), 412);
  EXPECT_EQ(StatusFor(ErrorKind::kUnavailable), 503);
  EXPECT_EQ(StatusFor(Error::BadInput("wrong media type", std::string(kContentTypeField))), 415);
  EXPECT_EQ(StatusFor(Error::BadInput("x", "events[3].kg")), 400);
}

TEST(ProblemTest, BodyIsProblemJsonWithTypeTitleStatusDetailField) {
  HttpResponse r = ProblemFromError(Error::BadInput("must be in (0, 500] kg", "events[3].kg"));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.content_type, "application/problem+json");
  auto body = Body(r);
  EXPECT_EQ(body.at("type").as_string(), "https://isoguard.example/problems/bad-input");
  EXPECT_EQ(body.at("title").as_string(), "Bad input");
  EXPECT_EQ(body.at("status").as_int64(), 400);
  EXPECT_EQ(body.at("detail").as_string(), "must be in (0, 500] kg");
  EXPECT_EQ(body.at("field").as_string(), "events[3].kg");
  EXPECT_FALSE(body.contains("instance"));

  auto no_field = Body(Problem(409, "Conflict", "stream moved on"));
  EXPECT_FALSE(no_field.contains("field"));
  EXPECT_EQ(Body(Problem(418, "", "teapot")).at("type").as_string(), "about:blank");
}

TEST(ProblemTest, EscapesAnyTextCorrectly) {
  std::string nasty = "quote \" backslash \\ newline \n tab \t nul " + std::string(1, '\0') + " é";
  HttpResponse r = Problem(400, "Bad input", nasty, nasty);
  auto body = Body(r);
  EXPECT_EQ(body.at("detail").as_string(), nasty);
  EXPECT_EQ(body.at("field").as_string(), nasty);
}

TEST(ProblemTest, InternalErrorsDoNotLeakTheirMessage) {
  Logger quiet(-1);
  HttpResponse r = ProblemFromError(
      Error::Internal("sqlite: /var/lib/isoguard/db locked (patient P-17)"), "req-1", quiet);
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body.find("sqlite"), std::string::npos);
  EXPECT_EQ(r.body.find("P-17"), std::string::npos);
  EXPECT_EQ(Body(r).at("type").as_string(), "https://isoguard.example/problems/internal");
}

TEST(ProblemTest, AddsAuthenticateAndRetryAfterHeaders) {
  HttpResponse unauthenticated = ProblemFromError(Error::Unauthenticated("token expired"));
  EXPECT_EQ(unauthenticated.status, 401);
  ASSERT_NE(Header(unauthenticated, "WWW-Authenticate"), nullptr);
  EXPECT_EQ(*Header(unauthenticated, "WWW-Authenticate"), "Bearer");

  HttpResponse unavailable = ProblemFromError(Error::Unavailable("store is read-only"));
  EXPECT_EQ(unavailable.status, 503);
  ASSERT_NE(Header(unavailable, "Retry-After"), nullptr);

  EXPECT_EQ(ProblemFromError(Error::Forbidden("no")).status, 403);
  EXPECT_EQ(ProblemFromError(Error::PreconditionFailed("version 3")).status, 412);
  EXPECT_EQ(ProblemFromError(Error::NotFound("no such patient")).status, 404);
  EXPECT_EQ(ProblemFromError(Error::Conflict("moved on")).status, 409);
}

TEST(ProblemTest, TransportHelpers) {
  HttpResponse method = MethodNotAllowedProblem("DELETE", {"GET", "POST"});
  EXPECT_EQ(method.status, 405);
  ASSERT_NE(Header(method, "Allow"), nullptr);
  EXPECT_EQ(*Header(method, "Allow"), "GET, POST");
  EXPECT_EQ(PayloadTooLargeProblem(10).status, 413);
  EXPECT_EQ(UnsupportedMediaTypeProblem("text/plain").status, 415);
  EXPECT_EQ(HeadersTooLargeProblem(10).status, 431);
  EXPECT_EQ(InsufficientStorageProblem("disk full").status, 507);
  HttpResponse busy = UnavailableProblem("busy", 7);
  EXPECT_EQ(busy.status, 503);
  EXPECT_EQ(*Header(busy, "Retry-After"), "7");
}

TEST(ProblemTest, SetProblemInstanceAddsTheRequestIdOnce) {
  HttpResponse r = Problem(404, "Not found", "x");
  SetProblemInstance(r, "abc-123");
  EXPECT_EQ(Body(r).at("instance").as_string(), "abc-123");
  SetProblemInstance(r, "other");
  EXPECT_EQ(Body(r).at("instance").as_string(), "abc-123");

  HttpResponse plain;
  plain.body = "{}";
  SetProblemInstance(plain, "abc");
  EXPECT_EQ(plain.body, "{}");
}

}  // namespace
}  // namespace isoguard::server
