#pragma once
// SHA-256 from mbedTLS for code that needs a one-way digest (the pixel source's salted client
// IP hash, payload fingerprints) and a keyed one (HMAC), without including mbedTLS headers
// (STYLE.md rule 2).
//
// Thread-safety: a pure function.

#include <string>
#include <string_view>

namespace outpost::tls {

// Lower-case hex SHA-256 of `data` (with the CPU's SHA extensions where it has them).
std::string sha256_hex(std::string_view data);
// The same into a buffer, without allocating (the gateway takes one per event).
void sha256_hex(std::string_view data, char (&out)[64]);
// The same with mbedTLS's portable code only (digest_test compares the two).
std::string sha256_hex_portable(std::string_view data);
// Lower-case hex HMAC-SHA-256 of `data` under `key` (the contracts' HASH action).
std::string hmac_sha256_hex(std::string_view key, std::string_view data);

}  // namespace outpost::tls
