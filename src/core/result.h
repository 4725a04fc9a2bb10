// Result<T>: a value or an Error, the one error type that crosses module boundaries.
//
// Expected failures (bad input, unknown ids, conflicts) are values of this type; exceptions
// from third-party libraries are caught at the adapter that calls them and turned into an
// Error. Not std::expected: libstdc++ 12 offers it only in C++23 mode, and clang-16 (used
// for libFuzzer) cannot use it with that library.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace isoguard {

enum class ErrorKind {
  kBadInput,  // the caller's input is malformed or out of range (CLI exit 2)
  kNotFound,  // something named by the caller does not exist (CLI exit 2)
  kConflict,  // the caller's view is stale: a stream moved on since it was read (retry)
  kInternal,  // a bug or an environment failure (CLI exit 1)
  // The service's own kinds (src/server maps every kind to an HTTP status in one place).
  kUnauthenticated,     // no credentials, or credentials that are unknown, expired or revoked
  kForbidden,           // authenticated, but this role or organisation may not do this
  kPreconditionFailed,  // If-Match named a version the resource is no longer at
  kUnavailable,         // overloaded, or storage that cannot take writes now (full, read-only)
  kRateLimited,         // too many attempts (sign-in failures) from this account or address
};

struct Error {
  ErrorKind kind = ErrorKind::kInternal;
  int retry_after_seconds = 0;  // kUnavailable, kRateLimited: when to ask again (0: at once)
  std::string message;          // a sentence a person can act on
  std::string field;  // where: "events[3].kg", "programs/us-ipledge-2026.toml: window_days"

  static Error BadInput(std::string message, std::string field = {}) {
    return Error{
        .kind = ErrorKind::kBadInput, .message = std::move(message), .field = std::move(field)};
  }
  static Error NotFound(std::string message, std::string field = {}) {
    return Error{
        .kind = ErrorKind::kNotFound, .message = std::move(message), .field = std::move(field)};
  }
  static Error Conflict(std::string message, std::string field = {}) {
    return Error{
        .kind = ErrorKind::kConflict, .message = std::move(message), .field = std::move(field)};
  }
  static Error Internal(std::string message, std::string field = {}) {
    return Error{
        .kind = ErrorKind::kInternal, .message = std::move(message), .field = std::move(field)};
  }
  static Error Unauthenticated(std::string message, std::string field = {}) {
    return Error{.kind = ErrorKind::kUnauthenticated,
                 .message = std::move(message),
                 .field = std::move(field)};
  }
  static Error Forbidden(std::string message, std::string field = {}) {
    return Error{
        .kind = ErrorKind::kForbidden, .message = std::move(message), .field = std::move(field)};
  }
  static Error PreconditionFailed(std::string message, std::string field = {}) {
    return Error{.kind = ErrorKind::kPreconditionFailed,
                 .message = std::move(message),
                 .field = std::move(field)};
  }
  static Error Unavailable(std::string message, std::string field = {}) {
    return Error{
        .kind = ErrorKind::kUnavailable, .message = std::move(message), .field = std::move(field)};
  }
  static Error RateLimited(std::string message, int retry_after_seconds) {
    return Error{.kind = ErrorKind::kRateLimited,
                 .retry_after_seconds = retry_after_seconds,
                 .message = std::move(message),
                 .field = {}};
  }

  // "events[3].kg: must be in (0, 500]" — the field first when there is one.
  std::string ToString() const { return field.empty() ? message : field + ": " + message; }
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return !error_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const {
    assert(!ok());
    return *error_;
  }

 private:
  std::optional<Error> error_;
};

using Status = Result<void>;

}  // namespace isoguard
