#pragma once
// Result<T>: a value or an Error, returned across every library boundary instead of throwing
// (STYLE.md rule 6). An Error carries a std::error_code from the owning library's errc (for
// programs to branch on) and a message for people (names the file, key or value involved).
//
// Thread-safety: plain values; no shared state.

#include <cassert>
#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace outpost {

struct Error {
  std::error_code code;
  std::string message;

  std::string describe() const { return message.empty() ? code.message() : message; }
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

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
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const {
    assert(failed_);
    return error_;
  }

 private:
  Error error_;
  bool failed_ = false;
};

// Assigns the value of a Result expression to `target`, or returns its error.
#define OUTPOST_TRY_ASSIGN(target, expr)        \
  do {                                          \
    auto outpost_r_ = (expr);                   \
    if (!outpost_r_) return outpost_r_.error(); \
    target = std::move(*outpost_r_);            \
  } while (0)

inline Error make_error(std::error_code code, std::string message) {
  return Error{code, std::move(message)};
}

}  // namespace outpost
