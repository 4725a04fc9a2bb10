#include "server/json_body.h"

#include <gtest/gtest.h>

#include "server/problem.h"

namespace isoguard::server {
namespace {

HttpRequest Json(std::string body, std::string content_type = "application/json") {
  HttpRequest request;
  request.method = "POST";
  if (!content_type.empty()) request.headers.emplace_back("content-type", content_type);
  request.body = std::move(body);
  return request;
}

TEST(JsonBodyTest, ParsesJsonWithJsonMediaTypes) {
  for (const char* type :
       {"application/json", "application/json; charset=utf-8", "Application/JSON",
        "application/fhir+json", "application/merge-patch+json"}) {
    auto parsed = ParseJsonBody(Json(R"({"a": [1, 2]} )", type));
    ASSERT_TRUE(parsed.ok()) << type << ": " << parsed.error().ToString();
    EXPECT_EQ(parsed->at("a").at(1).as_int64(), 2);
  }
}

TEST(JsonBodyTest, WrongOrMissingContentTypeIs415) {
  for (const char* type : {"", "text/plain", "application/xml", "application/+json",
                           "application/jsonx", "multipart/form-data"}) {
    auto parsed = ParseJsonBody(Json("{}", type));
    ASSERT_FALSE(parsed.ok()) << type;
    EXPECT_EQ(StatusFor(parsed.error()), 415) << type;
    EXPECT_EQ(ProblemFromError(parsed.error()).status, 415);
  }
}

TEST(JsonBodyTest, MalformedJsonIs400NamingTheByteOffset) {
  auto parsed = ParseJsonBody(Json(R"({"a": 1,})"));
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(StatusFor(parsed.error()), 400);
  EXPECT_EQ(parsed.error().field, "body");
  EXPECT_NE(parsed.error().message.find("at byte 8"), std::string::npos) << parsed.error().message;

  parsed = ParseJsonBody(Json(R"({"a": tru})"));
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message.find("malformed JSON at byte"), std::string::npos);

  parsed = ParseJsonBody(Json(R"({"a": 1)"));  // cut short: the offset is the end
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message.find("at byte 7"), std::string::npos) << parsed.error().message;

  parsed = ParseJsonBody(Json(R"({"a": 1} {"b": 2})"));
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message.find("at byte 9"), std::string::npos) << parsed.error().message;

  parsed = ParseJsonBody(Json(""));
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(StatusFor(parsed.error()), 400);
}

TEST(JsonBodyTest, InvalidUtf8Is400) {
  for (std::string bad : {std::string("{\"a\": \"x\xff\"}"), std::string("{\"a\": \"\xc0\xaf\"}"),
                          std::string("{\"a\": \"\xed\xa0\x80\"}")}) {
    auto parsed = ParseJsonBody(Json(bad));
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(StatusFor(parsed.error()), 400);
    EXPECT_NE(parsed.error().message.find("invalid UTF-8 at byte"), std::string::npos)
        << parsed.error().message;
  }
  auto parsed = ParseJsonBody(Json("{\"a\": \"x\xff\"}"));
  EXPECT_NE(parsed.error().message.find("at byte 8"), std::string::npos) << parsed.error().message;
  EXPECT_TRUE(ParseJsonBody(Json("{\"a\": \"caf\xc3\xa9\"}")).ok());
}

TEST(JsonBodyTest, NestingBeyond64Is400) {
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  EXPECT_TRUE(ParseJsonBody(Json(nested(64))).ok());
  auto parsed = ParseJsonBody(Json(nested(65)));
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(StatusFor(parsed.error()), 400);
  EXPECT_NE(parsed.error().message.find("deeper than 64"), std::string::npos)
      << parsed.error().message;
  parsed = ParseJsonBody(Json(nested(100000)));  // no stack overflow
  ASSERT_FALSE(parsed.ok());
}

}  // namespace
}  // namespace isoguard::server
