#pragma once
// JsonWriter: builds compact JSON text for machine-readable command output (`--json`).
// Commas are managed for the caller; strings are escaped (control characters as \u00XX).
//
// Thread-safety: one writer per thread.

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace outpost {

class JsonWriter {
 public:
  JsonWriter() = default;
  // Appends to `target` instead of an internal string (no copy for callers that batch).
  explicit JsonWriter(std::string& target) : out_(&target) {}
  JsonWriter(const JsonWriter&) = delete;
  JsonWriter& operator=(const JsonWriter&) = delete;

  JsonWriter& begin_object() { return open('{'); }
  JsonWriter& end_object() { return close('}'); }
  JsonWriter& begin_array() { return open('['); }
  JsonWriter& end_array() { return close(']'); }
  JsonWriter& key(std::string_view k) {
    comma();
    quote(k);
    out_->push_back(':');
    after_key_ = true;
    return *this;
  }
  JsonWriter& value(std::string_view v) {
    comma();
    quote(v);
    return *this;
  }
  JsonWriter& value(const char* v) { return value(std::string_view(v)); }
  JsonWriter& value(int64_t v) { return number(v, false); }
  JsonWriter& value(uint64_t v) { return number(v, false); }
  JsonWriter& value(int32_t v) { return number(v, false); }
  JsonWriter& value(uint32_t v) { return number(v, false); }
  // A 64-bit integer as a JSON string, as protobuf's JSON mapping writes int64 and uint64.
  JsonWriter& quoted(int64_t v) { return number(v, true); }
  JsonWriter& quoted(uint64_t v) { return number(v, true); }
  JsonWriter& value(bool v) { return raw(v ? "true" : "false"); }
  JsonWriter& null() { return raw("null"); }
  // Inserts text that is already JSON.
  JsonWriter& raw(std::string_view json) {
    comma();
    out_->append(json);
    return *this;
  }
  const std::string& str() const { return *out_; }

 private:
  template <typename Int>
  JsonWriter& number(Int v, bool in_quotes) {
    comma();
    char buf[24];
    const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
    if (in_quotes) out_->push_back('"');
    out_->append(buf, end);
    if (in_quotes) out_->push_back('"');
    return *this;
  }
  // Whether the innermost open object or array has no member yet: a flag per level for the
  // first 64 levels (no allocation per writer; the gateway makes one per event), a vector
  // beyond.
  char& first_at_top() { return depth_ <= 64 ? first_[depth_ - 1] : deep_first_[depth_ - 65]; }
  JsonWriter& open(char c) {
    comma();
    out_->push_back(c);
    ++depth_;
    if (depth_ > 64) deep_first_.push_back(true);
    first_at_top() = true;
    return *this;
  }
  JsonWriter& close(char c) {
    out_->push_back(c);
    if (depth_ > 64) deep_first_.pop_back();
    if (depth_ > 0) --depth_;
    return *this;
  }
  void comma() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (depth_ > 0) {
      char& first = first_at_top();
      if (!first) out_->push_back(',');
      first = false;
    }
  }
  // True when one of the 8 bytes of `w` is below 0x20, '"' or '\\' (it may then also report
  // a byte at or above 0x80 that is not: those are checked one by one).
  static bool may_need_escape(uint64_t w) {
    constexpr uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    auto has_zero = [&](uint64_t x) { return ((x - ones) & ~x & highs) != 0; };
    return ((w - ones * 0x20) & ~w & highs) != 0 || has_zero(w ^ (ones * '"')) ||
           has_zero(w ^ (ones * '\\'));
  }
  void quote(std::string_view s) {
    out_->push_back('"');
    // Runs of characters that need no escape are appended whole (the common case), found
    // eight bytes at a time.
    size_t run = 0;
    size_t i = 0;
    while (i < s.size()) {
      if (s.size() - i >= 8) {
        uint64_t w;
        std::memcpy(&w, s.data() + i, 8);
        if (!may_need_escape(w)) {
          i += 8;
          continue;
        }
      }
      const size_t stop = std::min(s.size(), i + 8);
      for (; i < stop; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        out_->append(s.data() + run, i - run);
        run = i + 1;
        switch (c) {
          case '"':
            *out_ += "\\\"";
            break;
          case '\\':
            *out_ += "\\\\";
            break;
          case '\n':
            *out_ += "\\n";
            break;
          case '\t':
            *out_ += "\\t";
            break;
          case '\r':
            *out_ += "\\r";
            break;
          default: {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            *out_ += buf;
          }
        }
      }
    }
    out_->append(s.data() + run, s.size() - run);
    out_->push_back('"');
  }

  std::string own_;
  std::string* out_ = &own_;
  char first_[64] = {};
  std::vector<char> deep_first_;  // levels below the 64th
  size_t depth_ = 0;
  bool after_key_ = false;
};

}  // namespace outpost
