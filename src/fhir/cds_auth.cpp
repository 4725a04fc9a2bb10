#include "fhir/cds_auth.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <toml++/toml.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <fstream>
#include <sstream>

namespace isoguard::fhir {
namespace {

namespace json = boost::json;

constexpr std::string_view kField = "Authorization";
constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
// P-384's coordinates and scalars are 48 bytes; an ES384 signature is R || S.
constexpr size_t kP384Bytes = 48;
// Ids and URLs of the configuration and of the claims quoted in messages.
constexpr size_t kMaxNameBytes = 512;
constexpr size_t kMaxQuotedBytes = 100;

int Sextet(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

Error Refused(std::string message) {
  return Error::Unauthenticated("CDS client JWT refused: " + std::move(message),
                                std::string(kField));
}

// A claim's value as shown in a message: bounded, printable ASCII only.
std::string Quoted(std::string_view v) {
  std::string out = "'";
  for (char c : v.substr(0, kMaxQuotedBytes)) {
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  if (v.size() > kMaxQuotedBytes) out += "...";
  return out + "'";
}

// One JSON object from a base64url part, or nullopt.
std::optional<json::object> DecodeObject(std::string_view part) {
  auto bytes = Base64UrlDecode(part);
  if (!bytes) return std::nullopt;
  boost::system::error_code ec;
  json::value v = json::parse(*bytes, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return std::move(v.get_object());
}

// A string member, or nullopt when absent; `bad` is set when present but not a string.
std::optional<std::string> StringMember(const json::object& o, std::string_view key, bool& bad) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) {
    bad = true;
    return std::nullopt;
  }
  return std::string(v->get_string());
}

// A NumericDate (RFC 7519 2: seconds since the epoch, maybe fractional) within sane years.
std::optional<Instant> NumericDate(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_number()) return std::nullopt;
  boost::system::error_code ec;
  const double seconds = v->to_number<double>(ec);
  // Before 2001 or after 2286: not a date a live token carries.
  if (ec || !std::isfinite(seconds) || seconds < 1e9 || seconds > 1e10) return std::nullopt;
  return Instant(std::chrono::milliseconds(static_cast<int64_t>(std::floor(seconds)) * 1000));
}

Result<std::string> ReadSmallFile(const std::filesystem::path& path, uintmax_t max_bytes,
                                  const std::string& field) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return Error::BadInput("cannot read " + path.string() + ": " + ec.message(), field);
  if (size > max_bytes) {
    return Error::BadInput(
        path.string() + " is larger than " + std::to_string(max_bytes >> 20) + " MiB", field);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::BadInput("cannot read " + path.string(), field);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

using PkeyPtr = std::shared_ptr<EVP_PKEY>;

PkeyPtr Adopt(EVP_PKEY* p) { return PkeyPtr(p, EVP_PKEY_free); }

// A public key from OSSL_PARAMs, checked (a point on the curve, a sane RSA modulus).
PkeyPtr KeyFromParams(const char* type, OSSL_PARAM* params) {
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr), EVP_PKEY_CTX_free);
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params) != 1) {
    ERR_clear_error();
    return nullptr;
  }
  PkeyPtr key = Adopt(raw);
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> check(
      EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr), EVP_PKEY_CTX_free);
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    ERR_clear_error();
    return nullptr;
  }
  return key;
}

PkeyPtr EcP384Key(const std::string& x, const std::string& y) {
  std::string point = "\x04" + x + y;  // SEC 1 uncompressed point
  char group[] = "P-384";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()),
      OSSL_PARAM_construct_end()};
  return KeyFromParams("EC", params);
}

PkeyPtr RsaKey(const std::string& n, const std::string& e) {
  std::unique_ptr<BIGNUM, decltype(&BN_free)> bn_n(
      BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), static_cast<int>(n.size()),
                nullptr),
      BN_free);
  std::unique_ptr<BIGNUM, decltype(&BN_free)> bn_e(
      BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), static_cast<int>(e.size()),
                nullptr),
      BN_free);
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> bld(OSSL_PARAM_BLD_new(),
                                                                      OSSL_PARAM_BLD_free);
  if (!bn_n || !bn_e || !bld ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    ERR_clear_error();
    return nullptr;
  }
  std::unique_ptr<OSSL_PARAM, decltype(&OSSL_PARAM_free)> params(OSSL_PARAM_BLD_to_param(bld.get()),
                                                                 OSSL_PARAM_free);
  if (!params) return nullptr;
  return KeyFromParams("RSA", params.get());
}

// ES384's raw R || S as the DER ECDSA-Sig-Value that EVP_DigestVerify takes.
std::optional<std::string> EcdsaDer(std::string_view raw) {
  if (raw.size() != 2 * kP384Bytes) return std::nullopt;
  const auto* bytes = reinterpret_cast<const unsigned char*>(raw.data());
  std::unique_ptr<ECDSA_SIG, decltype(&ECDSA_SIG_free)> sig(ECDSA_SIG_new(), ECDSA_SIG_free);
  BIGNUM* r = BN_bin2bn(bytes, static_cast<int>(kP384Bytes), nullptr);
  BIGNUM* s = BN_bin2bn(bytes + kP384Bytes, static_cast<int>(kP384Bytes), nullptr);
  if (!sig || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return std::nullopt;
  }
  const int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return std::nullopt;
  std::string der(static_cast<size_t>(len), '\0');
  auto* out = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_ECDSA_SIG(sig.get(), &out) != len) return std::nullopt;
  return der;
}

}  // namespace

// ---- base64url.

std::string Base64UrlEncode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = uint32_t{static_cast<unsigned char>(bytes[i])} << 16 |
                       uint32_t{static_cast<unsigned char>(bytes[i + 1])} << 8 |
                       uint32_t{static_cast<unsigned char>(bytes[i + 2])};
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (const size_t rest = bytes.size() - i; rest > 0) {
    uint32_t v = uint32_t{static_cast<unsigned char>(bytes[i])} << 16;
    if (rest == 2) v |= uint32_t{static_cast<unsigned char>(bytes[i + 1])} << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    if (rest == 2) out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

std::optional<std::string> Base64UrlDecode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = Sextet(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  // The bits left over must be zero: one text per byte string, so that no two spellings of
  // one signature exist.
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

// ---- The configuration.

struct CdsClients::Key {
  std::string kid;
  std::string alg;  // the JWS alg the key verifies: "ES384" or "RS384"
  PkeyPtr pkey;
};

struct CdsClients::Client {
  std::string iss;
  std::string account_id;
  std::vector<Key> keys;
};

CdsClients::CdsClients() = default;
CdsClients::~CdsClients() = default;

namespace {

// One JWK of a client's set; `where` names it in errors.
Result<std::pair<std::string, PkeyPtr>> ParseJwk(const json::value& v, const std::string& where,
                                                 std::string& kid) {
  if (!v.is_object()) return Error::BadInput("must be a JWK object", where);
  const json::object& k = v.get_object();
  bool bad = false;
  auto str = [&](std::string_view key) { return StringMember(k, key, bad); };
  auto kty = str("kty");
  auto id = str("kid");
  auto use = str("use");
  auto alg = str("alg");
  if (bad) return Error::BadInput("kty, kid, use and alg must be strings", where);
  if (!id || id->empty() || id->size() > kMaxNameBytes) {
    return Error::BadInput("needs a kid (the JWT header names its key by it)", where + ".kid");
  }
  kid = *id;
  if (use && *use != "sig") return Error::BadInput("must be 'sig'", where + ".use");
  if (k.contains("d") || k.contains("p") || k.contains("q")) {
    return Error::BadInput(
        "holds a private key: give the client's public key only (remove d, p, q, ...)", where);
  }
  auto member = [&](std::string_view key, size_t exact_bytes) -> Result<std::string> {
    auto text = str(key);
    if (!text) return Error::BadInput("required (base64url)", where + "." + std::string(key));
    auto bytes = Base64UrlDecode(*text);
    if (!bytes || bytes->empty() || (exact_bytes != 0 && bytes->size() != exact_bytes)) {
      return Error::BadInput(exact_bytes != 0
                                 ? "must be base64url of " + std::to_string(exact_bytes) + " bytes"
                                 : std::string("must be base64url"),
                             where + "." + std::string(key));
    }
    return *bytes;
  };
  if (kty == "EC") {
    auto crv = str("crv");
    if (crv != "P-384") {
      return Error::BadInput("must be 'P-384' (ES384 is ECDSA on P-384)", where + ".crv");
    }
    if (alg && *alg != "ES384")
      return Error::BadInput("an EC P-384 key is for ES384", where + ".alg");
    auto x = member("x", kP384Bytes);
    if (!x.ok()) return x.error();
    auto y = member("y", kP384Bytes);
    if (!y.ok()) return y.error();
    PkeyPtr key = EcP384Key(*x, *y);
    if (!key) return Error::BadInput("x, y is not a point of P-384", where);
    return std::make_pair(std::string("ES384"), std::move(key));
  }
  if (kty == "RSA") {
    if (alg && *alg != "RS384") return Error::BadInput("an RSA key is for RS384", where + ".alg");
    auto n = member("n", 0);
    if (!n.ok()) return n.error();
    auto e = member("e", 0);
    if (!e.ok()) return e.error();
    PkeyPtr key = RsaKey(*n, *e);
    if (!key) return Error::BadInput("n, e is not a usable RSA public key", where);
    const int bits = EVP_PKEY_get_bits(key.get());
    if (bits < kMinRsaBits || bits > kMaxRsaBits) {
      return Error::BadInput("an RSA key of " + std::to_string(bits) + " bits: must be " +
                                 std::to_string(kMinRsaBits) + " to " + std::to_string(kMaxRsaBits),
                             where + ".n");
    }
    return std::make_pair(std::string("RS384"), std::move(key));
  }
  return Error::BadInput("must be 'EC' (P-384, ES384) or 'RSA' (RS384)", where + ".kty");
}

}  // namespace

Result<std::shared_ptr<CdsClients>> CdsClients::Load(const std::filesystem::path& file) {
  auto text = ReadSmallFile(file, kMaxCdsClientsFileBytes, "--cds-clients");
  if (!text.ok()) return text.error();
  return Parse(*text, file.parent_path(), file.string());
}

Result<std::shared_ptr<CdsClients>> CdsClients::Parse(std::string_view toml_text,
                                                      const std::filesystem::path& dir,
                                                      std::string_view name) {
  const std::string file(name);
  toml::table root;
  try {
    root = toml::parse(toml_text, file);
  } catch (const toml::parse_error& e) {
    return Error::BadInput(
        std::string(e.description()) + " (line " + std::to_string(e.source().begin.line) + ")",
        file);
  }
  auto at = [&](const std::string& key) { return file + ": " + key; };
  for (const auto& [key, value] : root) {
    if (key != "aud_base" && key != "clients") {
      return Error::BadInput("unknown key (aud_base and [[clients]] are known)",
                             at(std::string(key.str())));
    }
  }
  std::shared_ptr<CdsClients> out(new CdsClients());
  auto aud_base = root["aud_base"].value<std::string>();
  if (!aud_base || !(aud_base->starts_with("https://") || aud_base->starts_with("http://")) ||
      aud_base->size() > kMaxNameBytes || aud_base->find_first_of("?# ") != std::string::npos) {
    return Error::BadInput(
        "must be this server's base URL as the CDS clients call it (\"https://host[/prefix]\")",
        at("aud_base"));
  }
  while (aud_base->ends_with('/')) aud_base->pop_back();
  out->aud_base_ = *aud_base;
  const toml::array* clients = root["clients"].as_array();
  if (clients == nullptr || clients->empty()) {
    return Error::BadInput("needs at least one [[clients]] table", at("clients"));
  }
  if (clients->size() > kMaxCdsClients) {
    return Error::BadInput("at most " + std::to_string(kMaxCdsClients) + " clients", at("clients"));
  }
  size_t i = 0;
  for (const toml::node& node : *clients) {
    const std::string where = "clients[" + std::to_string(i++) + "]";
    const toml::table* t = node.as_table();
    if (t == nullptr) return Error::BadInput("must be a table", at(where));
    for (const auto& [key, value] : *t) {
      if (key != "iss" && key != "account" && key != "jwks" && key != "jwks_file") {
        return Error::BadInput("unknown key (iss, account, jwks, jwks_file are known)",
                               at(where + "." + std::string(key.str())));
      }
    }
    Client c;
    auto iss = (*t)["iss"].value<std::string>();
    if (!iss || iss->empty() || iss->size() > kMaxNameBytes) {
      return Error::BadInput("must be the client's JWT issuer (its iss claim)", at(where + ".iss"));
    }
    for (const Client& other : out->clients_) {
      if (other.iss == *iss)
        return Error::BadInput("duplicate iss " + Quoted(*iss), at(where + ".iss"));
    }
    c.iss = *iss;
    auto account = (*t)["account"].value<std::string>();
    if (!account || account->empty() || account->size() > kMaxNameBytes) {
      return Error::BadInput("must be the id of the isoguard account the client acts for",
                             at(where + ".account"));
    }
    c.account_id = *account;
    auto jwks = (*t)["jwks"].value<std::string>();
    auto jwks_file = (*t)["jwks_file"].value<std::string>();
    if (jwks.has_value() == jwks_file.has_value()) {
      return Error::BadInput("give exactly one of jwks (the JWK Set's JSON) and jwks_file",
                             at(where));
    }
    std::string jwks_where = where + ".jwks";
    std::string jwks_text;
    if (jwks_file) {
      std::filesystem::path path(*jwks_file);
      if (path.is_relative()) path = dir / path;
      auto read = ReadSmallFile(path, kMaxJwksFileBytes, at(where + ".jwks_file"));
      if (!read.ok()) return read.error();
      jwks_text = std::move(*read);
      jwks_where = path.string();
    } else {
      if (jwks->size() > kMaxJwksFileBytes) {
        return Error::BadInput("larger than 1 MiB", at(jwks_where));
      }
      jwks_text = std::move(*jwks);
    }
    const std::string set_at = jwks_file ? jwks_where + ": " : at(jwks_where) + ".";
    boost::system::error_code ec;
    json::value set = json::parse(jwks_text, ec);
    const json::value* keys =
        !ec && set.is_object() ? set.get_object().if_contains("keys") : nullptr;
    if (keys == nullptr || !keys->is_array() || keys->get_array().empty()) {
      return Error::BadInput("must be a JWK Set: {\"keys\": [...]} with at least one key",
                             jwks_file ? jwks_where : at(jwks_where));
    }
    if (keys->get_array().size() > kMaxKeysPerCdsClient) {
      return Error::BadInput("at most " + std::to_string(kMaxKeysPerCdsClient) + " keys",
                             set_at + "keys");
    }
    size_t j = 0;
    for (const json::value& jwk : keys->get_array()) {
      const std::string key_at = set_at + "keys[" + std::to_string(j++) + "]";
      std::string kid;
      auto parsed = ParseJwk(jwk, key_at, kid);
      if (!parsed.ok()) return parsed.error();
      for (const Key& k : c.keys) {
        if (k.kid == kid) return Error::BadInput("duplicate kid " + Quoted(kid), key_at + ".kid");
      }
      c.keys.push_back(Key{kid, std::move(parsed->first), std::move(parsed->second)});
    }
    out->clients_.push_back(std::move(c));
  }
  return out;
}

std::vector<std::string> CdsClients::AccountIds() const {
  std::vector<std::string> ids;
  for (const Client& c : clients_) ids.push_back(c.account_id);
  return ids;
}

// ---- Verification.

bool CdsClients::LooksLikeJwt(std::string_view token) {
  // No size limit here: an oversized JWT still goes to Verify, to be refused by name (the
  // server bounds the header anyway).
  if (token.empty()) return false;
  if (std::count(token.begin(), token.end(), '.') != 2) return false;
  const size_t first = token.find('.');
  const size_t second = token.find('.', first + 1);
  // The header and the claims are never empty; the signature is empty only for alg none,
  // which still goes to Verify to be refused by name.
  if (first == 0 || second == first + 1) return false;
  return std::all_of(token.begin(), token.end(), [](char c) { return c == '.' || Sextet(c) >= 0; });
}

Result<VerifiedCdsClient> CdsClients::Verify(std::string_view jwt, std::string_view called_path,
                                             Instant now) const {
  if (jwt.size() > kMaxJwtBytes) {
    return Refused("longer than " + std::to_string(kMaxJwtBytes) + " bytes");
  }
  if (!LooksLikeJwt(jwt)) {
    return Refused("malformed: not three base64url parts joined by dots");
  }
  const size_t first = jwt.find('.');
  const size_t second = jwt.find('.', first + 1);
  const std::string_view header_part = jwt.substr(0, first);
  const std::string_view claims_part = jwt.substr(first + 1, second - first - 1);
  const std::string_view signature_part = jwt.substr(second + 1);

  auto header = DecodeObject(header_part);
  if (!header) return Refused("malformed: the header is not base64url of a JSON object");
  bool bad = false;
  auto alg = StringMember(*header, "alg", bad);
  auto typ = StringMember(*header, "typ", bad);
  auto kid = StringMember(*header, "kid", bad);
  StringMember(*header, "jku", bad);
  if (bad) return Refused("malformed: alg, typ, kid and jku must be strings");
  if (!alg) return Refused("the header has no alg");
  if (*alg == "none" || *alg == "None" || *alg == "NONE") {
    return Refused("alg none: the token must be signed (ES384 or RS384)");
  }
  if (*alg != "ES384" && *alg != "RS384") {
    return Refused("alg " + Quoted(*alg) + " is not accepted (ES384 or RS384)");
  }
  if (typ != "JWT") return Refused("the header's typ must be 'JWT'");
  // No extension of JWS is understood here, so none may be critical (RFC 7515 4.1.11).
  if (header->contains("crit")) return Refused("the header's crit names an unknown extension");
  if (!kid || kid->empty()) return Refused("the header has no kid");

  auto claims = DecodeObject(claims_part);
  if (!claims) return Refused("malformed: the claims are not base64url of a JSON object");
  auto iss = StringMember(*claims, "iss", bad);
  auto jti = StringMember(*claims, "jti", bad);
  auto tenant = StringMember(*claims, "tenant", bad);
  if (bad) return Refused("malformed: iss, jti and tenant must be strings");
  if (!iss) return Refused("no iss");
  const Client* client = nullptr;
  for (const Client& c : clients_) {
    if (c.iss == *iss) client = &c;
  }
  if (client == nullptr) return Refused("unknown iss " + Quoted(*iss));
  const Key* key = nullptr;
  for (const Key& k : client->keys) {
    if (k.kid == *kid) key = &k;
  }
  if (key == nullptr) return Refused("unknown kid " + Quoted(*kid) + " for iss " + Quoted(*iss));
  if (key->alg != *alg) {
    return Refused("alg " + *alg + " does not fit key " + Quoted(*kid) + " (an " + key->alg +
                   " key)");
  }

  // The signature, over the header and claims exactly as sent (JWS signing input).
  auto signature = Base64UrlDecode(signature_part);
  if (!signature || signature->empty()) return Refused("signature missing or not base64url");
  std::string der;
  if (*alg == "ES384") {
    auto converted = EcdsaDer(*signature);
    if (!converted) return Refused("signature: ES384 needs 96 bytes (R || S)");
    der = std::move(*converted);
  } else {
    if (signature->size() != static_cast<size_t>(EVP_PKEY_get_size(key->pkey.get()))) {
      return Refused("signature: not as long as the RSA key's modulus");
    }
    der = std::move(*signature);
  }
  const std::string_view signing_input = jwt.substr(0, second);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  const bool verified =
      md && EVP_DigestVerifyInit(md.get(), nullptr, EVP_sha384(), nullptr, key->pkey.get()) == 1 &&
      EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(der.data()), der.size(),
                       reinterpret_cast<const unsigned char*>(signing_input.data()),
                       signing_input.size()) == 1;
  ERR_clear_error();
  if (!verified) return Refused("signature does not verify with key " + Quoted(*kid));

  // The claims, now that they are the client's own.
  const std::string audience = aud_base_ + std::string(called_path);
  bool aud_ok = false;
  if (const json::value* aud = claims->if_contains("aud"); aud != nullptr) {
    if (aud->is_string()) {
      aud_ok = aud->get_string() == audience;
    } else if (aud->is_array()) {
      for (const json::value& a : aud->get_array())
        aud_ok = aud_ok || (a.is_string() && a.get_string() == audience);
    }
  }
  if (!aud_ok) return Refused("aud must be this service's URL " + Quoted(audience));
  auto exp = NumericDate(*claims, "exp");
  auto iat = NumericDate(*claims, "iat");
  if (!exp) return Refused("exp missing or not a NumericDate");
  if (!iat) return Refused("iat missing or not a NumericDate");
  if (*exp <= now) return Refused("expired (exp " + FormatUtc(*exp) + ")");
  if (*exp > now + kMaxJwtLifetime + kJwtClockSkew) {
    return Refused("exp is more than 5 minutes away (" + FormatUtc(*exp) + ")");
  }
  if (*iat > now + kJwtClockSkew) return Refused("iat is in the future (" + FormatUtc(*iat) + ")");
  if (!jti || jti->empty() || jti->size() > kMaxJtiBytes) {
    return Refused("jti missing, empty or longer than " + std::to_string(kMaxJtiBytes) + " bytes");
  }
  if (auto st = RememberJti(*iss, *jti, *exp, now); !st.ok()) return st.error();
  VerifiedCdsClient v;
  v.iss = *iss;
  v.account_id = client->account_id;
  v.jti = *jti;
  v.tenant = tenant.value_or("");
  return v;
}

Status CdsClients::RememberJti(const std::string& iss, const std::string& jti, Instant exp,
                               Instant now) const {
  std::string key = iss + '\n' + jti;
  std::lock_guard lock(mu_);
  if (auto it = seen_jtis_.find(key); it != seen_jtis_.end() && it->second > now) {
    return Refused("jti " + Quoted(jti) + " replayed (seen before its exp)");
  }
  // Expired entries go every lifetime, and at once when the table is full.
  if (seen_jtis_.size() >= kMaxRememberedJtis || now >= next_sweep_) {
    std::erase_if(seen_jtis_, [now](const auto& entry) { return entry.second <= now; });
    next_sweep_ = now + kMaxJwtLifetime;
  }
  if (seen_jtis_.size() >= kMaxRememberedJtis) {
    Error e =
        Error::Unavailable("too many CDS client tokens in flight; retry", std::string(kField));
    e.retry_after_seconds = 1;
    return e;
  }
  seen_jtis_[std::move(key)] = exp;
  return {};
}

}  // namespace isoguard::fhir
