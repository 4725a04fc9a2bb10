// `isoguard serve` and `isoguard admin` as a user runs them: the real binary in a child
// process, accounts made from the command line, requests over loopback, SIGTERM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/json.hpp>
#include <cstdio>
#include <string>

#include "../server/http_test_client.h"
#include "../store/store_test_support.h"

namespace isoguard {
namespace {

namespace json = boost::json;

// Runs the binary to completion; its standard output.
std::string Shell(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return out;
  std::array<char, 4096> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  ::pclose(p);
  return out;
}

std::string TokenOf(const std::string& json_line) {
  boost::system::error_code ec;
  json::value v = json::parse(json_line, ec);
  if (ec || !v.is_object() || !v.as_object().contains("token")) return {};
  return std::string(v.at("token").as_string());
}

TEST(ServeCommand, ABadTrustedProxyListIsRefusedBeforeServing) {
  store::testing::TempDir dir;
  const std::string bin = ISOGUARD_BINARY;
  const std::string db = "sqlite:" + dir.File("p.db");
  // Each list and the entry its error names.
  for (const auto& [list, entry] :
       {std::pair<std::string, std::string>{"10.0.0.0/33", "10.0.0.0/33"},
        {"proxy.example", "proxy.example"},
        {"10.0.0.1,", ""}}) {
    const std::string out =
        Shell(bin + " serve --db " + db + " --listen 127.0.0.1:0 --trusted-proxy '" + list +
              "' 2>&1; echo \"exit $?\"");
    EXPECT_NE(out.find("--trusted-proxy: '" + entry + "'"), std::string::npos) << out;
    EXPECT_NE(out.find("exit 2"), std::string::npos) << out;
    EXPECT_EQ(out.find("serving on"), std::string::npos) << out;
  }
}

TEST(ServeCommand, AdminThenServeThenSigtermStopsCleanly) {
  store::testing::TempDir dir;
  const std::string db = "sqlite:" + dir.File("s.db");
  const std::string bin = ISOGUARD_BINARY;
  const std::string admin = bin + " admin --db " + db + " ";
  // The event store must exist first: an import of nothing creates it.
  Shell(bin + " import /dev/null --db " + db + " 2>/dev/null");
  Shell(admin + "create-org --id clinic --kind clinic --jurisdiction US");
  const std::string token =
      TokenOf(Shell(admin + "create-user --id dr --org clinic --role prescriber"));
  ASSERT_FALSE(token.empty());
  EXPECT_NE(Shell(admin + "create-user --id dr --org clinic --role prescriber 2>&1").find("dr"),
            std::string::npos);  // a second account with the id is refused, naming it

  int out_pipe[2];
  ASSERT_EQ(::pipe(out_pipe), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::dup2(out_pipe[1], 1);
    ::close(out_pipe[0]);
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 2);
    const std::string db_arg = db;
    ::execl(bin.c_str(), bin.c_str(), "serve", "--db", db_arg.c_str(), "--listen", "127.0.0.1:0",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  // "isoguard: serving on http://127.0.0.1:PORT ..."
  std::string line;
  char c;
  while (line.find('\n') == std::string::npos && ::read(out_pipe[0], &c, 1) == 1) line += c;
  const size_t colon = line.rfind(':', line.find(" (stop"));
  ASSERT_NE(colon, std::string::npos) << line;
  const auto port = static_cast<uint16_t>(std::stoi(line.substr(colon + 1)));

  server::testing::TestConnection ready(port);
  ASSERT_TRUE(ready.Send("GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r = ready.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  server::testing::TestConnection enroll(port);
  const std::string body =
      R"({"patient_id":"p-1","birth_date":"1990-01-01","jurisdiction":"US","category":"cannot_get_pregnant"})";
  ASSERT_TRUE(enroll.Send("POST /v1/patients HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                          token + "\r\nContent-Type: application/json\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body));
  r = enroll.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 201) << r->body;
  server::testing::TestConnection spec(port);
  ASSERT_TRUE(spec.Send("GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"));
  r = spec.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_NE(r->body.find("\"openapi\""), std::string::npos);

  ASSERT_EQ(::kill(child, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  std::string rest;
  while (::read(out_pipe[0], &c, 1) == 1) rest += c;
  ::close(out_pipe[0]);
  EXPECT_NE(rest.find("stopped"), std::string::npos);
  // What was acknowledged is in the store.
  EXPECT_NE(Shell(bin + " export --db " + db).find("\"p-1\""), std::string::npos);
}

}  // namespace
}  // namespace isoguard
