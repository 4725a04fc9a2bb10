// The group-commit queue of a store's single writer thread, shared by the SQLite and
// PostgreSQL backends: callers queue write requests (waiting for room in a bounded queue) and
// wait until the writer has committed or failed them; the writer takes whatever queued while
// its last batch committed and commits it in one transaction. Private to the backends.
//
// Thread safety: Submit and SubmitAll may be called from any number of threads at once;
// TakeBatch and Finish from the one writer thread only; Stop from any thread (the store's
// destructor, before it joins the writer). The queue's mutex guards every request's ticket.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <vector>

namespace isoguard::store::detail {

// A request's place in the queue, guarded by the queue's mutex.
struct GroupCommitTicket {
  bool done = false;   // the writer has committed or failed the request (or it was refused)
  uint64_t batch = 0;  // the number of the batch that took it; 0: still queued
};

// `Request` lives on the caller's stack and has a public `GroupCommitTicket ticket` and a
// `size_t weight() const` (its entries, counted against a batch's max_weight).
template <typename Request>
class GroupCommitQueue {
 public:
  // How many requests may wait for the writer; set before the writer starts.
  void set_capacity(size_t capacity) { capacity_ = capacity; }

  // Queues the request (waiting for room as need be), then waits until the writer has
  // committed or failed it. Should the queue be stopping, `refuse(request)` is called instead
  // (under the queue's lock) and nothing is queued.
  template <typename Refuse>
  void Submit(Request& request, Refuse refuse) {
    std::unique_lock lock(mu_);
    Enqueue(lock, request, refuse);
    WaitFor(lock, request);
  }

  // Queues every request (waiting for room as need be), then waits for them all: the writer
  // commits them in as few transactions as its batch limits allow.
  template <typename Refuse>
  void SubmitAll(std::span<Request> requests, Refuse refuse) {
    std::unique_lock lock(mu_);
    for (Request& r : requests) Enqueue(lock, r, refuse);
    for (Request& r : requests) WaitFor(lock, r);
  }

  // The writer: waits for requests, then moves the oldest into `batch` (cleared first), at
  // most `max_requests` of them and, past the first, no more than `max_weight` in all. Returns
  // false when stopping with nothing queued: everything queued has been committed.
  bool TakeBatch(std::vector<Request*>& batch, size_t max_requests, size_t max_weight) {
    batch.clear();
    std::unique_lock lock(mu_);
    work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return false;
    // Group commit: whatever queued while the last batch committed goes in this one. The
    // writer does not wait for more: with many callers the queue refills during each commit
    // (measured: waiting for the stragglers gained nothing, see docs/performance.md).
    size_t weight = 0;
    ++batches_taken_;
    while (!queue_.empty() && batch.size() < max_requests) {
      Request* next = queue_.front();
      if (!batch.empty() && weight + next->weight() > max_weight) break;
      weight += next->weight();
      next->ticket.batch = batches_taken_;
      batch.push_back(next);
      queue_.pop_front();
    }
    space_cv_.notify_all();
    return true;
  }

  // The writer, once the batch TakeBatch gave is committed (or failed): wakes its callers.
  void Finish(const std::vector<Request*>& batch) {
    uint64_t batch_number = 0;
    {
      std::lock_guard lock(mu_);
      for (Request* r : batch) r->ticket.done = true;
      batch_number = batches_taken_;  // only the writer takes batches: the one just committed
    }
    // After the unlock, so that the callers woken do not wait for the lock. Once `done` is
    // set a caller may return and destroy its request: only the queue's own state is touched.
    done_cv_[batch_number % 2].notify_all();
  }

  // Refuses requests from now on; the writer still commits those queued, then TakeBatch
  // returns false.
  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    space_cv_.notify_all();
  }

 private:
  template <typename Refuse>
  void Enqueue(std::unique_lock<std::mutex>& lock, Request& request, Refuse& refuse) {
    space_cv_.wait(lock, [&] { return queue_.size() < capacity_ || stopping_; });
    if (stopping_) {
      refuse(request);
      request.ticket.done = true;
      return;
    }
    queue_.push_back(&request);
    work_cv_.notify_one();
  }

  void WaitFor(std::unique_lock<std::mutex>& lock, Request& request) {
    while (!request.ticket.done) {
      // Queued now, it normally goes in the next batch the writer takes; should it not (a
      // batch full of entries), the wait ends early and the loop waits for the right one.
      const uint64_t batch = request.ticket.batch != 0 ? request.ticket.batch : batches_taken_ + 1;
      done_cv_[batch % 2].wait(lock);
    }
  }

  std::mutex mu_;
  std::condition_variable work_cv_;   // the writer waits for requests
  std::condition_variable space_cv_;  // callers wait for room in the queue
  // Callers wait for their batch on done_cv_[batch % 2]: one broadcast wakes the callers of a
  // batch and not those queued for the next one, which the writer is already taking.
  std::condition_variable done_cv_[2];
  std::deque<Request*> queue_;
  size_t capacity_ = 1024;
  uint64_t batches_taken_ = 0;
  bool stopping_ = false;
};

}  // namespace isoguard::store::detail
