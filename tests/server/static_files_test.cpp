#include "server/static_files.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "server/router.h"

namespace isoguard::server {
namespace {

namespace fs = std::filesystem;

const std::string* Header(const HttpResponse& response, std::string_view name) {
  for (const auto& [n, v] : response.headers) {
    if (n == name) return &v;
  }
  return nullptr;
}

class StaticFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    root_ = fs::temp_directory_path() / ("isoguard-static-" + std::to_string(rd()));
    fs::create_directories(root_ / "dist" / "vendor");
    dist_ = root_ / "dist";
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const fs::path& path, const std::string& bytes) {
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << bytes;
  }

  fs::path root_;
  fs::path dist_;
};

TEST_F(StaticFilesTest, ServesKnownFilesWithTypesAndCaching) {
  Write(dist_ / "index.html", "<!doctype html><title>isoguard</title>");
  Write(dist_ / "app.js", "export const x = 1;");
  Write(dist_ / "vendor" / "uplot.css", ".u{}");
  auto files = StaticFiles::Load(dist_);
  ASSERT_TRUE(files.ok()) << files.error().message;
  EXPECT_EQ(files->Paths(),
            (std::vector<std::string>{"/app.js", "/index.html", "/vendor/uplot.css"}));

  HttpResponse index = files->Serve(HttpRequest{}, "/");
  EXPECT_EQ(index.status, 200);
  EXPECT_EQ(index.content_type, "text/html; charset=utf-8");
  EXPECT_EQ(index.body, "<!doctype html><title>isoguard</title>");
  ASSERT_NE(Header(index, "ETag"), nullptr);
  EXPECT_EQ(*Header(index, "Cache-Control"), "no-cache");
  EXPECT_EQ(*Header(index, "X-Content-Type-Options"), "nosniff");
  ASSERT_NE(Header(index, "Content-Security-Policy"), nullptr);

  EXPECT_EQ(files->Serve(HttpRequest{}, "/app.js").content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(files->Serve(HttpRequest{}, "/vendor/uplot.css").content_type,
            "text/css; charset=utf-8");
}

TEST_F(StaticFilesTest, MatchingIfNoneMatchIsNotModified) {
  Write(dist_ / "app.js", "export const x = 1;");
  auto files = StaticFiles::Load(dist_);
  ASSERT_TRUE(files.ok());
  const std::string etag = *Header(files->Serve(HttpRequest{}, "/app.js"), "ETag");

  HttpRequest again;
  again.headers.emplace_back("if-none-match", "\"other\", W/" + etag);
  HttpResponse r = files->Serve(again, "/app.js");
  EXPECT_EQ(r.status, 304);
  EXPECT_TRUE(r.body.empty());
  EXPECT_EQ(*Header(r, "ETag"), etag);

  HttpRequest stale;
  stale.headers.emplace_back("if-none-match", "\"0000000000000000-19\"");
  EXPECT_EQ(files->Serve(stale, "/app.js").status, 200);
}

TEST_F(StaticFilesTest, TheEtagChangesWithTheBytes) {
  Write(dist_ / "app.js", "export const x = 1;");
  auto first = StaticFiles::Load(dist_);
  Write(dist_ / "app.js", "export const x = 2;");
  auto second = StaticFiles::Load(dist_);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(first->Find("/app.js")->etag, second->Find("/app.js")->etag);
}

TEST_F(StaticFilesTest, LeavesOutHiddenUnknownAndLinkedFiles) {
  Write(dist_ / "index.html", "ok");
  Write(dist_ / ".env", "SECRET=1");
  Write(dist_ / "app.js.map", "{}");
  Write(dist_ / "notes.md", "# private");
  Write(dist_ / "we ird.js", "x");
  Write(root_ / "outside.js", "outside");
  fs::create_symlink(root_ / "outside.js", dist_ / "linked.js");
  fs::create_directory_symlink(root_, dist_ / "up");
  auto files = StaticFiles::Load(dist_);
  ASSERT_TRUE(files.ok()) << files.error().message;
  EXPECT_EQ(files->Paths(), (std::vector<std::string>{"/index.html"}));
  EXPECT_EQ(files->Find("/../outside.js"), nullptr);
  EXPECT_EQ(files->Find("/up/outside.js"), nullptr);
  EXPECT_EQ(files->Serve(HttpRequest{}, "/.env").status, 404);
}

TEST_F(StaticFilesTest, NoPathOfARequestReachesTheFileSystem) {
  Write(dist_ / "index.html", "ok");
  Write(root_ / "secret.txt", "secret");
  auto files = StaticFiles::Load(dist_);
  ASSERT_TRUE(files.ok());
  Router router;
  AddStaticRoutes(router, std::make_shared<const StaticFiles>(std::move(*files)));
  for (const char* path : {"/../secret.txt", "/%2e%2e/secret.txt", "/vendor/../../secret.txt",
                           "//secret.txt", "/index.html/"}) {
    RouteMatch m = router.Match("GET", path);
    EXPECT_EQ(m.handler, nullptr) << path;
  }
  RouteMatch root = router.Match("GET", "/");
  ASSERT_NE(root.handler, nullptr);
  EXPECT_EQ((*root.handler)(HttpRequest{}, root.params).body, "ok");
  RouteMatch post = router.Match("POST", "/index.html");
  ASSERT_TRUE(post.problem.has_value());
  EXPECT_EQ(post.problem->status, 405);
}

TEST_F(StaticFilesTest, TheApisRoutesWin) {
  Write(dist_ / "index.html", "ok");
  Write(dist_ / "openapi.json", "{\"stale\":true}");
  Write(dist_ / "v1" / "me.json", "{}");
  auto files = StaticFiles::Load(dist_);
  ASSERT_TRUE(files.ok());
  Router router;
  router.Add("GET", "/openapi.json", [](const HttpRequest&, const PathParams&) {
    HttpResponse r;
    r.body = "the API's";
    return r;
  });
  router.Add("GET", "/v1/{what}", [](const HttpRequest&, const PathParams&) {
    HttpResponse r;
    r.body = "the API's too";
    return r;
  });
  AddStaticRoutes(router, std::make_shared<const StaticFiles>(std::move(*files)));
  RouteMatch doc = router.Match("GET", "/openapi.json");
  ASSERT_NE(doc.handler, nullptr);
  EXPECT_EQ((*doc.handler)(HttpRequest{}, doc.params).body, "the API's");
  RouteMatch me = router.Match("GET", "/v1/me.json");
  ASSERT_NE(me.handler, nullptr);
  EXPECT_EQ((*me.handler)(HttpRequest{}, me.params).body, "the API's too");
  RouteMatch index = router.Match("GET", "/");
  ASSERT_NE(index.handler, nullptr);
  EXPECT_EQ((*index.handler)(HttpRequest{}, index.params).body, "ok");
}

TEST_F(StaticFilesTest, LimitsAreEnforcedAtTheLimitAndOnePast) {
  StaticFileLimits limits;
  limits.max_file_bytes = 10;
  limits.max_total_bytes = 15;
  limits.max_files = 2;
  Write(dist_ / "a.js", std::string(10, 'a'));
  ASSERT_TRUE(StaticFiles::Load(dist_, limits).ok());

  Write(dist_ / "a.js", std::string(11, 'a'));
  auto too_big = StaticFiles::Load(dist_, limits);
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.error().field.find("a.js"), std::string::npos);

  Write(dist_ / "a.js", std::string(10, 'a'));
  Write(dist_ / "b.js", std::string(5, 'b'));
  ASSERT_TRUE(StaticFiles::Load(dist_, limits).ok());
  Write(dist_ / "b.js", std::string(6, 'b'));
  EXPECT_FALSE(StaticFiles::Load(dist_, limits).ok());

  Write(dist_ / "b.js", "b");
  Write(dist_ / "c.js", "c");
  EXPECT_FALSE(StaticFiles::Load(dist_, limits).ok());
}

TEST_F(StaticFilesTest, AMissingDirectoryIsNotFound) {
  auto files = StaticFiles::Load(root_ / "absent");
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.error().kind, ErrorKind::kNotFound);
}

}  // namespace
}  // namespace isoguard::server
