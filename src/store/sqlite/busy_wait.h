// Waiting for SQLite's write lock in small steps.
//
// Several writers share one database file: the event store's writer thread, the service
// store's, other processes. SQLite's own busy handler (sqlite3_busy_timeout) sleeps 1, 2, 5,
// 10, ... up to 100 ms between tries, so a writer that finds the lock taken for a millisecond
// may sleep for tens: tail latency far beyond the wait itself. This handler retries after
// tens to hundreds of microseconds instead, up to the same total timeout.
//
// One BusyWait per connection, living as long as it; used by that connection's thread only.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <thread>

namespace isoguard::store {

class BusyWait {
 public:
  // Installs the handler on `db` (replacing any busy timeout).
  void Install(sqlite3* db, int timeout_ms) {
    timeout_ = std::chrono::milliseconds(timeout_ms);
    sqlite3_busy_handler(db, &BusyWait::Handler, this);
  }

 private:
  static int Handler(void* self, int count) {
    auto* w = static_cast<BusyWait*>(self);
    const auto now = std::chrono::steady_clock::now();
    if (count == 0) w->start_ = now;
    if (now - w->start_ >= w->timeout_) return 0;  // give up: SQLITE_BUSY
    using std::chrono::microseconds;
    std::this_thread::sleep_for(count < 20    ? microseconds(50)
                                : count < 200 ? microseconds(200)
                                              : microseconds(1000));
    return 1;
  }

  std::chrono::milliseconds timeout_{0};
  std::chrono::steady_clock::time_point start_;
};

}  // namespace isoguard::store
