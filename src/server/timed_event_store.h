// An EventStore that times every append into a histogram of the metrics registry
// (isoguard_store_append_seconds) and forwards everything else unchanged.
#pragma once

#include <chrono>
#include <memory>

#include "server/metrics.h"
#include "store/event_store.h"

namespace isoguard::server {

class TimedEventStore final : public store::EventStore {
 public:
  TimedEventStore(std::unique_ptr<store::EventStore> inner, Metrics& metrics)
      : inner_(std::move(inner)),
        append_seconds_(metrics.histogram("isoguard_store_append_seconds",
                                          "Durable append latency of the event store", {})) {}

  store::EventStore& inner() { return *inner_; }

  Result<store::AppendResult> Append(const store::AppendRequest& request) override {
    const auto start = std::chrono::steady_clock::now();
    auto result = inner_->Append(request);
    append_seconds_.Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return result;
  }
  Result<store::Stream> ReadStream(const std::string& patient_id) override {
    return inner_->ReadStream(patient_id);
  }
  Result<std::vector<store::StoredEntry>> ReadAll(int64_t after, size_t limit) override {
    return inner_->ReadAll(after, limit);
  }
  Result<store::PatientState> ReadState(const std::string& patient_id) override {
    return inner_->ReadState(patient_id);
  }
  Result<std::vector<store::StreamVersion>> ReadVersions(
      const std::vector<std::string>& patient_ids) override {
    return inner_->ReadVersions(patient_ids);
  }
  Result<store::RebuildReport> RebuildProjections() override {
    return inner_->RebuildProjections();
  }
  Result<store::VerifyReport> Verify() override { return inner_->Verify(); }
  Status ErasePatient(const std::string& patient_id, const store::Actor& actor) override {
    return inner_->ErasePatient(patient_id, actor);
  }
  Status Backup(const std::string& path) override { return inner_->Backup(path); }

 private:
  std::unique_ptr<store::EventStore> inner_;
  Histogram& append_seconds_;
};

}  // namespace isoguard::server
