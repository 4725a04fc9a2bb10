// The client's address behind reverse proxies: X-Forwarded-For believed only from trusted
// proxies and only as far as they vouch for it, the trusted-proxy list's own errors, and the
// source the audit records.
#include "server/client_address.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "server/http.h"

namespace isoguard::server {
namespace {

std::vector<IpNetwork> Proxies(std::string_view list) {
  auto parsed = ParseTrustedProxies(list);
  EXPECT_TRUE(parsed.ok()) << (parsed.ok() ? "" : parsed.error().ToString());
  return parsed.ok() ? *parsed : std::vector<IpNetwork>{};
}

TEST(ClientAddress, WithoutTrustedProxiesTheHeaderIsIgnored) {
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", "203.0.113.7", {}), "10.0.0.5");
  EXPECT_EQ(ClientAddress("[2001:db8::5]:4000", "203.0.113.7", {}), "2001:db8::5");
}

TEST(ClientAddress, FromAnUntrustedPeerTheHeaderIsIgnored) {
  const auto trusted = Proxies("10.0.0.5");
  EXPECT_EQ(ClientAddress("198.51.100.9:4000", "203.0.113.7", trusted), "198.51.100.9");
}

TEST(ClientAddress, FromATrustedProxyTheClientItNames) {
  const auto trusted = Proxies("10.0.0.5");
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", "203.0.113.7", trusted), "203.0.113.7");
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", " 2001:db8::7 ", trusted), "2001:db8::7");
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", "[2001:db8::7]", trusted), "2001:db8::7");
  // No header: the proxy itself.
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", "", trusted), "10.0.0.5");
}

TEST(ClientAddress, OnlyAsFarAsTrustedProxiesVouch) {
  const auto trusted = Proxies("10.0.0.0/8, 192.168.1.1");
  // A client forging the start of the list: the entry the trusted proxy appended wins.
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", "1.2.3.4, 203.0.113.7", trusted), "203.0.113.7");
  // Two trusted hops, then the client.
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", "198.51.100.2, 203.0.113.7, 192.168.1.1", trusted),
            "203.0.113.7");
  // Several header lines are one list, in order.
  EXPECT_EQ(ClientAddress("10.1.2.3:4000", "198.51.100.2,10.9.9.9", trusted), "198.51.100.2");
  // A malformed entry ends the walk at the last trusted hop.
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", "203.0.113.7, unknown", trusted), "10.0.0.5");
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", "203.0.113.7, junk, 10.0.0.9", trusted), "10.0.0.9");
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", "203.0.113.7:5555", trusted), "10.0.0.5");
  // Every entry a trusted proxy: the left-most.
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", "10.0.0.7, 10.0.0.6", trusted), "10.0.0.7");
}

TEST(ClientAddress, TheWalkIsBounded) {
  const auto trusted = Proxies("10.0.0.0/8");
  std::string chain = "203.0.113.7";
  for (size_t i = 0; i < kMaxForwardedHops; ++i) chain += ", 10.0.0.1";
  // Past the bound the client cannot be told: the last trusted hop looked at.
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", chain, trusted), "10.0.0.1");
  std::string shorter = "203.0.113.7";
  for (size_t i = 0; i + 1 < kMaxForwardedHops; ++i) shorter += ", 10.0.0.1";
  EXPECT_EQ(ClientAddress("10.0.0.5:4000", shorter, trusted), "203.0.113.7");
}

TEST(ClientAddress, IpV4MappedPeersMatchIpV4Proxies) {
  const auto trusted = Proxies("127.0.0.1");
  EXPECT_EQ(ClientAddress("[::ffff:127.0.0.1]:4000", "203.0.113.7", trusted), "203.0.113.7");
}

TEST(TrustedProxies, NetworksContainTheirAddressesOnly) {
  const auto nets = Proxies("10.0.0.0/8,192.168.1.128/25,fd00::/8,::1,0.0.0.0/0");
  ASSERT_EQ(nets.size(), 5u);
  auto in = [&](size_t i, std::string_view a) { return nets[i].Contains(*ParseIpAddress(a)); };
  EXPECT_TRUE(in(0, "10.255.0.1"));
  EXPECT_FALSE(in(0, "11.0.0.1"));
  EXPECT_TRUE(in(1, "192.168.1.200"));
  EXPECT_FALSE(in(1, "192.168.1.100"));
  EXPECT_TRUE(in(2, "fd12::1"));
  EXPECT_FALSE(in(2, "fe80::1"));
  EXPECT_TRUE(in(3, "::1"));
  EXPECT_FALSE(in(3, "::2"));
  EXPECT_FALSE(in(0, "::ffff:11.0.0.1"));
  EXPECT_TRUE(in(4, "203.0.113.7"));
  EXPECT_FALSE(in(4, "2001:db8::1"));  // an IPv4 network holds no IPv6 address
}

TEST(TrustedProxies, ABadEntryIsNamed) {
  for (std::string_view bad : {"10.0.0.1,", "10.0.0.300", "10.0.0.0/33", "fd00::/129", "10.0.0.0/x",
                               "10.0.0.0/", "host.example", "10.0.0.1:80"}) {
    auto parsed = ParseTrustedProxies(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.error().field, "trusted_proxies") << bad;
    EXPECT_EQ(parsed.error().kind, ErrorKind::kBadInput) << bad;
  }
  auto parsed = ParseTrustedProxies("10.0.0.1, bogus");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message.find("'bogus'"), std::string::npos) << parsed.error().message;
  std::string many;
  for (size_t i = 0; i <= kMaxTrustedProxies; ++i) many += (i ? "," : "") + std::string("10.0.0.1");
  EXPECT_FALSE(ParseTrustedProxies(many).ok());
  EXPECT_TRUE(ParseTrustedProxies("").ok());
}

TEST(RequestSource, NamesTheClientAndThePeerWhenForwarded) {
  HttpRequest r;
  r.remote = "10.0.0.5:4000";
  EXPECT_EQ(r.source(), "10.0.0.5:4000");
  EXPECT_EQ(r.client_address(), "10.0.0.5");
  r.client = "10.0.0.5";
  EXPECT_EQ(r.source(), "10.0.0.5:4000");
  r.client = "203.0.113.7";
  EXPECT_EQ(r.source(), "203.0.113.7 via 10.0.0.5:4000");
  EXPECT_EQ(r.client_address(), "203.0.113.7");
}

}  // namespace
}  // namespace isoguard::server
