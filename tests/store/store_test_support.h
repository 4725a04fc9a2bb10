// Shared by the event store tests: a fresh directory per test, example entries, JSON
// comparison, and the description of a backend that the conformance suite
// (event_store_conformance_test.cpp) runs against. A backend joins the suite by instantiating
// EventStoreConformance with its StoreBackend (see sqlite_backend.h).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "store/event_store.h"

namespace isoguard::store::testing {

namespace json = boost::json;

// A directory of its own for one test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("isoguard-store-test-" + std::to_string(::getpid()) + "-" +
             std::to_string(counter.fetch_add(1)));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string File(std::string_view name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// ---- Example entries

inline std::string PatientEntry(std::string_view id, std::string_view extra = "") {
  return R"({"type": "patient", "id": ")" + std::string(id) +
         R"(", "birth_date": "2000-05-14", "jurisdiction": "US", "category": "can_get_pregnant")" +
         std::string(extra) + "}";
}
inline std::string WeightEntry(double kg, std::string_view at = "2026-09-01T10:00:00-04:00") {
  json::object o;
  o["type"] = "weight";
  o["at"] = json::string_view(at.data(), at.size());
  o["kg"] = kg;
  return json::serialize(o);
}
inline std::string PrescriptionEntry(std::string_view id) {
  return R"({"type": "prescription", "id": ")" + std::string(id) +
         R"(", "at": "2026-09-01T10:00:00-04:00", "product": "generic", "doses_mg": [40, 30],
             "days_supply": 30, "refills": 0})";
}
inline std::string DispenseEntry(std::string_view prescription) {
  return R"({"type": "dispense", "at": "2026-09-02T10:00:00-04:00", "prescription": ")" +
         std::string(prescription) + R"("})";
}

inline Actor TestActor() { return Actor{"dr-test", "prescriber", "test"}; }

inline AppendRequest Request(std::string patient, std::vector<std::string> entries,
                             std::optional<int64_t> expected = std::nullopt,
                             std::string idempotency_key = {}) {
  AppendRequest r;
  r.patient_id = std::move(patient);
  r.expected_version = expected;
  r.entries = std::move(entries);
  r.actor = TestActor();
  r.idempotency_key = std::move(idempotency_key);
  return r;
}

// ---- Checks

template <typename T>
::testing::AssertionResult Ok(const Result<T>& r) {
  if (r.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << r.error().ToString();
}

// Failed with `kind`, naming `field`, with `words` in the message.
template <typename T>
::testing::AssertionResult Fails(const Result<T>& r, ErrorKind kind, std::string_view field,
                                 std::string_view words = "") {
  if (r.ok()) return ::testing::AssertionFailure() << "succeeded; expected an error at " << field;
  const Error& e = r.error();
  if (e.kind != kind) {
    return ::testing::AssertionFailure() << "kind " << static_cast<int>(e.kind) << ", not "
                                         << static_cast<int>(kind) << ": " << e.ToString();
  }
  if (e.field != field) {
    return ::testing::AssertionFailure()
           << "field '" << e.field << "', expected '" << field << "': " << e.ToString();
  }
  if (e.message.find(words) == std::string::npos) {
    return ::testing::AssertionFailure() << "message '" << e.message << "' lacks '" << words << "'";
  }
  return ::testing::AssertionSuccess();
}

// The same JSON value, whatever the spacing, key order or spelling of numbers.
inline ::testing::AssertionResult SameJson(std::string_view a, std::string_view b) {
  json::value va = json::parse(json::string_view(a.data(), a.size()));
  json::value vb = json::parse(json::string_view(b.data(), b.size()));
  if (va == vb) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << json::serialize(va) << "\n  vs\n" << json::serialize(vb);
}

// `entry` with "id" set: what the store keeps for an event it gave an id.
inline std::string WithId(std::string_view entry, std::string_view id) {
  json::value v = json::parse(json::string_view(entry.data(), entry.size()));
  v.as_object()["id"] = json::string_view(id.data(), id.size());
  return json::serialize(v);
}

// ---- Backends

struct StoreBackend {
  std::string name;
  // The URL of a new, empty store kept in `dir` (a fresh directory of the test's own).
  std::function<std::string(const std::string& dir)> new_store_url;
  // The URL that opens a backup written by Backup(path).
  std::function<std::string(const std::string& backup_path)> backup_url;
  // Changes one stored entry behind the store's back, as an attacker or a failing disk would:
  // flips one byte of its `column` ("payload" or "hash").
  std::function<Status(const std::string& url, const std::string& patient_id, int64_t version,
                       const std::string& column)>
      corrupt;
};

inline std::ostream& operator<<(std::ostream& os, const StoreBackend& b) { return os << b.name; }

class EventStoreConformance : public ::testing::TestWithParam<StoreBackend> {
 protected:
  void SetUp() override {
    url_ = GetParam().new_store_url(dir_.path().string());
    Reopen();
  }

  // Closes the store (waiting for its writer) and opens it again.
  void Reopen() {
    store_.reset();
    auto opened = OpenEventStore(url_);
    ASSERT_TRUE(opened.ok()) << opened.error().ToString();
    store_ = std::move(*opened);
  }

  EventStore& store() { return *store_; }
  const std::string& url() const { return url_; }
  const TempDir& dir() const { return dir_; }

  // Creates the stream of `patient` (its patient entry) and returns the result.
  AppendResult Create(const std::string& patient) {
    auto r = store_->Append(Request(patient, {PatientEntry(patient)}, 0));
    EXPECT_TRUE(r.ok()) << r.error().ToString();
    return r.ok() ? *r : AppendResult{};
  }

  int64_t VersionOf(const std::string& patient) {
    auto s = store_->ReadStream(patient);
    EXPECT_TRUE(s.ok()) << s.error().ToString();
    return s.ok() ? s->version : -1;
  }

  TempDir dir_;
  std::string url_;
  std::unique_ptr<EventStore> store_;
};

}  // namespace isoguard::store::testing
