#include "server/client_address.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace isoguard::server {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// inet_pton wants a NUL-terminated string: the longest IPv6 text is 45 characters.
constexpr size_t kMaxAddressText = 45;

}  // namespace

bool IpNetwork::Contains(const IpNetwork& address) const {
  if (address.v6 != v6) return false;
  const int bits = prefix_bits;
  const size_t whole = static_cast<size_t>(bits / 8);
  if (std::memcmp(bytes.data(), address.bytes.data(), whole) != 0) return false;
  if (bits % 8 == 0) return true;
  const auto mask = static_cast<uint8_t>(0xFF << (8 - bits % 8));
  return (bytes[whole] & mask) == (address.bytes[whole] & mask);
}

Result<IpNetwork> ParseIpAddress(std::string_view text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  if (text.empty() || text.size() > kMaxAddressText) {
    return Error::BadInput("not an IP address", "address");
  }
  char buffer[kMaxAddressText + 1];
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  IpNetwork out;
  if (inet_pton(AF_INET, buffer, out.bytes.data()) == 1) {
    out.prefix_bits = 32;
    return out;
  }
  if (inet_pton(AF_INET6, buffer, out.bytes.data()) == 1) {
    // An IPv4 client of a dual-stack socket (::ffff:a.b.c.d) is that IPv4 address.
    static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (std::memcmp(out.bytes.data(), kMapped, sizeof kMapped) == 0) {
      std::memmove(out.bytes.data(), out.bytes.data() + 12, 4);
      std::memset(out.bytes.data() + 4, 0, 12);
      out.prefix_bits = 32;
      return out;
    }
    out.v6 = true;
    out.prefix_bits = 128;
    return out;
  }
  return Error::BadInput("not an IP address", "address");
}

Result<std::vector<IpNetwork>> ParseTrustedProxies(std::string_view list) {
  std::vector<IpNetwork> out;
  if (Trim(list).empty()) return out;
  for (bool more = true; more;) {
    const size_t comma = list.find(',');
    const std::string_view entry = Trim(list.substr(0, comma));
    more = comma != std::string_view::npos;
    if (more) list = list.substr(comma + 1);
    auto bad = [&](std::string_view why) {
      return Error::BadInput("'" + std::string(entry.substr(0, 64)) + "' " + std::string(why),
                             "trusted_proxies");
    };
    if (entry.empty()) return bad("is empty: list addresses or networks separated by commas");
    if (out.size() == kMaxTrustedProxies) {
      return bad("is one too many: at most " + std::to_string(kMaxTrustedProxies) + " entries");
    }
    const size_t slash = entry.find('/');
    auto address = ParseIpAddress(entry.substr(0, slash));
    if (!address.ok()) return bad("is not an IP address or network (a.b.c.d[/n], x:y::z[/n])");
    if (slash != std::string_view::npos) {
      const std::string_view bits_text = entry.substr(slash + 1);
      int bits = -1;
      auto [end, ec] = std::from_chars(bits_text.data(), bits_text.data() + bits_text.size(), bits);
      const int max_bits = address->v6 ? 128 : 32;
      if (ec != std::errc() || end != bits_text.data() + bits_text.size() || bits < 0 ||
          bits > max_bits) {
        return bad("has a prefix length that is not 0-" + std::to_string(max_bits));
      }
      address->prefix_bits = bits;
    }
    out.push_back(*address);
  }
  return out;
}

std::string_view PeerHost(std::string_view remote) {
  if (!remote.empty() && remote.front() == '[') {
    const size_t close = remote.find(']');
    return close == std::string_view::npos ? remote : remote.substr(1, close - 1);
  }
  const size_t colon = remote.rfind(':');
  return colon == std::string_view::npos ? remote : remote.substr(0, colon);
}

std::string ClientAddress(std::string_view remote, std::string_view forwarded_for,
                          std::span<const IpNetwork> trusted_proxies) {
  std::string_view client = PeerHost(remote);
  auto trusted = [&](const IpNetwork& address) {
    for (const IpNetwork& n : trusted_proxies) {
      if (n.Contains(address)) return true;
    }
    return false;
  };
  if (trusted_proxies.empty() || forwarded_for.empty()) return std::string(client);
  if (auto peer = ParseIpAddress(client); !peer.ok() || !trusted(*peer)) {
    return std::string(client);
  }
  // From the right: each trusted hop vouches for the entry before it.
  std::string_view rest = forwarded_for;
  for (size_t hops = 0; hops < kMaxForwardedHops && !rest.empty(); ++hops) {
    const size_t comma = rest.rfind(',');
    const std::string_view entry =
        Trim(comma == std::string_view::npos ? rest : rest.substr(comma + 1));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(0, comma);
    auto address = ParseIpAddress(entry);
    if (!address.ok()) break;  // nothing from here on can be believed
    client = entry;
    if (!trusted(*address)) break;  // the first address that is not a proxy's: the client
  }
  if (client.size() >= 2 && client.front() == '[') client = client.substr(1, client.size() - 2);
  return std::string(client);
}

}  // namespace isoguard::server
