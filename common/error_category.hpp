#pragma once
// One std::error_category for each module's error enum, without a class per module: the
// module gives its category's name and a function from its enum to a message.
//
//   const char* describe(buffer_errc e) {
//     switch (e) { case buffer_errc::full: return "buffer full"; /* … */ }
//     return nullptr;
//   }
//   const std::error_category& buffer_category() {
//     static const EnumCategory<buffer_errc> category("outpost.buffer", describe);
//     return category;
//   }
//
// A value the function does not know (it returns nullptr) reads "unknown <name> error".
//
// Thread-safety: immutable after construction; use from any thread.

#include <string>
#include <system_error>

namespace outpost {

template <typename Enum>
class EnumCategory final : public std::error_category {
 public:
  using Describe = const char* (*)(Enum);
  EnumCategory(const char* name, Describe describe) : name_(name), describe_(describe) {}
  const char* name() const noexcept override { return name_; }
  std::string message(int c) const override {
    const char* m = describe_(static_cast<Enum>(c));
    return m != nullptr ? m : std::string("unknown ") + name_ + " error";
  }

 private:
  const char* name_;
  Describe describe_;
};

}  // namespace outpost
