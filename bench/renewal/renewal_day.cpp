// isoguard-renewal: an open-loop load generator replaying a national renewal day against a
// running `isoguard serve` (scripts/bench-renewal prepares the store and the accounts).
//
// Requests are sent on a fixed schedule at --rate per second whatever the server does, and each
// latency is measured from the request's scheduled time (not from when a connection was free
// to send it), so a server that stalls cannot hide the queue it builds: its latency shows it.
// Up to --connections requests are in flight at once (keep-alive connections, one thread
// each); when all are busy, the next request waits and its wait counts.
//
// The day's mix (--mix to change it): pharmacies looking a patient up, asking for
// authorizations for the prescriptions they found and dispensing the ones granted (with a lot
// of the prescribed product whose strength makes every dose in whole capsules); prescribers
// recording pregnancy tests and visits and reading their worklist; patients attesting their
// contraception and answering the comprehension questions.
//
// Output: per route, the requests, errors by status, throughput and p50/p99/p99.9 latency;
// the same as one JSON object with --json. Exit status 0 whatever the numbers (a harness
// judges them), 2 on bad arguments or a server that cannot be reached.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "domain/codes.h"
#include "rules/rulebook.h"
#include "rules/rulebook_loader.h"

namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

// ---- Arguments.

struct Options {
  std::string host = "127.0.0.1";
  int port = 8080;
  double rate = 1000;  // requests per second, all routes together
  double seconds = 30;
  int connections = 64;
  int64_t patients = 0;
  std::string id_prefix = "s1-p";
  std::string tokens_file;
  uint64_t seed = 1;
  std::string json_out;
  std::string data_dir = ISOGUARD_SOURCE_DIR;  // knowledge/products.toml: the lots to stock
  // Weights of: lookup, authorize, dispense, pregnancy_test, visit, worklist, contraception,
  // comprehension.
  std::vector<double> mix = {20, 25, 10, 15, 10, 5, 10, 5};
};

[[noreturn]] void Usage(const std::string& problem) {
  std::cerr << "isoguard-renewal: " << problem << "\n"
            << "usage: isoguard-renewal --port P --patients N --tokens FILE [--host H] [--rate R]\n"
               "         [--seconds S] [--connections C] [--id-prefix s1-p] [--seed N]\n"
               "         [--mix a,b,c,d,e,f,g,h] [--json FILE] [--data-dir DIR]\n";
  std::exit(2);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--host")
        o.host = value();
      else if (a == "--port")
        o.port = std::stoi(value());
      else if (a == "--rate")
        o.rate = std::stod(value());
      else if (a == "--seconds")
        o.seconds = std::stod(value());
      else if (a == "--connections")
        o.connections = std::stoi(value());
      else if (a == "--patients")
        o.patients = std::stoll(value());
      else if (a == "--id-prefix")
        o.id_prefix = value();
      else if (a == "--tokens")
        o.tokens_file = value();
      else if (a == "--seed")
        o.seed = std::stoull(value());
      else if (a == "--json")
        o.json_out = value();
      else if (a == "--data-dir")
        o.data_dir = value();
      else if (a == "--mix") {
        o.mix.clear();
        std::stringstream in(value());
        for (std::string part; std::getline(in, part, ',');) o.mix.push_back(std::stod(part));
      } else {
        Usage("unknown argument " + a);
      }
    } catch (const std::exception&) {
      Usage("bad value for " + a);
    }
  }
  if (o.patients <= 0) Usage("--patients must be > 0");
  if (o.tokens_file.empty()) Usage("--tokens is required");
  if (o.rate <= 0 || o.rate > 1e6) Usage("--rate must be in (0, 1e6]");
  if (o.seconds <= 0 || o.seconds > 86400) Usage("--seconds must be in (0, 86400]");
  if (o.connections < 1 || o.connections > 10000) Usage("--connections must be in [1, 10000]");
  if (o.mix.size() != 8) Usage("--mix needs 8 weights");
  return o;
}

// ---- Accounts (scripts/bench-renewal writes them), one a line: "prescriber TOKEN" (the
// clinic of most patients), "panel_prescriber TOKEN COUNT" (a prescriber whose clinic cares for
// the first COUNT patients: the worklist a prescriber reads), "pharmacist TOKEN",
// "patient PATIENT_ID TOKEN".

struct Accounts {
  std::string prescriber, pharmacist, panel_prescriber;
  int64_t panel = 0;
  std::vector<std::pair<std::string, std::string>> patients;  // (patient id, token)
};

Accounts ReadAccounts(const std::string& path) {
  std::ifstream in(path);
  if (!in) Usage("cannot read " + path);
  Accounts a;
  for (std::string line; std::getline(in, line);) {
    std::stringstream s(line);
    std::string role, x, y;
    s >> role >> x >> y;
    if (role == "prescriber") {
      a.prescriber = x;
    } else if (role == "panel_prescriber") {
      a.panel_prescriber = x;
      a.panel = std::atoll(y.c_str());
    } else if (role == "pharmacist") {
      a.pharmacist = x;
    } else if (role == "patient" && !y.empty()) {
      a.patients.emplace_back(x, y);
    }
  }
  if (a.prescriber.empty() || a.pharmacist.empty() || a.panel_prescriber.empty() || a.panel < 1) {
    Usage(path + " must name a prescriber, a panel prescriber and a pharmacist");
  }
  return a;
}

// ---- A keep-alive HTTP/1.1 connection over a blocking socket.

class Connection {
 public:
  Connection(const std::string& host, int port) : host_(host), port_(port) {}
  ~Connection() { Close(); }

  struct Response {
    int status = 0;  // 0: no answer (connection error)
    std::string body;
  };

  Response Exchange(const std::string& request) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (fd_ < 0 && !Open()) return {};
      if (SendAll(request)) {
        Response r = Read();
        if (r.status != 0) return r;
      }
      Close();  // a kept-alive connection the server closed: once more on a new one
    }
    return {};
  }

 private:
  bool Open() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return false;
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    if (::inet_pton(AF_INET, host_.c_str(), &addr.sin_addr) != 1 ||
        ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      Close();
      return false;
    }
    buffer_.clear();
    return true;
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool SendAll(const std::string& s) {
    size_t sent = 0;
    while (sent < s.size()) {
      const ssize_t n = ::send(fd_, s.data() + sent, s.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  bool Fill() {
    char chunk[16384];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }
  Response Read() {
    size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (buffer_.size() > (1 << 20) || !Fill()) return {};
    }
    Response r;
    if (buffer_.compare(0, 5, "HTTP/") != 0 || buffer_.size() < 12) return {};
    r.status = std::atoi(buffer_.c_str() + 9);
    size_t length = 0;
    bool close = false;
    for (size_t at = buffer_.find("\r\n") + 2; at < end;) {
      const size_t eol = buffer_.find("\r\n", at);
      std::string line = buffer_.substr(at, eol - at);
      std::transform(line.begin(), line.end(), line.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (line.rfind("content-length:", 0) == 0) length = std::stoul(line.substr(15));
      if (line.rfind("connection:", 0) == 0 && line.find("close") != std::string::npos) {
        close = true;
      }
      at = eol + 2;
    }
    while (buffer_.size() < end + 4 + length) {
      if (!Fill()) return {};
    }
    r.body = buffer_.substr(end + 4, length);
    buffer_.erase(0, end + 4 + length);
    if (close) Close();
    return r;
  }

  std::string host_;
  int port_;
  int fd_ = -1;
  std::string buffer_;
};

// ---- The day.

enum Route {
  kLookup,
  kAuthorize,
  kDispense,
  kPregnancyTest,
  kVisit,
  kWorklist,
  kAttest,
  kComprehension,
  kRoutes
};
const char* kRouteNames[kRoutes] = {"GET  /v1/patients/{id}/pharmacy-view",
                                    "POST /v1/authorizations",
                                    "POST /v1/dispenses",
                                    "POST /v1/patients/{id}/events (pregnancy test)",
                                    "POST /v1/patients/{id}/events (visit)",
                                    "GET  /v1/worklists/prescriber",
                                    "POST /v1/patients/{id}/events (contraception)",
                                    "POST /v1/patients/{id}/events (comprehension)"};

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct Found {  // a prescription a pharmacy looked up, to ask for
  std::string patient, prescription, product;
  std::vector<double> doses;
};
struct Granted {  // an authorization to dispense
  std::string id, product;
  std::vector<double> doses;
};

// Work handed from one request to a later one (bounded: the oldest is dropped).
template <typename T>
class Handoff {
 public:
  void Push(T t) {
    std::lock_guard lock(mu_);
    if (q_.size() >= 100000) q_.pop_front();
    q_.push_back(std::move(t));
  }
  std::optional<T> Pop() {
    std::lock_guard lock(mu_);
    if (q_.empty()) return std::nullopt;
    T t = std::move(q_.front());
    q_.pop_front();
    return t;
  }

 private:
  std::mutex mu_;
  std::deque<T> q_;
};

// The first answer other than 2xx of each route, to say what it was.
struct FirstErrors {
  std::mutex mu;
  std::map<int, std::string> by_route;
  void Note(int route, int status, const std::string& body) {
    if (status >= 200 && status < 300) return;
    std::lock_guard lock(mu);
    if (by_route.contains(route)) return;
    by_route[route] = std::to_string(status) + " " + body.substr(0, 300);
  }
};

struct Sample {
  uint8_t route;
  int16_t status;
  uint32_t micros;  // from the scheduled time to the whole answer
};

// An answer the day did not expect. Not errors: 2xx, and 409 to an authorization (the
// prescription holds an open authorization of another pharmacy: the program's rule, answered
// with when it ends) or to a dispense (the authorization expired or was used meanwhile).
bool IsError(const Sample& s) {
  if (s.status >= 200 && s.status < 300) return false;
  return !(s.status == 409 && (s.route == kAuthorize || s.route == kDispense));
}

std::string UtcNow() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string Today() { return UtcNow().substr(0, 10); }

class Day {
 public:
  Day(Options o, Accounts a, const isoguard::Rulebook& book) : o_(std::move(o)), a_(std::move(a)) {
    // Every product and capsule strength of knowledge/products.toml, largest first.
    for (int p = 0; p < isoguard::kProductCount; ++p) {
      const auto product = static_cast<isoguard::Product>(p);
      auto strengths = book.knowledge.product(product).strengths_mg;
      std::sort(strengths.rbegin(), strengths.rend());
      strengths_[std::string(isoguard::ToString(product))] = strengths;
    }
    double total = 0;
    for (double w : o_.mix) total += w;
    double acc = 0;
    for (double w : o_.mix) {
      acc += w / total;
      cumulative_.push_back(acc);
    }
  }

  // Lots of every product and strength the bench may need, at the bench pharmacy.
  bool StockTheShelves() {
    Connection c(o_.host, o_.port);
    for (const auto& [product, strengths] : strengths_) {
      for (double s : strengths) {
        const std::string id = LotId(product, s);
        const std::string body = json::serialize(json::object{{"lot_id", id},
                                                              {"product", product},
                                                              {"strength_mg", s},
                                                              {"lot_number", id},
                                                              {"expiry", "2099-12-31"},
                                                              {"location", "bench-shelf"},
                                                              {"quantity_capsules", 1000000}});
        const auto r = c.Exchange(Request("POST", "/v1/stock/lots", a_.pharmacist, body));
        if (r.status != 201 && r.status != 409) {
          std::cerr << "isoguard-renewal: cannot add lot " << id << ": " << r.status << " "
                    << r.body << "\n";
          return false;
        }
      }
    }
    return true;
  }

  void Run() {
    const auto total = static_cast<int64_t>(o_.rate * o_.seconds);
    const auto interval = std::chrono::duration<double>(1.0 / o_.rate);
    start_ = Clock::now() + std::chrono::milliseconds(100);
    std::vector<std::thread> threads;
    std::vector<std::vector<Sample>> samples(static_cast<size_t>(o_.connections));
    for (int t = 0; t < o_.connections; ++t) {
      threads.emplace_back([&, t] {
        Connection c(o_.host, o_.port);
        auto& mine = samples[static_cast<size_t>(t)];
        mine.reserve(static_cast<size_t>(total / o_.connections + 16));
        for (;;) {
          const int64_t i = next_.fetch_add(1);
          if (i >= total) break;
          const auto scheduled = start_ + std::chrono::duration_cast<Clock::duration>(
                                              interval * static_cast<double>(i));
          std::this_thread::sleep_until(scheduled);
          const Route route = Pick(i);
          const auto [used, answer] = Perform(c, route, i);
          const int status = answer.status;
          errors_.Note(used, status, answer.body);
          const auto done = Clock::now();
          const auto us =
              std::chrono::duration_cast<std::chrono::microseconds>(done - scheduled).count();
          mine.push_back(Sample{static_cast<uint8_t>(used), static_cast<int16_t>(status),
                                static_cast<uint32_t>(std::min<int64_t>(us, UINT32_MAX))});
        }
      });
    }
    for (auto& th : threads) th.join();
    end_ = Clock::now();
    for (auto& s : samples) all_.insert(all_.end(), s.begin(), s.end());
  }

  void Report() const {
    const double elapsed = std::chrono::duration<double>(end_ - start_).count();
    json::object out;
    out["rate_scheduled"] = o_.rate;
    out["seconds"] = elapsed;
    out["connections"] = o_.connections;
    out["patients"] = o_.patients;
    json::array routes;
    std::printf(
        "isoguard-renewal: %.0f req/s scheduled for %.1f s, %d connections, %lld patients\n",
        o_.rate, o_.seconds, o_.connections, static_cast<long long>(o_.patients));
    std::printf("%-48s %9s %9s %8s %9s %9s %9s  %s\n", "route", "requests", "req/s", "errors",
                "p50 ms", "p99 ms", "p99.9 ms", "statuses");
    int64_t errors_total = 0;
    for (int r = -1; r < kRoutes; ++r) {
      std::vector<uint32_t> lat, accepted;  // accepted: every answer but 503 (shed load)
      std::map<int, int64_t> statuses;
      int64_t errors = 0;
      for (const Sample& s : all_) {
        if (r >= 0 && s.route != r) continue;
        lat.push_back(s.micros);
        if (s.status != 503) accepted.push_back(s.micros);
        ++statuses[s.status];
        if (IsError(s)) ++errors;
      }
      if (lat.empty()) continue;
      std::sort(lat.begin(), lat.end());
      std::sort(accepted.begin(), accepted.end());
      auto quantile = [](const std::vector<uint32_t>& v, double p) {
        if (v.empty()) return 0.0;
        const size_t at = std::min(
            v.size() - 1, static_cast<size_t>(std::ceil(p * static_cast<double>(v.size()))) - 1);
        return v[at] / 1000.0;
      };
      auto q = [&](double p) { return quantile(lat, p); };
      std::string status_text;
      json::object st;
      for (const auto& [code, n] : statuses) {
        status_text += std::to_string(code) + ":" + std::to_string(n) + " ";
        st[std::to_string(code)] = n;
      }
      const char* name = r < 0 ? "all" : kRouteNames[r];
      std::printf("%-48s %9zu %9.0f %8lld %9.2f %9.2f %9.2f  %s\n", name, lat.size(),
                  static_cast<double>(lat.size()) / elapsed, static_cast<long long>(errors), q(0.5),
                  q(0.99), q(0.999), status_text.c_str());
      json::object row{{"route", name},
                       {"requests", lat.size()},
                       {"per_second", static_cast<double>(lat.size()) / elapsed},
                       {"errors", errors},
                       {"p50_ms", q(0.5)},
                       {"p99_ms", q(0.99)},
                       {"p999_ms", q(0.999)},
                       {"accepted_p99_ms", quantile(accepted, 0.99)},
                       {"statuses", std::move(st)}};
      if (statuses.contains(503)) {
        std::printf("%-48s %9zu answers other than 503: p99 %.2f ms\n", "", accepted.size(),
                    quantile(accepted, 0.99));
      }
      if (r < 0) {
        out["all"] = std::move(row);
        errors_total = errors;
      } else {
        routes.push_back(std::move(row));
      }
    }
    out["routes"] = std::move(routes);
    for (const auto& [route, text] : errors_.by_route) {
      std::printf("first answer other than 2xx to %s: %s\n", kRouteNames[route], text.c_str());
    }
    out["errors"] = errors_total;
    if (!o_.json_out.empty()) {
      std::ofstream f(o_.json_out);
      f << json::serialize(out) << "\n";
    }
  }

 private:
  Route Pick(int64_t i) const {
    const double u =
        static_cast<double>(SplitMix(o_.seed * 1000003 + static_cast<uint64_t>(i)) >> 11) *
        0x1.0p-53;
    for (size_t r = 0; r < cumulative_.size(); ++r) {
      if (u < cumulative_[r]) return static_cast<Route>(r);
    }
    return kLookup;
  }

  uint64_t PatientNumber(int64_t i) const {
    const uint64_t n = SplitMix(o_.seed ^ (static_cast<uint64_t>(i) * 0x2545f4914f6cdd1dULL));
    return n % static_cast<uint64_t>(o_.patients);
  }
  std::string Patient(int64_t i) const { return o_.id_prefix + std::to_string(PatientNumber(i)); }
  // The token of the prescriber caring for the patient of request i.
  const std::string& PrescriberOf(int64_t i) const {
    return PatientNumber(i) < static_cast<uint64_t>(a_.panel) ? a_.panel_prescriber : a_.prescriber;
  }

  static std::string Request(const std::string& method, const std::string& target,
                             const std::string& token, const std::string& body = {}) {
    std::string r = method + " " + target + " HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer " +
                    token + "\r\n";
    if (!body.empty()) {
      r += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n";
    }
    return r + "\r\n" + body;
  }

  static std::string Events(const json::object& event) {
    return json::serialize(json::object{{"events", json::array{event}}});
  }

  // Each run stocks lots of its own (the day's dispenses use them up).
  std::string LotId(const std::string& product, double strength) const {
    return "bench-" + std::to_string(o_.seed) + "-" + product + "-" +
           std::to_string(static_cast<int>(std::lround(strength)));
  }

  // The strength of `product` that makes every dose in whole capsules (the largest such).
  std::optional<double> Strength(const std::string& product,
                                 const std::vector<double>& doses) const {
    auto it = strengths_.find(product);
    if (it == strengths_.end()) return std::nullopt;
    for (double s : it->second) {
      bool whole = true;
      for (double d : doses) {
        const double n = d / s;
        if (std::fabs(n - std::round(n)) > 1e-9 || n < 1) whole = false;
      }
      if (whole) return s;
    }
    return std::nullopt;
  }

  // One request of `route` (or the one it falls back to when it has nothing to work on); the
  // route used and the answer's status.
  std::pair<Route, Connection::Response> Perform(Connection& c, Route route, int64_t i) {
    switch (route) {
      case kDispense:
        if (auto g = granted_.Pop()) {
          const auto s = Strength(g->product, g->doses);
          if (s) {
            const std::string body =
                json::serialize(json::object{{"authorization_id", g->id},
                                             {"lot_id", LotId(g->product, *s)},
                                             {"medication_guide_given", true}});
            return {kDispense, c.Exchange(Request("POST", "/v1/dispenses", a_.pharmacist, body))};
          }
        }
        [[fallthrough]];
      case kAuthorize:
        if (auto f = found_.Pop()) {
          const std::string body = json::serialize(
              json::object{{"patient_id", f->patient}, {"prescription_id", f->prescription}});
          const auto r = c.Exchange(Request("POST", "/v1/authorizations", a_.pharmacist, body));
          if (r.status == 201) {
            boost::system::error_code ec;
            const json::value v = json::parse(r.body, ec);
            if (!ec && v.is_object() && v.as_object().contains("authorization_id")) {
              granted_.Push(
                  Granted{std::string(v.at("authorization_id").as_string()), f->product, f->doses});
            }
          }
          return {kAuthorize, r};
        }
        [[fallthrough]];
      case kLookup: {
        const std::string patient = Patient(i);
        const auto r =
            c.Exchange(Request("GET", "/v1/patients/" + patient + "/pharmacy-view", a_.pharmacist));
        if (r.status == 200) Remember(patient, r.body);
        return {kLookup, r};
      }
      case kPregnancyTest:
        return {route, c.Exchange(Request("POST", "/v1/patients/" + Patient(i) + "/events",
                                          PrescriberOf(i),
                                          Events({{"type", "pregnancy_test"},
                                                  {"collected_at", UtcNow()},
                                                  {"result", "negative"},
                                                  {"setting", "lab"},
                                                  {"specimen", "serum"}})))};
      case kVisit:
        return {route, c.Exchange(Request(
                           "POST", "/v1/patients/" + Patient(i) + "/events", PrescriberOf(i),
                           Events({{"type", "visit"}, {"at", UtcNow()}, {"counseled", true}})))};
      case kWorklist:
        return {route,
                c.Exchange(Request("GET", "/v1/worklists/prescriber?as_of=" + Today() + "&limit=50",
                                   a_.panel_prescriber))};
      case kAttest:
      case kComprehension: {
        if (a_.patients.empty()) return Perform(c, kLookup, i);
        const auto& [patient, token] =
            a_.patients[SplitMix(static_cast<uint64_t>(i)) % a_.patients.size()];
        json::object e;
        if (route == kAttest) {
          e = {{"type", "contraception"},
               {"at", UtcNow()},
               {"methods", json::array{"iud_copper", "male_condom"}},
               {"since", "2026-01-01"}};
        } else {
          e = {{"type", "comprehension"}, {"at", UtcNow()}, {"passed", true}};
        }
        return {route, c.Exchange(Request("POST", "/v1/patients/" + patient + "/events", token,
                                          Events(e)))};
      }
      case kRoutes:
        break;
    }
    return {kLookup, {}};
  }

  // The prescription a lookup found, when the pharmacy may ask for it.
  void Remember(const std::string& patient, const std::string& body) {
    boost::system::error_code ec;
    const json::value v = json::parse(body, ec);
    if (ec || !v.is_object()) return;
    const json::value* rx = v.as_object().if_contains("prescription");
    if (rx == nullptr || !rx->is_object()) return;
    Found f;
    f.patient = patient;
    f.prescription = std::string(rx->at("id").as_string());
    f.product = std::string(rx->at("product").as_string());
    for (const json::value& d : rx->at("doses_mg").as_array())
      f.doses.push_back(d.to_number<double>());
    found_.Push(std::move(f));
  }

  Options o_;
  Accounts a_;
  std::vector<double> cumulative_;
  std::map<std::string, std::vector<double>> strengths_;
  std::atomic<int64_t> next_{0};
  Clock::time_point start_, end_;
  Handoff<Found> found_;
  Handoff<Granted> granted_;
  FirstErrors errors_;
  std::vector<Sample> all_;
};

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseArgs(argc, argv);
  Accounts a = ReadAccounts(o.tokens_file);
  auto book = isoguard::LoadRulebook(o.data_dir);
  if (!book.ok()) Usage("cannot load " + o.data_dir + ": " + book.error().ToString());
  Day day(std::move(o), std::move(a), *book);
  if (!day.StockTheShelves()) return 2;
  day.Run();
  day.Report();
  return 0;
}
