#pragma once
// Protobuf's base-128 varints and wire types, for the code that reads and writes
// outpost.v1.Event bytes by hand (event_codec.cpp, event_view.cpp) and the batch payload's
// length prefixes (uplink/frame).
//
// Thread-safety: pure functions.

#include <cstddef>
#include <cstdint>
#include <string>

namespace outpost::proto {

enum WireType : uint8_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

inline void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

inline size_t varint_size(uint64_t v) {
  size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

// Reads a varint of at most 10 bytes at `p`, advancing it; false if it is cut short by `end`
// or longer (protobuf's rule: bits beyond 64 are dropped).
inline bool read_varint(const uint8_t*& p, const uint8_t* end, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 70 && p != end; shift += 7) {
    const uint8_t b = *p++;
    v |= static_cast<uint64_t>(b & 0x7f) << (shift < 64 ? shift : 63);
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace outpost::proto
