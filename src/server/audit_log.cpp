#include "server/audit_log.h"

#include "server/log.h"

namespace isoguard::server {

AuditLog::AuditLog(service::ServiceStore& store, Logger& logger, Options options)
    : store_(store), logger_(logger), options_(options), thread_([this] { Run(); }) {}

AuditLog::~AuditLog() { Stop(); }

void AuditLog::Record(service::AuditRecord record) {
  service::FitAuditRecord(record);  // whatever the request named, the record is storable
  std::unique_lock lock(mu_);
  room_.wait(lock, [&] { return stopping_ || queue_.size() < options_.max_queued; });
  queue_.push_back(std::move(record));
  ++handed_;
  if (queue_.size() >= options_.max_batch) wake_.notify_one();
}

void AuditLog::RecordDurably(service::AuditRecord record) {
  service::FitAuditRecord(record);
  std::unique_lock lock(mu_);
  room_.wait(lock, [&] { return stopping_ || queue_.size() < options_.max_queued; });
  queue_.push_back(std::move(record));
  const uint64_t mine = ++handed_;
  ++durable_waiters_;
  wake_.notify_one();
  flushed_.wait(lock, [&] { return written_ >= mine || (stopping_ && !thread_.joinable()); });
  --durable_waiters_;
}

void AuditLog::Flush() {
  std::unique_lock lock(mu_);
  const uint64_t target = handed_;
  wake_.notify_one();
  flushed_.wait(lock, [&] { return written_ >= target || (stopping_ && !thread_.joinable()); });
}

void AuditLog::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_one();
  room_.notify_all();
  if (thread_.joinable()) thread_.join();
  flushed_.notify_all();
}

void AuditLog::Run() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait_for(lock, options_.flush_interval, [&] {
      return stopping_ || queue_.size() >= options_.max_batch ||
             (durable_waiters_ > 0 && !queue_.empty());
    });
    if (queue_.empty()) {
      if (stopping_) return;
      continue;
    }
    std::vector<service::AuditRecord> batch;
    // Synced when someone waits for a record of it (RecordDurably); else committed without
    // waiting for the disk (service_store.h, "Durability").
    const bool durable = durable_waiters_ > 0 || stopping_;
    const size_t n = std::min(queue_.size(), options_.max_batch);
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lock.unlock();
    room_.notify_all();
    // A failed write is retried (the records stay in hand) until it succeeds or the log stops;
    // the audit is never silently dropped while the service runs.
    for (int attempt = 0;; ++attempt) {
      Status st = durable ? store_.AppendAudit(batch) : store_.AppendAuditRelaxed(batch);
      if (st.ok()) break;
      logger_.Error("audit write failed", {{"error", st.error().ToString()},
                                           {"records", static_cast<uint64_t>(batch.size())},
                                           {"attempt", attempt}});
      if (st.error().kind == ErrorKind::kBadInput) {
        // The store refuses a record as such: retrying the same batch would stop the audit
        // for good (every record is fitted on entry, so this is a bug, and loud). The records
        // are written one by one; each one refused is logged (its request id and action, not
        // its patient) and left out.
        std::vector<service::AuditRecord> left;
        for (service::AuditRecord& r : batch) {
          const std::vector<service::AuditRecord> one = {r};
          Status written = durable ? store_.AppendAudit(one) : store_.AppendAuditRelaxed(one);
          if (written.ok()) continue;
          if (written.error().kind == ErrorKind::kBadInput) {
            logger_.Error("audit record refused by the store",
                          {{"error", written.error().ToString()},
                           {"request_id", r.request_id},
                           {"action", r.action}});
            continue;
          }
          left.push_back(std::move(r));
        }
        batch = std::move(left);
        if (batch.empty()) break;
        continue;
      }
      std::unique_lock wait_lock(mu_);
      if (stopping_ && attempt >= 3) {
        logger_.Error("audit records lost at shutdown",
                      {{"records", static_cast<uint64_t>(batch.size())}});
        break;
      }
      wake_.wait_for(wait_lock, std::chrono::milliseconds(100 << std::min(attempt, 5)));
    }
    lock.lock();
    written_ += n;
    flushed_.notify_all();
  }
}

service::AuditRecord RequestAuditRecord(Instant at, const HttpRequest& request,
                                        const service::Account* who, std::string action,
                                        std::string patient_id, int status, std::string detail) {
  service::AuditRecord r;
  r.at = at;
  r.request_id = request.request_id;
  if (who != nullptr) {
    r.actor_id = who->id;
    r.actor_role = std::string(service::ToString(who->role));
    r.org_id = who->org_id;
  }
  r.source = request.source();
  r.action = std::move(action);
  r.patient_id = std::move(patient_id);
  r.outcome = status < 400 ? "ok" : (status == 401 || status == 403) ? "refused" : "error";
  r.status = status;
  r.detail = std::move(detail);
  return r;
}

}  // namespace isoguard::server
