// Credentials: API tokens and passwords.
//
// A token is "igt_" followed by 43 characters of base64url (32 random bytes from libsodium's
// CSPRNG). It is shown once, when made, and only its hash is stored: BLAKE2b-256 of the whole
// token string (crypto_generichash). A fast hash is right here because a token carries 256
// bits of randomness; there is nothing to guess. Passwords are people's choices and are hashed
// with Argon2id (crypto_pwhash_str, with libsodium's interactive limits), so that a copy of
// the database does not give them away.
//
// Thread-safe: every function may be called from any thread (libsodium is initialised once).
#pragma once

#include <string>
#include <string_view>

#include "core/result.h"
#include "service/service_store.h"

namespace isoguard::service {

inline constexpr std::string_view kTokenPrefix = "igt_";
inline constexpr size_t kTokenBytes = 32;
inline constexpr size_t kMinPasswordBytes = 12;
inline constexpr size_t kMaxPasswordBytes = 256;

// A new random token ("igt_...").
std::string NewToken();
// The stored form of a token. Tokens of the wrong shape hash too (and are found nowhere).
TokenHash HashToken(std::string_view token);
// Whether `text` has the shape of a token (prefix, length, alphabet): checked before any
// lookup so that junk is refused without touching the database.
bool LooksLikeToken(std::string_view text);

// Argon2id; kBadInput when the password is shorter than kMinPasswordBytes or longer than
// kMaxPasswordBytes. Slow by design (tens of milliseconds).
Result<std::string> HashPassword(std::string_view password);
// Constant-time with respect to the password; false for a malformed hash.
bool VerifyPassword(std::string_view password_hash, std::string_view password);

}  // namespace isoguard::service
