// The conformance suite (event_store_conformance_test.cpp) run against the PostgreSQL backend,
// each test on a database of its own in the test cluster.
#include "postgres_backend.h"

#include <gtest/gtest.h>

#include "store_test_support.h"

namespace isoguard::store::testing {
namespace {

// The suite is instantiated only when a cluster is configured; this says when it is not.
TEST(PostgresConformance, ClusterIsConfigured) {
  ISOGUARD_REQUIRE_PG();
  EXPECT_FALSE(PgAdminUrl().empty());
}

std::vector<StoreBackend> PostgresBackends() {
  if (!PgUrlFile()) return {};
  return {PostgresBackend()};
}

INSTANTIATE_TEST_SUITE_P(Postgres, EventStoreConformance, ::testing::ValuesIn(PostgresBackends()),
                         [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace isoguard::store::testing
