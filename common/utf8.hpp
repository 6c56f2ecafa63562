#pragma once
// UTF-8 as protobuf accepts it (strings that fail this make a message fail to parse): no
// overlong forms, no surrogates, nothing above U+10FFFF. One rule for every parser of outside
// text (JSON payloads, pixel query strings, MQTT topics).
//
// Thread-safety: pure functions.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace outpost::utf8 {

// The length of the well-formed sequence starting at s[0], or 0 if none starts there.
inline size_t sequence_length(std::string_view s) {
  if (s.empty()) return 0;
  const auto c = static_cast<unsigned char>(s[0]);
  const size_t len = c < 0x80           ? 1
                     : (c >> 5) == 0x6  ? 2
                     : (c >> 4) == 0xe  ? 3
                     : (c >> 3) == 0x1e ? 4
                                        : 0;
  if (len == 0 || len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((static_cast<unsigned char>(s[k]) & 0xc0) != 0x80) return 0;
  }
  if (len > 1) {
    const auto c1 = static_cast<unsigned char>(s[1]);
    if ((len == 2 && c < 0xc2) || (c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0) ||
        (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 >= 0x90) || c > 0xf4) {
      return 0;
    }
  }
  return len;
}

inline bool valid(std::string_view s) {
  size_t i = 0;
  for (; s.size() - i >= 8; i += 8) {  // ASCII, the common case, eight bytes at a time
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    if ((w & 0x8080808080808080ULL) != 0) break;
  }
  while (i < s.size()) {
    const size_t n = sequence_length(s.substr(i));
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// Every byte that does not start a well-formed sequence becomes '?'.
inline std::string repaired(std::string s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = sequence_length(std::string_view(s).substr(i));
    if (n == 0) {
      s[i++] = '?';
    } else {
      i += n;
    }
  }
  return s;
}

}  // namespace outpost::utf8
