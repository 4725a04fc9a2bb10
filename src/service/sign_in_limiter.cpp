#include "service/sign_in_limiter.h"

#include <algorithm>

namespace isoguard::service {

int SignInLimiter::SecondsUntilUnder(Failures& f, int limit, Instant now) const {
  while (!f.at.empty() && f.at.front() + limits_.window <= now) f.at.pop_front();
  if (static_cast<int>(f.at.size()) < limit) return 0;
  // The failure that must leave the window for the count to drop under the limit.
  const Instant leaves = f.at[f.at.size() - static_cast<size_t>(limit)] + limits_.window;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(leaves - now).count();
  return static_cast<int>(std::max<int64_t>(1, (ms + 999) / 1000));
}

Status SignInLimiter::Begin(const std::string& account_id, const std::string& source, Instant now) {
  std::lock_guard lock(mu_);
  int wait = 0;
  if (auto it = by_account_.find(account_id); it != by_account_.end()) {
    wait = SecondsUntilUnder(it->second, limits_.max_failures_per_account, now);
  }
  if (auto it = by_source_.find(source); it != by_source_.end()) {
    wait = std::max(wait, SecondsUntilUnder(it->second, limits_.max_failures_per_source, now));
  }
  if (wait > 0) {
    return Error::RateLimited(
        "too many failed sign-ins for this account or from this address; try again in " +
            std::to_string(wait) + " s",
        wait);
  }
  if (running_ >= limits_.max_concurrent) {
    Error e = Error::Unavailable("too many sign-ins at once; try again in a moment");
    e.retry_after_seconds = 1;
    return e;
  }
  ++running_;
  return {};
}

void SignInLimiter::Record(std::unordered_map<std::string, Failures>& map, const std::string& key,
                           int limit, Instant now) {
  if (map.size() >= limits_.max_tracked && !map.contains(key)) {
    std::erase_if(map, [&](auto& kv) {
      return kv.second.at.empty() || kv.second.at.back() + limits_.window <= now;
    });
    if (map.size() >= limits_.max_tracked) {
      auto oldest = std::min_element(map.begin(), map.end(), [](const auto& a, const auto& b) {
        return a.second.at.back() < b.second.at.back();
      });
      map.erase(oldest);
    }
  }
  Failures& f = map[key];
  f.at.push_back(now);
  while (static_cast<int>(f.at.size()) > limit + 1) f.at.pop_front();
}

void SignInLimiter::Finish(const std::string& account_id, const std::string& source, bool succeeded,
                           Instant now) {
  std::lock_guard lock(mu_);
  --running_;
  if (succeeded) {
    by_account_.erase(account_id);
    return;
  }
  Record(by_account_, account_id, limits_.max_failures_per_account, now);
  Record(by_source_, source, limits_.max_failures_per_source, now);
}

}  // namespace isoguard::service
