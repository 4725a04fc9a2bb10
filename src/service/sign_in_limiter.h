// Rate limits password sign-in: guessing passwords must be slow, and Argon2id (deliberately
// expensive in time and memory) must not become a way to exhaust the server.
//
// Two limits, both on failures within a sliding window: per account id (an attacker trying
// passwords on one account from many addresses) and per source address (one address trying
// many accounts). Past either, sign-in is refused at once (ErrorKind::kRateLimited, answered
// 429 with Retry-After) without looking at the password. A success clears the account's
// failures. Independently, at most `max_concurrent` verifications run at a time; beyond, the
// answer is 503 at once. Memory is bounded: at most `max_tracked` keys (expired ones are
// dropped first; when still full, the oldest).
//
// Thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/result.h"
#include "core/time.h"

namespace isoguard::service {

struct SignInLimits {
  int max_failures_per_account = 5;
  int max_failures_per_source = 20;
  std::chrono::seconds window{15 * 60};
  int max_concurrent = 4;
  size_t max_tracked = 100000;
};

class SignInLimiter {
 public:
  explicit SignInLimiter(SignInLimits limits = {}) : limits_(limits) {}

  // Before verifying a password: ok, or kRateLimited / kUnavailable. An ok must be followed
  // by exactly one Finish.
  Status Begin(const std::string& account_id, const std::string& source, Instant now);
  // After the verification: whether it succeeded.
  void Finish(const std::string& account_id, const std::string& source, bool succeeded,
              Instant now);

 private:
  struct Failures {
    std::deque<Instant> at;  // within the window, oldest first (at most the limit + 1)
  };
  // Drops failures older than the window; the seconds until the oldest leaves it when `limit`
  // or more remain (0 when under the limit).
  int SecondsUntilUnder(Failures& f, int limit, Instant now) const;
  void Record(std::unordered_map<std::string, Failures>& map, const std::string& key, int limit,
              Instant now);

  SignInLimits limits_;
  std::mutex mu_;
  std::unordered_map<std::string, Failures> by_account_;
  std::unordered_map<std::string, Failures> by_source_;
  int running_ = 0;
};

}  // namespace isoguard::service
