#pragma once
// Parsing and printing of the human units used in configuration and on the command line:
// durations ("250ms", "1h30m", "7d") and byte sizes ("512MiB", "2GB", "1048576").
//
// Thread-safety: pure functions.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace outpost {

// Nanoseconds, or nullopt when `text` is not a duration. Units: ns us ms s m h d; several
// parts may follow each other ("1h30m"). A bare number is not accepted (the unit matters).
std::optional<int64_t> parse_duration_ns(std::string_view text);

// Bytes, or nullopt. Units: B, KB MB GB TB (powers of 1000), KiB MiB GiB TiB (powers of 1024);
// a bare number means bytes.
std::optional<uint64_t> parse_bytes(std::string_view text);

std::string format_duration_ns(int64_t ns);  // "1h2m3s", "250ms"
std::string format_bytes(uint64_t bytes);    // "1.5 MiB"
// "2026-11-21T10:47:00.123Z", or with `compact` "20261121T104700Z" (safe in file names).
std::string format_time_ns(int64_t ns_since_epoch, bool compact = false);

}  // namespace outpost
