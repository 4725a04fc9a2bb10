// Trusting CDS clients (CDS Hooks 2.0, "Trusting CDS Clients"): an EHR calls isoguard's CDS
// services with `Authorization: Bearer <JWT>`, a JWS signed with the EHR's private key. The
// EHRs isoguard trusts are configured, never discovered: the `--cds-clients` TOML file lists
// each one's `iss`, its public keys (a JWKS, inline or in a file of its own) and the isoguard
// account it acts for (a prescriber or clinic staff member: access then follows that
// account's care exactly as with an API token). Keys are never fetched (a `jku` header is
// ignored), so that a token can only name keys an administrator put there.
//
// A JWT is accepted when
//  - it is a compact JWS of at most kMaxJwtBytes, base64url without padding, whose header and
//    claims are JSON objects;
//  - its header has `typ` "JWT", `kid`, and `alg` ES384 or RS384 (the two the specification
//    requires; `none`, HS256 and every other alg are refused, so that neither an unsigned
//    token nor one "signed" with a public key as an HMAC secret can pass);
//  - `iss` is a configured client and `kid` one of its keys, of the alg's type;
//  - the signature verifies (ES384: the JWS's raw 96-byte R||S; RS384: PKCS #1 v1.5);
//  - `aud` (a string or an array) holds the URL the client called: the file's `aud_base` and
//    the request's path ("https://isoguard.example/cds-services/isoguard-order-sign");
//  - `exp` is in the future but at most kMaxJwtLifetime away, `iat` not in the future (both
//    with kJwtClockSkew for the clocks' difference), and `jti` was not seen from that `iss`
//    before its exp (replay protection, at most kMaxRememberedJtis remembered).
// Otherwise the error is kUnauthenticated, its message naming what failed.
//
// The file:
//   aud_base = "https://isoguard.example"        # this server as the EHRs call it
//   [[clients]]
//   iss = "https://ehr.example.org"
//   account = "dr-smith"                         # an isoguard account id
//   jwks_file = "ehr.jwks.json"                  # relative to this file; or
//   # jwks = '{"keys":[{"kty":"EC","crv":"P-384","kid":"k1","x":"...","y":"..."}]}'
//
// Thread-safe: Verify may be called from any thread.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/result.h"
#include "core/time.h"

namespace isoguard::fhir {

// A CDS client's JWT: a few hundred bytes in practice; a header of this size is refused
// before anything is decoded.
inline constexpr size_t kMaxJwtBytes = 8 * 1024;
// The specification: "exp ... SHOULD be no more than 5 minutes in the future".
inline constexpr std::chrono::seconds kMaxJwtLifetime{5 * 60};
// How far the EHR's clock may be ahead of isoguard's (exp's limit and iat).
inline constexpr std::chrono::seconds kJwtClockSkew{60};
// Seen (iss, jti) pairs kept until their exp: at the 5-minute lifetime, 100,000 are over 300
// CDS calls a second for five minutes. When full, new tokens are refused (503) rather than
// old entries forgotten, which would let a replay through.
inline constexpr size_t kMaxRememberedJtis = 100000;
inline constexpr size_t kMaxJtiBytes = 256;
// The configuration's bounds.
inline constexpr size_t kMaxCdsClients = 100;
inline constexpr size_t kMaxKeysPerCdsClient = 20;
inline constexpr uintmax_t kMaxCdsClientsFileBytes = uintmax_t{1} << 20;
inline constexpr uintmax_t kMaxJwksFileBytes = uintmax_t{1} << 20;
// RSA keys below 2048 bits are refused (NIST SP 800-131A); above 8192, verification is slow
// enough to be a denial of service.
inline constexpr int kMinRsaBits = 2048;
inline constexpr int kMaxRsaBits = 8192;

// Who a verified JWT speaks for.
struct VerifiedCdsClient {
  std::string iss;
  std::string account_id;  // the isoguard account the client acts for
  std::string jti;
  std::string tenant;  // the optional `tenant` claim
};

class CdsClients {
 public:
  ~CdsClients();
  CdsClients(const CdsClients&) = delete;
  CdsClients& operator=(const CdsClients&) = delete;

  // The `--cds-clients` file. kBadInput naming the file and the key at fault
  // ("clients.toml: clients[1].jwks.keys[0].x").
  static Result<std::shared_ptr<CdsClients>> Load(const std::filesystem::path& file);
  // The same from TOML text; `dir` resolves relative jwks_file paths, `name` is the file's
  // name in messages.
  static Result<std::shared_ptr<CdsClients>> Parse(std::string_view toml,
                                                   const std::filesystem::path& dir,
                                                   std::string_view name);

  // Whether a bearer token has a JWS's shape (three base64url parts joined by dots): such a
  // token goes to Verify, any other to the isoguard token check.
  static bool LooksLikeJwt(std::string_view token);

  // Verifies `jwt` sent to `called_path` (the request's path, "/cds-services/<id>") at `now`;
  // see the header comment. A jti is remembered only once everything else has passed.
  Result<VerifiedCdsClient> Verify(std::string_view jwt, std::string_view called_path,
                                   Instant now) const;

  const std::string& aud_base() const { return aud_base_; }
  // The account id of every client, to be checked against the service's accounts at start.
  std::vector<std::string> AccountIds() const;

 private:
  struct Key;
  struct Client;
  CdsClients();
  Status RememberJti(const std::string& iss, const std::string& jti, Instant exp,
                     Instant now) const;

  std::string aud_base_;
  std::vector<Client> clients_;
  mutable std::mutex mu_;
  mutable std::unordered_map<std::string, Instant> seen_jtis_;  // iss + '\n' + jti -> exp
  mutable Instant next_sweep_{};
};

// base64url (RFC 4648 5) without padding, as JWS uses it.
std::string Base64UrlEncode(std::string_view bytes);
// Strict: the alphabet only, no padding, no stray bits; nullopt otherwise.
std::optional<std::string> Base64UrlDecode(std::string_view text);

}  // namespace isoguard::fhir
