// The access audit, written in batches: every request that touches patient data (or is
// refused) becomes an AuditRecord, handed to this writer, which appends what has queued up
// in one transaction of the service store every few milliseconds. Requests do not wait for
// that commit, and the commit does not wait for the disk (AppendAuditRelaxed: durable with the
// next synced commit of the database, a few milliseconds later under load); a read's answer
// would otherwise cost an fsync. What is recorded in the patient's stream carries its actor
// durably anyway. The queue is bounded: when the database
// falls behind, requests wait for room rather than records being dropped. Stop() (and the
// destructor) writes everything queued before returning.
//
// Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "server/http.h"
#include "service/service_store.h"

namespace isoguard::server {

class Logger;

class AuditLog {
 public:
  struct Options {
    size_t max_queued = 65536;
    size_t max_batch = 4096;
    std::chrono::milliseconds flush_interval{20};
  };
  AuditLog(service::ServiceStore& store, Logger& logger, Options options);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  void Record(service::AuditRecord record);
  // Records and returns once the record is committed (the writer is woken at once, so the
  // waiters of one moment share a commit): for facts that must be durable before the answer,
  // such as a denied authorization, which is recorded nowhere else.
  void RecordDurably(service::AuditRecord record);
  // Returns once every record handed over before the call is written (tests, shutdown).
  void Flush();
  void Stop();

 private:
  void Run();

  service::ServiceStore& store_;
  Logger& logger_;
  Options options_;
  std::mutex mu_;
  std::condition_variable wake_, room_, flushed_;
  std::deque<service::AuditRecord> queue_;
  uint64_t handed_ = 0, written_ = 0;
  size_t durable_waiters_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

// The access-audit record of one request, as the native API and the FHIR facade write it: who
// (null when the caller could not be authenticated), from where, the route, the patient it
// touched, and how it ended (the outcome follows the status: refused for 401 and 403). What
// does not fit the store is fitted by AuditLog.
service::AuditRecord RequestAuditRecord(Instant at, const HttpRequest& request,
                                        const service::Account* who, std::string action,
                                        std::string patient_id, int status, std::string detail);

}  // namespace isoguard::server
