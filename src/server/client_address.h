// Who a request comes from when the service runs behind a reverse proxy.
//
// The TCP peer of a request is the proxy's address, shared by every client it forwards; the
// client is named by the `X-Forwarded-For` header the proxy appends to. Any client can send
// that header, so it is believed only from peers the operator lists as trusted proxies
// (`isoguard serve --trusted-proxy`), and only as far as trusted proxies vouch for it: the
// list is read from its right (the entry the nearest proxy appended), trusted proxies are
// stepped over, and the first address that is not one is the client. A malformed entry ends
// the walk; the client is then the last trusted hop, since nothing before it can be believed.
// Without trusted proxies, or from any other peer, the header is ignored.
//
// The client's address keys the per-address sign-in limit; the access audit and the actor of
// each recorded event keep both, as "client via peer" (RequestSource).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace isoguard::server {

// An IPv4 or IPv6 address, or a network of them ("10.0.0.0/8", "fd00::/8").
struct IpNetwork {
  std::array<uint8_t, 16> bytes{};  // IPv4 in the first 4
  bool v6 = false;
  int prefix_bits = 0;  // 32 or 128 for one address

  bool Contains(const IpNetwork& address) const;
};

// At most this many trusted proxies, and this many X-Forwarded-For entries are looked at.
inline constexpr size_t kMaxTrustedProxies = 64;
inline constexpr size_t kMaxForwardedHops = 16;

// One address ("203.0.113.7", "2001:db8::1", "[2001:db8::1]"), as a /32 or /128 network;
// nothing else (no port, no zone, no spaces).
Result<IpNetwork> ParseIpAddress(std::string_view text);

// A comma-separated list of addresses and networks. An entry that is not one is a kBadInput
// error naming it (field "trusted_proxies").
Result<std::vector<IpNetwork>> ParseTrustedProxies(std::string_view list);

// The host part of a peer address as the server writes it ("ip:port", "[v6]:port").
std::string_view PeerHost(std::string_view remote);

// The client's address (no port) for a request from `remote` whose X-Forwarded-For headers,
// joined by commas in the order they came, are `forwarded_for` (empty: none), as described
// above.
std::string ClientAddress(std::string_view remote, std::string_view forwarded_for,
                          std::span<const IpNetwork> trusted_proxies);

}  // namespace isoguard::server
