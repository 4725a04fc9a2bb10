// No secret reaches the logs: the real `isoguard serve` with its request log on, driven through
// sign-in (right and wrong passwords), tokens (good, unknown, revoked), writes and reads, and
// then every line it wrote is searched for the passwords and tokens it saw.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../server/http_test_client.h"
#include "../store/store_test_support.h"

namespace isoguard {
namespace {

namespace json = boost::json;

std::string Shell(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return out;
  std::array<char, 4096> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  ::pclose(p);
  return out;
}

std::string Field(const std::string& json_text, const char* key) {
  boost::system::error_code ec;
  json::value v = json::parse(json_text, ec);
  if (ec || !v.is_object() || !v.as_object().contains(key)) return {};
  return std::string(v.at(key).as_string());
}

struct Answer {
  int status = 0;
  std::string body;
};

Answer Call(uint16_t port, const std::string& method, const std::string& target,
            const std::string& token, const std::string& body = {}) {
  server::testing::TestConnection c(port);
  std::string extra = "Connection: close\r\n";
  if (!token.empty()) extra += "Authorization: Bearer " + token + "\r\n";
  if (!body.empty()) extra += "Content-Type: application/json\r\n";
  c.Send(server::testing::RequestText(method, target, extra, body));
  auto r = c.ReadResponse();
  if (!r) return {};
  return {r->status, r->body};
}

TEST(SecretsInLogs, AFullRunLogsNoPasswordAndNoToken) {
  store::testing::TempDir dir;
  const std::string db = "sqlite:" + dir.File("s.db");
  const std::string bin = ISOGUARD_BINARY;
  const std::string admin = bin + " admin --db " + db + " ";
  Shell(bin + " import /dev/null --db " + db + " 2>/dev/null");
  Shell(admin + "create-org --id clinic --kind clinic --jurisdiction US");
  const std::string password = "Correct-Horse-Battery-Staple-7";
  const std::string wrong_password = "Wrong-Horse-Battery-Staple-8";
  const std::string api_token =
      Field(Shell("echo '" + password + "' | " + admin +
                  "create-user --id dr --org clinic --role prescriber --password-stdin"),
            "token");
  ASSERT_FALSE(api_token.empty());
  const std::string log_file = dir.File("serve.log");

  int out_pipe[2];
  ASSERT_EQ(::pipe(out_pipe), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::dup2(out_pipe[1], 1);
    ::close(out_pipe[0]);
    const int log = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(log, 2);
    ::execl(bin.c_str(), bin.c_str(), "serve", "--db", db.c_str(), "--listen", "127.0.0.1:0",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  std::string line;
  char c;
  while (line.find('\n') == std::string::npos && ::read(out_pipe[0], &c, 1) == 1) line += c;
  const size_t colon = line.rfind(':', line.find(" (stop"));
  ASSERT_NE(colon, std::string::npos) << line;
  const auto port = static_cast<uint16_t>(std::stoi(line.substr(colon + 1)));

  std::vector<std::string> secrets = {password, wrong_password, api_token};
  EXPECT_EQ(Call(port, "GET", "/v1/me", api_token).status, 200);
  const Answer session = Call(port, "POST", "/v1/sessions", {},
                              R"({"account_id":"dr","password":")" + password + R"("})");
  ASSERT_EQ(session.status, 201) << session.body;
  const std::string session_token = Field(session.body, "token");
  ASSERT_FALSE(session_token.empty());
  secrets.push_back(session_token);
  EXPECT_EQ(Call(port, "POST", "/v1/sessions", {},
                 R"({"account_id":"dr","password":")" + wrong_password + R"("})")
                .status,
            401);
  // A token that looks right but is unknown, and one in a malformed body.
  const std::string forged = api_token.substr(0, api_token.size() - 4) + "AAAA";
  secrets.push_back(forged);
  EXPECT_EQ(Call(port, "GET", "/v1/me", forged).status, 401);
  EXPECT_EQ(Call(port, "POST", "/v1/patients", session_token,
                 R"({"patient_id":"p-1","birth_date":"2001-01-01","jurisdiction":"US",)"
                 R"("category":"cannot_get_pregnant"})")
                .status,
            201);
  EXPECT_EQ(Call(port, "POST", "/v1/patients", session_token, "{\"token\":\"" + api_token).status,
            400);
  EXPECT_EQ(Call(port, "GET", "/v1/patients/p-1", session_token).status, 200);
  EXPECT_EQ(Call(port, "DELETE", "/v1/sessions/current", session_token).status, 204);
  EXPECT_EQ(Call(port, "GET", "/v1/me", session_token).status, 401);  // revoked

  ::kill(child, SIGTERM);
  int status = 0;
  ::waitpid(child, &status, 0);
  ::close(out_pipe[0]);

  std::ifstream in(log_file);
  std::stringstream text;
  text << in.rdbuf();
  const std::string log = text.str();
  // The log is there and has the requests (else the search below would prove nothing).
  ASSERT_NE(log.find("\"route\":\"/v1/sessions\""), std::string::npos) << log;
  ASSERT_NE(log.find("\"status\":401"), std::string::npos) << log;
  for (const std::string& secret : secrets) {
    EXPECT_EQ(log.find(secret), std::string::npos) << "a secret is in the log: " << secret;
    // Not even the token's random part (what follows its prefix).
    EXPECT_EQ(log.find(secret.substr(secret.size() / 2)), std::string::npos) << secret;
  }
}

}  // namespace
}  // namespace isoguard
