// The service's background threads. One projects the log into the read models as soon as the
// service appends (and every poll interval, for appends made by other processes), and sweeps
// (expired authorizations, reminders) every sweep interval. The other delivers webhooks, so
// that a slow or silent receiver (each delivery may wait seconds) never delays the projector's
// safety reactions and notifications. Failures are reported through `on_error` and retried at
// the next pass; they never stop a thread.
//
// Thread-safe: Kick may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "service/service.h"

namespace isoguard::service {

class BackgroundWorker {
 public:
  struct Options {
    std::chrono::milliseconds poll_interval{1000};
    std::chrono::milliseconds sweep_interval{30000};
  };
  BackgroundWorker(Service& service, Options options,
                   std::function<void(const std::string&)> on_error);
  ~BackgroundWorker();
  BackgroundWorker(const BackgroundWorker&) = delete;
  BackgroundWorker& operator=(const BackgroundWorker&) = delete;

  void Kick();  // something was appended: project soon
  void Stop();

 private:
  void Run();
  void RunDeliveries();

  Service& service_;
  Options options_;
  std::function<void(const std::string&)> on_error_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool kicked_ = false;
  bool deliveries_kicked_ = false;
  bool stopping_ = false;
  std::thread thread_;
  std::thread deliveries_;
};

}  // namespace isoguard::service
