// The PostgreSQL backend as the tests see it: the throwaway cluster that ctest starts
// (scripts/pg-test-cluster; its URL in the file ISOGUARD_TEST_PG_URL_FILE names), a fresh
// database per test (dropped when the test ends), raw SQL for the tests that reach behind the
// store, and the StoreBackend of the conformance suite.
//
// Without ISOGUARD_TEST_PG_URL_FILE (the binary run by hand) the PostgreSQL tests skip, saying
// so; under ctest it is always set, and a missing or unreadable URL file fails the tests.
#pragma once

#include <libpq-fe.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "store/postgres/postgres_event_store.h"
#include "store_test_support.h"

namespace isoguard::store::testing {

inline constexpr const char* kPgUrlFileVariable = "ISOGUARD_TEST_PG_URL_FILE";

// The path of the URL file, or nullopt when the PostgreSQL tests are not configured.
inline std::optional<std::string> PgUrlFile() {
  const char* file = std::getenv(kPgUrlFileVariable);
  if (file == nullptr || *file == '\0') return std::nullopt;
  return std::string(file);
}

// Skips the test (returning from it) when no cluster is configured.
#define ISOGUARD_REQUIRE_PG()                                                                    \
  do {                                                                                           \
    if (!::isoguard::store::testing::PgUrlFile()) {                                              \
      GTEST_SKIP() << "no PostgreSQL cluster: set ISOGUARD_TEST_PG_URL_FILE (ctest does, after " \
                      "scripts/pg-test-cluster start)";                                          \
    }                                                                                            \
  } while (false)

// The cluster's URL (of its `isoguard` database); a failure when the file cannot be read.
inline std::string PgAdminUrl() {
  auto file = PgUrlFile();
  if (!file) {
    ADD_FAILURE() << kPgUrlFileVariable << " is not set";
    return {};
  }
  std::ifstream in(*file);
  std::string url;
  std::getline(in, url);
  while (!url.empty() && (url.back() == '\n' || url.back() == ' ' || url.back() == '\r')) {
    url.pop_back();
  }
  if (url.empty()) {
    ADD_FAILURE() << "cannot read a PostgreSQL URL from " << *file << " (" << kPgUrlFileVariable
                  << "); did scripts/pg-test-cluster start run?";
  }
  return url;
}

// The directory of the test cluster (where the URL file is).
inline std::string PgClusterDir() {
  auto file = PgUrlFile();
  return file ? std::filesystem::path(*file).parent_path().string() : std::string();
}

// `url` with its database replaced by `database` (query parameters kept).
inline std::string WithDatabase(const std::string& url, const std::string& database) {
  const size_t authority = url.find("://");
  const size_t path = url.find('/', authority == std::string::npos ? 0 : authority + 3);
  const size_t query = url.find('?', path == std::string::npos ? 0 : path);
  const std::string head = path == std::string::npos ? url.substr(0, query) : url.substr(0, path);
  const std::string tail = query == std::string::npos ? "" : url.substr(query);
  return head + "/" + database + tail;
}

// A raw connection, for SQL the store would never run.
class RawPg {
 public:
  explicit RawPg(const std::string& url) : conn_(PQconnectdb(url.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) {
      ADD_FAILURE() << "cannot connect to " << url << ": " << PQerrorMessage(conn_);
    }
  }
  ~RawPg() { PQfinish(conn_); }
  RawPg(const RawPg&) = delete;
  RawPg& operator=(const RawPg&) = delete;

  PGconn* get() const { return conn_; }

  Status Exec(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    const ExecStatusType status = PQresultStatus(r);
    std::string message = PQresultErrorMessage(r);
    PQclear(r);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return {};
    return Error::Internal(message + " in: " + sql);
  }

  // The first column of the first row, as text ("" when there is none or on error).
  std::string Text(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    std::string out;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      ADD_FAILURE() << PQresultErrorMessage(r) << " in: " << sql;
    } else if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) {
      out = PQgetvalue(r, 0, 0);
    }
    PQclear(r);
    return out;
  }

 private:
  PGconn* conn_;
};

// The databases this process made, dropped at the end of the test that made them (after its
// fixture, and the stores it held, are gone).
class PgDatabases : public ::testing::EmptyTestEventListener {
 public:
  static PgDatabases& Instance() {
    // Owned by gtest once appended to its listeners.
    static PgDatabases* instance = [] {
      auto* listener = new PgDatabases();
      ::testing::UnitTest::GetInstance()->listeners().Append(listener);
      return listener;
    }();
    return *instance;
  }

  // A new, empty database on the cluster; its URL.
  std::string Create() {
    const std::string admin = PgAdminUrl();
    if (admin.empty()) return "postgresql://no-cluster-configured.invalid/none";
    static std::atomic<int> counter{0};
    static const unsigned salt = std::random_device{}();
    const std::string name = "t_" + std::to_string(::getpid()) + "_" +
                             std::to_string(salt % 100000) + "_" +
                             std::to_string(counter.fetch_add(1));
    RawPg db(admin);
    if (auto st = db.Exec("CREATE DATABASE " + name); !st.ok()) {
      ADD_FAILURE() << st.error().ToString();
    }
    std::lock_guard lock(mu_);
    made_.push_back(name);
    return WithDatabase(admin, name);
  }

  void OnTestEnd(const ::testing::TestInfo&) override {
    std::vector<std::string> names;
    {
      std::lock_guard lock(mu_);
      names.swap(made_);
    }
    if (names.empty()) return;
    RawPg db(PgAdminUrl());
    for (const std::string& name : names) {
      (void)db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
    }
  }

 private:
  std::mutex mu_;
  std::vector<std::string> made_;
};

inline std::string FreshPgDatabase() { return PgDatabases::Instance().Create(); }

// Flips one byte of a stored column. The immutability trigger is disabled first, as the owner
// of the database could; PostgreSQL's own page checks cannot tell.
inline Status CorruptPgEntry(const std::string& url, const std::string& patient_id, int64_t version,
                             const std::string& column) {
  RawPg db(url);
  if (auto st = db.Exec("ALTER TABLE isoguard.entries DISABLE TRIGGER entries_are_never_updated");
      !st.ok()) {
    return st;
  }
  const std::string sql = "UPDATE isoguard.entries SET " + column + " = set_byte(" + column +
                          ", length(" + column + ") / 2, get_byte(" + column + ", length(" +
                          column + ") / 2) # 1) WHERE patient_id = '" + patient_id +
                          "' AND version = " + std::to_string(version);
  PGresult* r = PQexec(db.get(), sql.c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK && std::string(PQcmdTuples(r)) == "1";
  std::string message = PQresultErrorMessage(r);
  PQclear(r);
  if (!ok) return Error::Internal("update failed: " + message);
  return db.Exec("ALTER TABLE isoguard.entries ENABLE TRIGGER entries_are_never_updated");
}

// The backups the conformance suite takes are loaded into a database of their own.
inline std::string RestoredPgUrl(const std::string& backup_path) {
  const std::string url = FreshPgDatabase();
  if (auto st = PostgresEventStore::Restore(backup_path, url); !st.ok()) {
    ADD_FAILURE() << "restoring " << backup_path << ": " << st.error().ToString();
  }
  return url;
}

inline StoreBackend PostgresBackend() {
  StoreBackend b;
  b.name = "Postgres";
  b.new_store_url = [](const std::string&) { return FreshPgDatabase(); };
  b.backup_url = RestoredPgUrl;
  b.corrupt = CorruptPgEntry;
  return b;
}

// Runs scripts/pg-test-cluster with `args`; its exit status (-1 when it could not run).
inline int RunPgTestCluster(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {std::string(ISOGUARD_SOURCE_DIR) + "/scripts/pg-test-cluster"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> argp;
  for (std::string& a : argv) argp.push_back(a.data());
  argp.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ::execv(argp[0], argp.data());
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace isoguard::store::testing
