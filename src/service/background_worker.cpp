#include "service/background_worker.h"

namespace isoguard::service {

BackgroundWorker::BackgroundWorker(Service& service, Options options,
                                   std::function<void(const std::string&)> on_error)
    : service_(service), options_(options), on_error_(std::move(on_error)) {
  thread_ = std::thread([this] { Run(); });
  deliveries_ = std::thread([this] { RunDeliveries(); });
}

BackgroundWorker::~BackgroundWorker() { Stop(); }

void BackgroundWorker::Kick() {
  {
    std::lock_guard lock(mu_);
    kicked_ = true;
    deliveries_kicked_ = true;
  }
  wake_.notify_all();
}

void BackgroundWorker::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (deliveries_.joinable()) deliveries_.join();
}

void BackgroundWorker::Run() {
  auto next_sweep = std::chrono::steady_clock::now();
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    if (std::chrono::steady_clock::now() >= next_sweep) {
      if (auto swept = service_.Sweep(); !swept.ok() && on_error_) {
        on_error_("sweep: " + swept.error().ToString());
      }
      if (auto reminded = service_.Remind(); !reminded.ok() && on_error_) {
        on_error_("reminders: " + reminded.error().ToString());
      }
      next_sweep = std::chrono::steady_clock::now() + options_.sweep_interval;
    } else if (auto projected = service_.Project(); !projected.ok() && on_error_) {
      on_error_("projection: " + projected.error().ToString());
    }
    lock.lock();
    // A pass may have queued notifications: the delivery thread looks at once.
    deliveries_kicked_ = true;
    wake_.notify_all();
    wake_.wait_for(lock, options_.poll_interval, [&] { return stopping_ || kicked_; });
    kicked_ = false;
  }
}

void BackgroundWorker::RunDeliveries() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    if (auto delivered = service_.DeliverWebhooks(); !delivered.ok() && on_error_) {
      on_error_("webhooks: " + delivered.error().ToString());
    }
    lock.lock();
    wake_.wait_for(lock, options_.poll_interval, [&] { return stopping_ || deliveries_kicked_; });
    deliveries_kicked_ = false;
  }
}

}  // namespace isoguard::service
