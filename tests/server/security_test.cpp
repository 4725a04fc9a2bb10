// Security properties of the service over real HTTP: password sign-in is rate limited (per
// account and per address, answered 429 with Retry-After, without looking at the password),
// every sign-in attempt is audited without the password, and no route can change or remove
// what the access audit holds.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "api_test_support.h"

namespace isoguard::server::testing {
namespace {

class SecurityTest : public ::testing::TestWithParam<ApiBackend> {
 protected:
  void SetUp() override {
    if (GetParam().postgres && !store::testing::PgUrlFile()) {
      GTEST_SKIP() << "no PostgreSQL cluster: set ISOGUARD_TEST_PG_URL_FILE";
    }
    world_ = std::make_unique<ApiWorld>(GetParam());
    world_->MakeWorld();
  }
  ApiWorld& w() { return *world_; }

  Reply SignIn(const std::string& account, const std::string& password,
               const std::string& forwarded_for = {}) {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!forwarded_for.empty()) headers.emplace_back("X-Forwarded-For", forwarded_for);
    return w().Call("POST", "/v1/sessions", {},
                    R"({"account_id":")" + account + R"(","password":")" + password + R"("})",
                    std::move(headers));
  }

  std::vector<service::AuditRecord> Audit() {
    w().audit().Flush();
    service::AuditFilter all;
    all.limit = 100000;
    auto rows = w().service_store().ListAudit(all);
    EXPECT_TRUE(rows.ok());
    return rows.ok() ? *rows : std::vector<service::AuditRecord>{};
  }

  std::unique_ptr<ApiWorld> world_;
};

std::string RetryAfter(const Reply& r) {
  const std::string* v = r.raw.header("retry-after");
  return v != nullptr ? *v : std::string();
}

TEST_P(SecurityTest, SignInFailuresPerAccountAreLimitedThenForgottenAfterTheWindow) {
  w().User("nurse", "clinic-a", service::Role::kClinicStaff, {}, "right-password-1");
  ASSERT_EQ(SignIn("nurse", "right-password-1").status, 201);
  const service::SignInLimits limits;
  for (int i = 0; i < limits.max_failures_per_account; ++i) {
    EXPECT_EQ(SignIn("nurse", "wrong-" + std::to_string(i)).status, 401) << i;
  }
  // Past the limit even the right password is refused at once, with when to come back.
  const Reply limited = SignIn("nurse", "right-password-1");
  EXPECT_EQ(limited.status, 429) << limited.raw.body;
  const std::string retry = RetryAfter(limited);
  ASSERT_FALSE(retry.empty());
  EXPECT_GT(std::stoi(retry), 0);
  EXPECT_LE(std::stoi(retry), static_cast<int>(limits.window.count()));
  // Another account is not locked by this one's failures.
  w().User("nurse2", "clinic-a", service::Role::kClinicStaff, {}, "right-password-2");
  EXPECT_EQ(SignIn("nurse2", "right-password-2").status, 201);
  // Once the failures leave the window, the right password works again.
  w().Advance(limits.window + std::chrono::seconds(1));
  EXPECT_EQ(SignIn("nurse", "right-password-1").status, 201);
}

TEST_P(SecurityTest, SignInFailuresFromOneAddressAcrossAccountsAreLimited) {
  const service::SignInLimits limits;
  // Guessing across many (unknown) accounts from one address.
  for (int i = 0; i < limits.max_failures_per_source; ++i) {
    EXPECT_EQ(SignIn("someone-" + std::to_string(i), "guess").status, 401) << i;
  }
  w().User("late", "clinic-a", service::Role::kClinicStaff, {}, "late-password");
  EXPECT_EQ(SignIn("late", "late-password").status, 429);
}

TEST_P(SecurityTest, ForwardedForIsIgnoredUnlessThePeerIsATrustedProxy) {
  const service::SignInLimits limits;
  // A client cannot escape the per-address limit by naming another address each time.
  for (int i = 0; i < limits.max_failures_per_source; ++i) {
    EXPECT_EQ(
        SignIn("someone-" + std::to_string(i), "guess", "198.51.100." + std::to_string(i)).status,
        401)
        << i;
  }
  w().User("late", "clinic-a", service::Role::kClinicStaff, {}, "late-password");
  EXPECT_EQ(SignIn("late", "late-password", "203.0.113.99").status, 429);
  for (const auto& r : Audit()) {
    EXPECT_EQ(r.source.find("via"), std::string::npos) << r.source;
  }
}

TEST_P(SecurityTest, BehindATrustedProxyTheLimitAndTheAuditAreTheClients) {
  w().ReopenTrustingProxies(*ParseTrustedProxies("127.0.0.1"));
  w().User("late", "clinic-a", service::Role::kClinicStaff, {}, "late-password");
  const service::SignInLimits limits;
  for (int i = 0; i < limits.max_failures_per_source; ++i) {
    EXPECT_EQ(SignIn("someone-" + std::to_string(i), "guess", "203.0.113.7").status, 401) << i;
  }
  // The guessing client is limited; another client behind the same proxy is not.
  EXPECT_EQ(SignIn("late", "late-password", "203.0.113.7").status, 429);
  EXPECT_EQ(SignIn("late", "late-password", "203.0.113.8").status, 201);
  // A client naming a forged address before the proxy's entry gains nothing.
  EXPECT_EQ(SignIn("late", "late-password", "203.0.113.8, 203.0.113.7").status, 429);
  // The audit says who and through what: "client via proxy:port".
  int from_seven = 0;
  int from_eight = 0;
  for (const auto& r : Audit()) {
    if (r.action != "POST /v1/sessions") continue;
    if (r.source.starts_with("203.0.113.7 via 127.0.0.1:")) ++from_seven;
    if (r.source.starts_with("203.0.113.8 via 127.0.0.1:")) ++from_eight;
  }
  EXPECT_EQ(from_seven, limits.max_failures_per_source + 2);
  EXPECT_EQ(from_eight, 1);
  // What a forwarded request records carries the same source.
  const Reply me =
      w().Call("GET", "/v1/me", w().tokens.at("dr-a"), {}, {{"X-Forwarded-For", "192.0.2.44"}});
  EXPECT_EQ(me.status, 200);
  bool seen = false;
  for (const auto& r : Audit()) {
    if (r.action == "GET /v1/me" && r.source.starts_with("192.0.2.44 via 127.0.0.1:")) seen = true;
  }
  EXPECT_TRUE(seen);
}

TEST_P(SecurityTest, EverySignInAttemptIsAuditedWithoutThePassword) {
  w().User("clerk", "clinic-a", service::Role::kClinicStaff, {}, "clerk-secret-password");
  ASSERT_EQ(SignIn("clerk", "clerk-secret-password").status, 201);
  ASSERT_EQ(SignIn("clerk", "not-the-clerk-password").status, 401);
  int attempts = 0;
  std::set<std::string> outcomes;
  for (const auto& r : Audit()) {
    for (std::string_view secret : {"clerk-secret-password", "not-the-clerk-password"}) {
      EXPECT_EQ(r.detail.find(secret), std::string::npos) << r.detail;
      EXPECT_EQ(r.action.find(secret), std::string::npos) << r.action;
    }
    if (r.action == "POST /v1/sessions") {
      ++attempts;
      outcomes.insert(r.outcome);
      EXPECT_NE(r.detail.find("clerk"), std::string::npos);
      EXPECT_FALSE(r.source.empty());
    }
  }
  EXPECT_EQ(attempts, 2);
  EXPECT_EQ(outcomes, (std::set<std::string>{"ok", "refused"}));
}

TEST_P(SecurityTest, NoRouteChangesOrRemovesTheAuditLog) {
  // Some history first: reads, a refusal, a write.
  EXPECT_EQ(w().Call("GET", "/v1/me", w().tokens.at("dr-a")).status, 200);
  EXPECT_EQ(w().Call("GET", "/v1/audit", w().tokens.at("dr-a")).status, 403);
  const auto before = Audit();
  ASSERT_GE(before.size(), 2u);

  // Every route, every method, as the program admin (the one role that reads the audit) and as
  // a prescriber, with bodies that try to name audit rows.
  const std::vector<std::string> methods = {"GET", "POST", "PUT", "PATCH", "DELETE"};
  const std::string body = R"({"id":1,"audit_id":1,"action":"x","detail":"erased"})";
  int requests = 0;
  for (const RouteInfo& route : w().router().Routes()) {
    std::string target = route.pattern;
    for (size_t open = target.find('{'); open != std::string::npos; open = target.find('{')) {
      target.replace(open, target.find('}', open) - open + 1, "1");
    }
    for (const std::string& method : methods) {
      for (const char* who : {"admin", "dr-a"}) {
        w().Call(method, target, w().tokens.at(who), method == "GET" ? "" : body);
        ++requests;
      }
    }
  }
  for (const char* method : {"PUT", "PATCH", "DELETE", "POST"}) {
    const Reply r = w().Call(method, "/v1/audit", w().tokens.at("admin"), body);
    EXPECT_EQ(r.status, 405) << method << " /v1/audit: " << r.raw.body;
  }
  const auto after = Audit();
  // What was there is there, unchanged and in order; the requests above only added rows (one
  // per request that reached a route's handler; a method a route does not have is answered
  // 405 by the router before any).
  ASSERT_GT(requests, 0);
  ASSERT_GT(after.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after[i].id, before[i].id);
    EXPECT_EQ(after[i].action, before[i].action);
    EXPECT_EQ(after[i].actor_id, before[i].actor_id);
    EXPECT_EQ(after[i].outcome, before[i].outcome);
    EXPECT_EQ(after[i].detail, before[i].detail);
    EXPECT_EQ(after[i].at, before[i].at);
  }
}

INSTANTIATE_TEST_SUITE_P(Sqlite, SecurityTest, ::testing::Values(ApiBackend{"Sqlite", false}),
                         [](const auto& param_info) { return param_info.param.name; });
INSTANTIATE_TEST_SUITE_P(Postgres, SecurityTest, ::testing::Values(ApiBackend{"Postgres", true}),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace isoguard::server::testing
