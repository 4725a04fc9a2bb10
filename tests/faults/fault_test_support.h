// Shared by the fault tests (tests/faults): the real `isoguard serve` in a child process that a
// test can kill and start again on the same store, the isoguard command run to completion, and
// one HTTP request over loopback with a deadline. Every wait here waits for an event (a line on
// the child's standard output, an answer, waitpid) with a deadline, never for a fixed time.
//
// Soak: with ISOGUARD_SOAK=1 in the environment (`make soak`) the tests run their long versions
// (more rounds, longer load); without it, versions short enough for every CI run.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "../server/http_test_client.h"

namespace isoguard::faults {

inline bool SoakRequested() {
  const char* soak = std::getenv("ISOGUARD_SOAK");
  return soak != nullptr && std::string_view(soak) == "1";
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // standard output (standard error is appended when asked for)
};

// Runs a shell command to completion.
inline CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return result;
  std::array<char, 4096> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) result.output.append(buf.data(), n);
  const int status = ::pclose(p);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline std::string IsoguardBinary() { return ISOGUARD_BINARY; }

// The token of `isoguard admin create-user`'s JSON line ("" when there is none).
inline std::string TokenOf(const std::string& json_line) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(json_line, ec);
  if (ec || !v.is_object() || !v.as_object().contains("token")) return {};
  return std::string(v.at("token").as_string());
}

// A store (`db`: sqlite:PATH or a PostgreSQL URL) with a clinic and one prescriber; the
// prescriber's token, or "" when a step failed.
inline std::string MakeStoreWithPrescriber(const std::string& db) {
  const std::string bin = IsoguardBinary();
  // The event store must exist first: an import of nothing creates it.
  if (RunCommand(bin + " import /dev/null --db '" + db + "' 2>&1").exit_code != 0) return {};
  const std::string admin = bin + " admin --db '" + db + "' ";
  if (RunCommand(admin + "create-org --id clinic --kind clinic --jurisdiction US 2>&1").exit_code !=
      0) {
    return {};
  }
  return TokenOf(
      RunCommand(admin + "create-user --id dr --org clinic --role prescriber 2>/dev/null").output);
}

// The file-descriptor limit raised to its hard limit (for thousands of sockets); the soft limit
// now in force.
inline rlim_t RaiseOpenFileLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    ::getrlimit(RLIMIT_NOFILE, &limit);
  }
  return limit.rlim_cur;
}

// `isoguard serve` as a child process, its standard error in a log file.
class ServeProcess {
 public:
  ServeProcess() = default;
  ~ServeProcess() { Kill(SIGKILL); }
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  // Starts `isoguard serve --db DB --listen 127.0.0.1:0 EXTRA...` and waits (up to `deadline`)
  // for the line that names its port. False when the child ended or said nothing in time.
  bool Start(const std::string& db, const std::string& log_path,
             const std::vector<std::string>& extra = {},
             std::chrono::milliseconds deadline = std::chrono::seconds(60)) {
    const std::string bin = IsoguardBinary();
    std::vector<std::string> args = {bin, "serve", "--db", db, "--listen", "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) return false;  // dup2 below clears it on fd 1
    // Everything the child needs is made before fork: only async-signal-safe calls after it.
    const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    started_ = std::chrono::steady_clock::now();
    pid_ = ::fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      ::dup2(out_pipe[1], 1);
      if (log_fd >= 0) ::dup2(log_fd, 2);
      ::close(out_pipe[0]);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    if (log_fd >= 0) ::close(log_fd);
    ::close(out_pipe[1]);
    out_fd_ = out_pipe[0];
    // "isoguard: serving on http://127.0.0.1:PORT (stop with Ctrl-C or SIGTERM)"
    std::string line;
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (line.find('\n') == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{out_fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      char c;
      if (::read(out_fd_, &c, 1) != 1) return false;
      line += c;
    }
    const size_t stop = line.find(" (stop");
    const size_t colon = line.rfind(':', stop);
    if (stop == std::string::npos || colon == std::string::npos) return false;
    port_ = static_cast<uint16_t>(std::stoi(line.substr(colon + 1)));
    return true;
  }

  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  std::chrono::steady_clock::time_point started() const { return started_; }

  // Sends `signal` and waits for the child; its wait status (-1 when none was running).
  int Kill(int signal) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, signal);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    if (out_fd_ >= 0) ::close(out_fd_);
    out_fd_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  uint16_t port_ = 0;
  std::chrono::steady_clock::time_point started_;
};

// One request on a connection of its own; nothing when the server does not answer in time.
inline std::optional<server::testing::RawResponse> Call(
    uint16_t port, std::string_view method, std::string_view target, const std::string& token = {},
    std::string_view body = {}, std::string extra_headers = {},
    std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  server::testing::TestConnection c(port, timeout);
  if (!c.connected()) return std::nullopt;
  if (!token.empty()) extra_headers += "Authorization: Bearer " + token + "\r\n";
  if (!body.empty()) extra_headers += "Content-Type: application/json\r\n";
  if (!c.Send(server::testing::RequestText(method, target, extra_headers, body))) {
    return std::nullopt;
  }
  return c.ReadResponse();
}

// Polls GET /healthz until it answers 200 (or the deadline passes).
inline bool WaitHealthy(uint16_t port,
                        std::chrono::milliseconds deadline = std::chrono::seconds(30)) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    auto r = Call(port, "GET", "/healthz", {}, {}, {}, std::chrono::seconds(2));
    if (r && r->status == 200) return true;
    // Refused at once while the server starts: a short pause keeps this loop off the cores.
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

// Enrolls `patient_id` (a US patient who cannot get pregnant: no test is due for the events
// the fault tests append). True on 201 or a replayed 200.
inline bool Enroll(uint16_t port, const std::string& token, const std::string& patient_id) {
  const std::string body = R"({"patient_id":")" + patient_id +
                           R"(","birth_date":"1990-01-01","jurisdiction":"US",)"
                           R"("category":"cannot_get_pregnant"})";
  auto r = Call(port, "POST", "/v1/patients", token, body,
                "Idempotency-Key: enroll-" + patient_id + "\r\n");
  return r && (r->status == 201 || r->status == 200);
}

// ---- Appends that a client logs

constexpr int kEventsPerAppend = 3;

// One append a client sent: acknowledged when the server answered 2xx.
struct Attempt {
  std::string patient_id;
  std::string key;  // its Idempotency-Key
  std::string body;
  std::vector<std::string> event_ids;  // the ids the client gave its events
  bool acknowledged = false;
  int64_t first_version = 0;
  int64_t last_version = 0;
};

inline std::string AppendBody(const std::vector<std::string>& ids, int seq) {
  boost::json::array events;
  for (size_t i = 0; i < ids.size(); ++i) {
    events.push_back(
        boost::json::object{{"type", "weight"},
                            {"id", ids[i]},
                            {"at", "2026-10-01T10:00:00Z"},
                            {"kg", 50.0 + (seq % 400) * 0.1 + static_cast<double>(i)}});
  }
  return boost::json::serialize(boost::json::object{{"events", std::move(events)}});
}

inline Attempt MakeAttempt(std::string patient_id, std::string key, int seq) {
  Attempt a;
  a.patient_id = std::move(patient_id);
  a.key = std::move(key);
  for (int i = 0; i < kEventsPerAppend; ++i)
    a.event_ids.push_back(a.key + "-e" + std::to_string(i));
  a.body = AppendBody(a.event_ids, seq);
  return a;
}

// The append's request: POST /v1/patients/{id}/events with its Idempotency-Key.
inline std::string AppendRequestText(const Attempt& a, const std::string& token) {
  return server::testing::RequestText("POST", "/v1/patients/" + a.patient_id + "/events",
                                      "Authorization: Bearer " + token +
                                          "\r\nContent-Type: application/json\r\n" +
                                          "Idempotency-Key: " + a.key + "\r\n",
                                      a.body);
}

// Records `answer` into `a` when it acknowledges the append; false when it is a 2xx that does
// not match what was sent (a bug, reported by the caller).
inline bool Acknowledge(Attempt& a, const server::testing::RawResponse& answer) {
  if (answer.status != 201 && answer.status != 200) return true;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(answer.body, ec);
  if (ec || !v.is_object()) return false;
  const boost::json::object& o = v.as_object();
  std::vector<std::string> ids;
  for (const boost::json::value& id : o.at("event_ids").as_array())
    ids.emplace_back(id.as_string());
  if (ids != a.event_ids) return false;
  a.first_version = o.at("first_version").as_int64();
  a.last_version = o.at("version").as_int64();
  a.acknowledged = a.last_version - a.first_version + 1 == kEventsPerAppend;
  return a.acknowledged;
}

// event id -> version, of every entry of the patient's stream (read through the API).
inline std::optional<std::map<std::string, int64_t>> StoredVersions(uint16_t port,
                                                                    const std::string& token,
                                                                    const std::string& patient_id) {
  auto r = Call(port, "GET", "/v1/patients/" + patient_id + "/events", token);
  if (!r || r->status != 200) return std::nullopt;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(r->body, ec);
  if (ec) return std::nullopt;
  std::map<std::string, int64_t> out;
  for (const boost::json::value& e : v.at("entries").as_array()) {
    out[std::string(e.at("event_id").as_string())] = e.at("version").as_int64();
  }
  return out;
}

// patient id -> the ids of the weight events `isoguard export --db DB` writes (nothing when
// export fails).
inline std::optional<std::map<std::string, std::vector<std::string>>> ExportedWeightIds(
    const std::string& db) {
  const CommandResult exported =
      RunCommand(IsoguardBinary() + " export --db '" + db + "' 2>/dev/null");
  if (exported.exit_code != 0) return std::nullopt;
  std::map<std::string, std::vector<std::string>> out;
  size_t start = 0;
  while (start < exported.output.size()) {
    size_t end = exported.output.find('\n', start);
    if (end == std::string::npos) end = exported.output.size();
    boost::json::value record = boost::json::parse(exported.output.substr(start, end - start));
    start = end + 1;
    const std::string patient(record.at("patient").at("id").as_string());
    auto& ids = out[patient];
    for (const boost::json::value& e : record.at("events").as_array()) {
      if (e.at("type").as_string() == "weight") ids.emplace_back(e.at("id").as_string());
    }
  }
  return out;
}

// Every attempt acknowledged, and the store holds exactly their events, each once.
inline void ExpectExactlyTheseAppends(const std::vector<Attempt>& log, const std::string& db,
                                      size_t* total_events = nullptr) {
  auto stored = ExportedWeightIds(db);
  ASSERT_TRUE(stored.has_value()) << "isoguard export failed";
  std::map<std::string, std::vector<std::string>> expected;
  for (const Attempt& a : log) {
    ASSERT_TRUE(a.acknowledged) << a.key;
    auto& ids = expected[a.patient_id];
    ids.insert(ids.end(), a.event_ids.begin(), a.event_ids.end());
  }
  size_t total = 0;
  for (auto& [patient, ids] : expected) {
    std::vector<std::string> have = (*stored)[patient];
    std::sort(have.begin(), have.end());
    std::sort(ids.begin(), ids.end());
    EXPECT_EQ(have, ids) << patient;
    total += ids.size();
  }
  if (total_events != nullptr) *total_events = total;
}

}  // namespace isoguard::faults
