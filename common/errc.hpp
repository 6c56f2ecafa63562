#pragma once
// Error codes of the common library (configuration, logging).

#include <system_error>

namespace outpost {

enum class common_errc {
  config_unreadable = 1,  // the file cannot be opened or is not TOML
  config_invalid,         // a key has a value that is not allowed
  config_unknown_key,     // a key the program does not know (likely a typo)
  bad_input,              // bytes from outside (a file, stdin, the network) that do not parse
  in_use,                 // another process holds the lock on a directory or file (file_lock.hpp)
  not_running,            // no process holds that lock, or it cannot be signalled (reload)
};

const std::error_category& common_category();
inline std::error_code make_error_code(common_errc e) {
  return {static_cast<int>(e), common_category()};
}

}  // namespace outpost

template <>
struct std::is_error_code_enum<outpost::common_errc> : std::true_type {};
