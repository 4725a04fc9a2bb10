// `isoguard serve` on a SQLite store whose storage fails under it: a small tmpfs that fills up,
// and an ext4 file system that the kernel turns read-only. Writes must be refused with a clear
// 503 problem (the detail says the storage is full, or read-only), reads must go on, nothing may
// be damaged (`isoguard verify`, SQLite's integrity_check), and once space returns writes succeed
// again without a restart of the service (a file system that went read-only after an error comes
// back only through umount and fsck: there the service is restarted).
//
// Mounting needs root (the tests run as root); where mount is not permitted the tests are
// skipped and say so.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "../store/store_test_support.h"
#include "fault_test_support.h"

namespace isoguard::faults {
namespace {

using namespace std::chrono_literals;

// A tmpfs of `size` mounted on `dir` for the test's lifetime.
class SmallTmpfs {
 public:
  SmallTmpfs(std::string dir, const std::string& size) : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
    const CommandResult r =
        RunCommand("mount -t tmpfs -o size=" + size + " isoguard-fault " + dir_ + " 2>&1");
    mounted_ = r.exit_code == 0;
    error_ = r.output;
  }
  ~SmallTmpfs() {
    if (mounted_) RunCommand("umount -l " + dir_ + " 2>&1");
  }
  SmallTmpfs(const SmallTmpfs&) = delete;
  SmallTmpfs& operator=(const SmallTmpfs&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  const std::string& dir() const { return dir_; }
  CommandResult Remount(const std::string& mode) const {
    return RunCommand("mount -o remount," + mode + " " + dir_ + " 2>&1");
  }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string error_;
};

// Writes zeros to `path` until the file system is full; the bytes written.
size_t FillUp(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return 0;
  std::vector<char> zeros(64 * 1024, 0);
  size_t total = 0;
  size_t chunk = zeros.size();
  while (chunk > 0) {
    const ssize_t n = ::write(fd, zeros.data(), chunk);
    if (n > 0) {
      total += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      chunk /= 2;  // ENOSPC: fill the last pages with smaller writes
    }
  }
  ::close(fd);
  return total;
}

// SQLite's own check of the file, on a read-only connection beside the running service.
std::string IntegrityCheck(const std::string& path) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    out = std::string("cannot open: ") + (db != nullptr ? sqlite3_errmsg(db) : "?");
  } else {
    sqlite3_exec(
        db, "PRAGMA integrity_check",
        [](void* text, int, char** values, char**) {
          *static_cast<std::string*>(text) += values[0] != nullptr ? values[0] : "";
          return 0;
        },
        &out, nullptr);
  }
  sqlite3_close_v2(db);
  return out;
}

bool IsStorageProblem(const server::testing::RawResponse& r, std::string_view what) {
  if (r.status != 503) return false;
  const std::string* type = r.header("content-type");
  if (type == nullptr || *type != "application/problem+json") return false;
  if (r.header("retry-after") == nullptr) return false;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(r.body, ec);
  if (ec || !v.is_object() || !v.as_object().contains("detail")) return false;
  return std::string(v.at("detail").as_string()).find(what) != std::string::npos;
}

class StoreClient {
 public:
  StoreClient(uint16_t port, std::string token, std::string patient_id)
      : port_(port), token_(std::move(token)), patient_id_(std::move(patient_id)) {}

  // The same client (its log, its last append) talking to a restarted service.
  void Reconnect(uint16_t port) { port_ = port; }

  // A new append (or the last one again when `again`); its answer.
  std::optional<server::testing::RawResponse> Append(bool again = false) {
    if (!again) {
      last_ = MakeAttempt(patient_id_, "full-" + std::to_string(seq_), seq_);
      ++seq_;
    }
    server::testing::TestConnection c(port_, 10s);
    if (!c.connected() || !c.Send(AppendRequestText(last_, token_))) return std::nullopt;
    auto r = c.ReadResponse();
    if (r) {
      EXPECT_TRUE(Acknowledge(last_, *r)) << r->body;
      if (last_.acknowledged) acknowledged_.push_back(last_);
    }
    return r;
  }
  // Reads of the record and of its events: both 200, every acknowledged append there.
  void ExpectReadsWork() {
    auto record = Call(port_, "GET", "/v1/patients/" + patient_id_, token_);
    ASSERT_TRUE(record.has_value());
    EXPECT_EQ(record->status, 200) << record->body;
    auto versions = StoredVersions(port_, token_, patient_id_);
    ASSERT_TRUE(versions.has_value());
    for (const Attempt& a : acknowledged_) {
      for (const std::string& id : a.event_ids) EXPECT_TRUE(versions->contains(id)) << id;
    }
  }
  const std::vector<Attempt>& acknowledged() const { return acknowledged_; }

 private:
  uint16_t port_;
  std::string token_;
  std::string patient_id_;
  int seq_ = 0;
  Attempt last_;
  std::vector<Attempt> acknowledged_;
};

TEST(FaultStorage, FullStorageRefusesWritesKeepsReadsAndRecovers) {
  store::testing::TempDir dir;
  SmallTmpfs fs(dir.File("mnt"), "8m");
  if (!fs.mounted()) GTEST_SKIP() << "mount -t tmpfs is not permitted here: " << fs.error();
  const std::string path = fs.dir() + "/s.db";
  const std::string db = "sqlite:" + path;
  const std::string token = MakeStoreWithPrescriber(db);
  ASSERT_FALSE(token.empty());
  ServeProcess serve;
  ASSERT_TRUE(serve.Start(db, dir.File("serve.log"), {"--quiet"}));
  ASSERT_TRUE(Enroll(serve.port(), token, "p-1"));
  StoreClient client(serve.port(), token, "p-1");
  for (int i = 0; i < 5; ++i) {
    auto r = client.Append();
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ(r->status, 201) << r->body;
  }

  // Full. The WAL may still have room in pages it already holds: writes go on until they
  // need a new page, then every one is refused.
  const std::string filler = fs.dir() + "/filler";
  ASSERT_GT(FillUp(filler), 0u);
  std::optional<server::testing::RawResponse> refused;
  int fitted = 0;
  for (int i = 0; i < 5000 && !refused; ++i) {
    auto r = client.Append();
    ASSERT_TRUE(r.has_value()) << "no answer on a full disk";
    if (r->status == 201) {
      ++fitted;
      continue;
    }
    ASSERT_TRUE(IsStorageProblem(*r, "storage is full")) << r->status << " " << r->body;
    refused = r;
  }
  ASSERT_TRUE(refused.has_value()) << "every write succeeded on a full disk";
  std::printf("[ storage ] full: %d appends still fit, then %d %s\n", fitted, refused->status,
              refused->body.c_str());
  for (int i = 0; i < 3; ++i) {  // and again: still refused, clearly
    auto r = client.Append(true);
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE(IsStorageProblem(*r, "storage is full")) << r->status << " " << r->body;
  }
  client.ExpectReadsWork();
  EXPECT_EQ(IntegrityCheck(path), "ok");

  // Space returns: the refused append is written now, by the same service.
  std::filesystem::remove(filler);
  {
    auto r = client.Append(true);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 201) << r->body;
    r = client.Append();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 201) << r->body;
  }
  client.ExpectReadsWork();
  EXPECT_EQ(IntegrityCheck(path), "ok");
  const CommandResult verify = RunCommand(IsoguardBinary() + " verify --db " + db + " 2>&1");
  EXPECT_EQ(verify.exit_code, 0) << verify.output;

  ASSERT_EQ(serve.Kill(SIGTERM), 0);
  ExpectExactlyTheseAppends(client.acknowledged(), db);
}

// An ext4 file system (a loop device) mounted with errors=remount-ro, which the kernel turns
// read-only under the running service (as it does after a disk error). `mount -o remount,ro`
// cannot do this to a tmpfs: the kernel refuses it while the service holds the store open for
// writing. Once ext4 has gone read-only after an error it comes back only through umount and
// fsck, so recovery here is a restart of the service on the checked file system.
class Ext4Image {
 public:
  Ext4Image(const std::string& image, std::string dir) : image_(image), dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
    CommandResult r =
        RunCommand("truncate -s 32M " + image_ + " && mkfs.ext4 -q -F " + image_ +
                   " 2>&1 && mount -o loop,errors=remount-ro " + image_ + " " + dir_ + " 2>&1");
    mounted_ = r.exit_code == 0;
    error_ = r.output;
  }
  ~Ext4Image() {
    if (mounted_) RunCommand("umount -l " + dir_ + " 2>&1");
  }
  Ext4Image(const Ext4Image&) = delete;
  Ext4Image& operator=(const Ext4Image&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  // The kernel's own test hook: an ext4 error, after which errors=remount-ro applies.
  bool TriggerError() const {
    const CommandResult device = RunCommand("findmnt -n -o SOURCE " + dir_);
    std::string name = device.output.substr(0, device.output.find('\n'));
    name = name.substr(name.rfind('/') + 1);
    return RunCommand("echo fault-test > /sys/fs/ext4/" + name + "/trigger_fs_error 2>&1")
               .exit_code == 0;
  }
  // Whether a new file is refused (EROFS); the mount's flags need not show it.
  bool ReadOnly() const {
    const std::string probe = dir_ + "/probe";
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::close(fd);
      ::unlink(probe.c_str());
      return false;
    }
    return errno == EROFS;
  }
  // umount, e2fsck, mount again (read-write).
  CommandResult Repair() {
    mounted_ = false;
    CommandResult r = RunCommand("umount " + dir_ + " 2>&1 && { e2fsck -fy " + image_ +
                                 " >/dev/null 2>&1; [ $? -le 1 ]; } && mount -o "
                                 "loop,errors=remount-ro " +
                                 image_ + " " + dir_ + " 2>&1");
    mounted_ = r.exit_code == 0;
    return r;
  }

 private:
  std::string image_;
  std::string dir_;
  bool mounted_ = false;
  std::string error_;
};

TEST(FaultStorage, StorageTurnedReadOnlyRefusesWritesKeepsReadsAndRecovers) {
  store::testing::TempDir dir;
  Ext4Image fs(dir.File("ro.img"), dir.File("mnt"));
  if (!fs.mounted()) GTEST_SKIP() << "cannot mount an ext4 image here: " << fs.error();
  const std::string path = dir.File("mnt") + "/s.db";
  const std::string db = "sqlite:" + path;
  const std::string token = MakeStoreWithPrescriber(db);
  ASSERT_FALSE(token.empty());
  ServeProcess serve;
  ASSERT_TRUE(serve.Start(db, dir.File("serve.log"), {"--quiet"}));
  ASSERT_TRUE(Enroll(serve.port(), token, "p-1"));
  StoreClient client(serve.port(), token, "p-1");
  for (int i = 0; i < 3; ++i) {
    auto r = client.Append();
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ(r->status, 201) << r->body;
  }

  ASSERT_TRUE(fs.TriggerError());
  ASSERT_TRUE(fs.ReadOnly()) << "the file system did not turn read-only";
  auto refused = client.Append();
  ASSERT_TRUE(refused.has_value());
  EXPECT_TRUE(IsStorageProblem(*refused, "storage is read-only"))
      << refused->status << " " << refused->body;
  std::printf("[ storage ] read-only: %d %s\n", refused->status, refused->body.c_str());
  for (int i = 0; i < 3; ++i) {
    auto r = client.Append(true);
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE(IsStorageProblem(*r, "storage is read-only")) << r->status << " " << r->body;
  }
  client.ExpectReadsWork();
  EXPECT_EQ(IntegrityCheck(path), "ok");

  // Back: the service stopped, the file system checked and mounted again, the service started;
  // the refused append is written now, and nothing was damaged.
  serve.Kill(SIGTERM);
  const CommandResult repaired = fs.Repair();
  ASSERT_EQ(repaired.exit_code, 0) << repaired.output;
  EXPECT_EQ(IntegrityCheck(path), "ok");
  ASSERT_TRUE(serve.Start(db, dir.File("serve.log"), {"--quiet"}));
  client.Reconnect(serve.port());
  auto again = client.Append(true);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->status, 201) << again->body;
  client.ExpectReadsWork();
  ASSERT_EQ(serve.Kill(SIGTERM), 0);
  const CommandResult verify = RunCommand(IsoguardBinary() + " verify --db " + db + " 2>&1");
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  ExpectExactlyTheseAppends(client.acknowledged(), db);
}

}  // namespace
}  // namespace isoguard::faults
