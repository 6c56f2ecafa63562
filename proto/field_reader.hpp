#pragma once
// Protobuf's wire format read one field at a time, without a descriptor: the gateway's and the
// validator's readers of event bytes (event_view.cpp, validator.cpp).
//
// Thread-safety: a FieldReader belongs to one thread.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "proto/varint.hpp"

namespace outpost::proto {

struct Field {
  uint32_t number = 0;
  uint8_t type = 0;
  uint64_t value = 0;      // varint, fixed32, fixed64
  std::string_view bytes;  // length-delimited
};

// One field at a time. next() is false at the end of the message and
// when the bytes are malformed; error() then says which.
class FieldReader {
 public:
  explicit FieldReader(std::string_view s)
      : begin_(reinterpret_cast<const uint8_t*>(s.data())), p_(begin_), end_(p_ + s.size()) {}

  // The common case inline: a one-byte tag (fields 1..15) with a one-byte varint or length.
  __attribute__((always_inline)) bool next(Field& f) {
    if (p_ == end_) return false;
    if (end_ - p_ >= 2 && p_[0] < 0x80 && p_[1] < 0x80 && (p_[0] >> 3) != 0) {
      const uint8_t tag = p_[0], b = p_[1];
      if ((tag & 7) == kVarint) {
        f.number = tag >> 3;
        f.type = kVarint;
        f.value = b;
        p_ += 2;
        return true;
      }
      if ((tag & 7) == kLengthDelimited && b <= end_ - p_ - 2) {
        f.number = tag >> 3;
        f.type = kLengthDelimited;
        f.bytes = std::string_view(reinterpret_cast<const char*>(p_ + 2), b);
        p_ += 2 + b;
        return true;
      }
    }
    return next_slow(f);
  }
  const char* error() const { return error_; }
  // How far into the message the reader is: after next(), the end of the field it returned.
  size_t position() const { return static_cast<size_t>(p_ - begin_); }

 private:
  __attribute__((noinline)) bool next_slow(Field& f) {
    // A tag is a varint of at most 5 bytes, of which protobuf keeps the low 32 bits.
    uint32_t tag = 0;
    for (int shift = 0;; shift += 7) {
      if (shift == 35 || p_ == end_) return fail("a field's tag is cut short or too long");
      const uint8_t b = *p_++;
      tag |= static_cast<uint32_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) break;
    }
    if ((tag >> 3) == 0) return fail("field number 0");
    f.number = tag >> 3;
    f.type = static_cast<uint8_t>(tag & 7);
    switch (f.type) {
      case kVarint:
        if (!varint(f.value)) return fail("a varint is cut short or longer than 10 bytes");
        return true;
      case kFixed64:
        return fixed(f, 8);
      case kFixed32:
        return fixed(f, 4);
      case kLengthDelimited: {
        uint64_t n = 0;
        if (!varint(n)) return fail("a length is cut short");
        if (n > static_cast<uint64_t>(end_ - p_)) return fail("a length runs past the end");
        f.bytes = std::string_view(reinterpret_cast<const char*>(p_), static_cast<size_t>(n));
        p_ += n;
        return true;
      }
      default:
        return fail(f.type == 3 || f.type == 4 ? "groups (wire types 3, 4) are not accepted"
                                               : "wire type 6 or 7 does not exist");
    }
  }
  bool varint(uint64_t& v) { return read_varint(p_, end_, v); }
  bool fixed(Field& f, size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return fail("a fixed-size value is cut short");
    f.value = 0;
    std::memcpy(&f.value, p_, n);  // little-endian, as the wire
    p_ += n;
    return true;
  }
  bool fail(const char* why) {
    error_ = why;
    p_ = end_;
    return false;
  }

  const uint8_t* begin_;
  const uint8_t* p_;
  const uint8_t* end_;
  const char* error_ = nullptr;
};

}  // namespace outpost::proto
