#include "server/router.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace isoguard::server {
namespace {

Handler Named(std::string name) {
  return [name](const HttpRequest&, const PathParams&) {
    HttpResponse r;
    r.body = name;
    return r;
  };
}

std::string Call(const RouteMatch& m) {
  if (m.handler == nullptr) return "problem " + std::to_string(m.problem->status);
  return (*m.handler)(HttpRequest{}, m.params).body;
}

const std::string* Header(const HttpResponse& response, std::string_view name) {
  for (const auto& [n, v] : response.headers) {
    if (n == name) return &v;
  }
  return nullptr;
}

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    router.Add("GET", "/healthz", Named("health"), {.inline_on_io_thread = true});
    router.Add("GET", "/v1/patients/{patient_id}", Named("get patient"));
    router.Add("PUT", "/v1/patients/{patient_id}", Named("put patient"));
    router.Add("GET", "/v1/patients/search", Named("search"));
    router.Add("POST", "/v1/patients/{patient_id}/events", Named("append"),
               {.max_body_bytes = 4 << 20});
    router.Add("GET", "/v1/patients/{patient_id}/events/{event_id}", Named("get event"));
  }
  Router router;
};

TEST_F(RouterTest, MatchesLiteralsAndParameters) {
  RouteMatch m = router.Match("GET", "/v1/patients/P-1");
  EXPECT_EQ(Call(m), "get patient");
  EXPECT_EQ(m.pattern, "/v1/patients/{patient_id}");
  ASSERT_NE(FindParam(m.params, "patient_id"), nullptr);
  EXPECT_EQ(*FindParam(m.params, "patient_id"), "P-1");
  EXPECT_EQ(FindParam(m.params, "nope"), nullptr);

  m = router.Match("GET", "/v1/patients/P-1/events/e-9");
  EXPECT_EQ(Call(m), "get event");
  ASSERT_EQ(m.params.size(), 2u);
  EXPECT_EQ(m.params[0], (std::pair<std::string, std::string>{"patient_id", "P-1"}));
  EXPECT_EQ(m.params[1], (std::pair<std::string, std::string>{"event_id", "e-9"}));

  m = router.Match("POST", "/v1/patients/P-1/events");
  EXPECT_EQ(m.options.max_body_bytes, 4u << 20);
  EXPECT_TRUE(router.Match("GET", "/healthz").options.inline_on_io_thread);
}

TEST_F(RouterTest, LiteralSegmentsWinOverParameters) {
  EXPECT_EQ(Call(router.Match("GET", "/v1/patients/search")), "search");
  EXPECT_EQ(Call(router.Match("PUT", "/v1/patients/search")), "put patient");
}

TEST_F(RouterTest, DecodesParameters) {
  RouteMatch m = router.Match("GET", "/v1/patients/P%20%C3%A9%2B1");
  ASSERT_NE(m.handler, nullptr);
  EXPECT_EQ(m.params[0].second, "P \xC3\xA9+1");  // '+' stays '+' in a path
}

TEST_F(RouterTest, RejectsParametersThatDecodeBadly) {
  for (const char* path : {"/v1/patients/a%2Fb", "/v1/patients/%FF", "/v1/patients/%zz",
                           "/v1/patients/%C0%AF", "/v1/patients/%E2%82"}) {
    RouteMatch m = router.Match("GET", path);
    EXPECT_EQ(m.handler, nullptr) << path;
    ASSERT_TRUE(m.problem) << path;
    EXPECT_EQ(m.problem->status, 400) << path;
    EXPECT_EQ(m.problem->content_type, "application/problem+json");
    EXPECT_NE(m.problem->body.find("patient_id"), std::string::npos) << path;
    EXPECT_EQ(m.pattern, "/v1/patients/{patient_id}");
  }
}

TEST_F(RouterTest, UnknownPathIs404AndNeverLabelsTheRawPath) {
  for (const char* path :
       {"/nope", "/v1/patients", "/v1/patients/", "/v1/patients/P-1/x", "", "/healthz/"}) {
    RouteMatch m = router.Match("GET", path);
    EXPECT_EQ(Call(m), "problem 404") << path;
    EXPECT_EQ(m.pattern, "unmatched");
  }
}

TEST_F(RouterTest, OtherMethodIs405WithAllow) {
  RouteMatch m = router.Match("DELETE", "/v1/patients/P-1");
  ASSERT_TRUE(m.problem);
  EXPECT_EQ(m.problem->status, 405);
  ASSERT_NE(Header(*m.problem, "Allow"), nullptr);
  EXPECT_EQ(*Header(*m.problem, "Allow"), "GET, PUT");
  EXPECT_EQ(m.pattern, "unmatched");

  m = router.Match("GET", "/v1/patients/P-1/events");
  ASSERT_TRUE(m.problem);
  EXPECT_EQ(m.problem->status, 405);
  EXPECT_EQ(*Header(*m.problem, "Allow"), "POST");
}

TEST_F(RouterTest, ListsRoutesInOrder) {
  auto routes = router.Routes();
  ASSERT_EQ(routes.size(), 6u);
  EXPECT_EQ(routes[0].method, "GET");
  EXPECT_EQ(routes[0].pattern, "/healthz");
  EXPECT_EQ(routes[4].method, "POST");
  EXPECT_EQ(routes[4].pattern, "/v1/patients/{patient_id}/events");
}

TEST(RouterAddTest, RefusesMalformedPatternsAndDuplicates) {
  Router router;
  EXPECT_THROW(router.Add("GET", "v1/x", Named("x")), std::logic_error);
  EXPECT_THROW(router.Add("GET", "/v1/{}", Named("x")), std::logic_error);
  EXPECT_THROW(router.Add("GET", "/v1/a{id}", Named("x")), std::logic_error);
  EXPECT_THROW(router.Add("GET", "/v1/{id}/{id}", Named("x")), std::logic_error);
  router.Add("GET", "/v1/{id}", Named("x"));
  EXPECT_THROW(router.Add("GET", "/v1/{id}", Named("y")), std::logic_error);
}

}  // namespace
}  // namespace isoguard::server
