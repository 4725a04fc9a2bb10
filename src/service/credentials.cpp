#include "service/credentials.h"

#include <sodium.h>

#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace isoguard::service {
namespace {

void InitSodium() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0) throw std::runtime_error("libsodium could not be initialised");
  });
}

constexpr size_t kEncodedTokenChars = 43;  // base64url of 32 bytes, no padding

bool IsBase64UrlChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

}  // namespace

std::string NewToken() {
  InitSodium();
  unsigned char bytes[kTokenBytes];
  randombytes_buf(bytes, sizeof bytes);
  char encoded[sodium_base64_ENCODED_LEN(kTokenBytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
  sodium_bin2base64(encoded, sizeof encoded, bytes, sizeof bytes,
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  sodium_memzero(bytes, sizeof bytes);
  return std::string(kTokenPrefix) + encoded;
}

TokenHash HashToken(std::string_view token) {
  InitSodium();
  TokenHash hash{};
  crypto_generichash(hash.data(), hash.size(), reinterpret_cast<const unsigned char*>(token.data()),
                     token.size(), nullptr, 0);
  return hash;
}

bool LooksLikeToken(std::string_view text) {
  if (!text.starts_with(kTokenPrefix)) return false;
  text.remove_prefix(kTokenPrefix.size());
  if (text.size() != kEncodedTokenChars) return false;
  for (char c : text) {
    if (!IsBase64UrlChar(c)) return false;
  }
  return true;
}

Result<std::string> HashPassword(std::string_view password) {
  InitSodium();
  if (password.size() < kMinPasswordBytes) {
    return Error::BadInput(
        "must be at least " + std::to_string(kMinPasswordBytes) + " characters long", "password");
  }
  if (password.size() > kMaxPasswordBytes) {
    return Error::BadInput("must be at most " + std::to_string(kMaxPasswordBytes) + " bytes",
                           "password");
  }
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str(out, password.data(), password.size(), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                        crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
    return Error::Internal("not enough memory to hash the password");
  }
  return std::string(out);
}

bool VerifyPassword(std::string_view password_hash, std::string_view password) {
  InitSodium();
  if (password_hash.empty() || password_hash.size() >= crypto_pwhash_STRBYTES ||
      password.size() > kMaxPasswordBytes) {
    return false;
  }
  char stored[crypto_pwhash_STRBYTES] = {};
  password_hash.copy(stored, password_hash.size());
  return crypto_pwhash_str_verify(stored, password.data(), password.size()) == 0;
}

}  // namespace isoguard::service
