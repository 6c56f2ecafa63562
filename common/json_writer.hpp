#pragma once
// JsonWriter: builds compact JSON text for machine-readable command output (`--json`) and for
// the gateway's NDJSON files, where it runs for every event: each call appends its text to
// the target string at once (the separator, quotes and colon included) rather than character
// by character. Commas are managed for the caller; strings are escaped (control characters
// as \u00XX).
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
    quote(k, separator(), ':');
    after_key_ = true;
    return *this;
  }
  // A key that needs no escaping, such as a literal field name: appended without scanning it.
  JsonWriter& known_key(std::string_view k) {
    const char sep = separator();
    char* p = grow((sep ? 1 : 0) + k.size() + 3);
    if (sep) *p++ = sep;
    *p++ = '"';
    std::memcpy(p, k.data(), k.size());
    p += k.size();
    *p++ = '"';
    *p = ':';
    after_key_ = true;
    return *this;
  }
  JsonWriter& value(std::string_view v) {
    quote(v, separator(), 0);
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
    if (const char sep = separator()) out_->append(1, sep);
    out_->append(json);
    return *this;
  }
  const std::string& str() const { return *out_; }

 private:
  // Appends `n` bytes and returns where to write them.
  char* grow(size_t n) {
    const size_t at = out_->size();
    out_->resize(at + n);
    return out_->data() + at;
  }
  template <typename Int>
  JsonWriter& number(Int v, bool in_quotes) {
    char buf[32];
    char* p = buf;
    if (const char sep = separator()) *p++ = sep;
    if (in_quotes) *p++ = '"';
    p = std::to_chars(p, buf + sizeof buf - 1, v).ptr;
    if (in_quotes) *p++ = '"';
    out_->append(buf, static_cast<size_t>(p - buf));
    return *this;
  }
  // Whether the innermost open object or array has no member yet: a flag per level for the
  // first 64 levels (no allocation per writer; the gateway makes one per event), a vector
  // beyond.
  char& first_at_top() { return depth_ <= 64 ? first_[depth_ - 1] : deep_first_[depth_ - 65]; }
  JsonWriter& open(char c) {
    const char sep = separator();
    char* p = grow(sep ? 2 : 1);
    if (sep) *p++ = sep;
    *p = c;
    ++depth_;
    if (depth_ > 64) deep_first_.push_back(true);
    first_at_top() = true;
    return *this;
  }
  JsonWriter& close(char c) {
    out_->append(1, c);
    if (depth_ > 64) deep_first_.pop_back();
    if (depth_ > 0) --depth_;
    return *this;
  }
  // The separator the next value needs: ',' after a sibling, none first or after a key. Marks
  // the level as no longer empty.
  char separator() {
    if (after_key_) {
      after_key_ = false;
      return 0;
    }
    if (depth_ == 0) return 0;
    char& first = first_at_top();
    const bool was_first = first;
    first = false;
    return was_first ? 0 : ',';
  }
  static bool needs_escape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }
  // True when one of the 8 bytes of `w` is below 0x20, '"' or '\\' (it may then also report
  // a byte at or above 0x80 that is not: those are checked one by one).
  static bool may_need_escape(uint64_t w) {
    constexpr uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    auto has_zero = [&](uint64_t x) { return ((x - ones) & ~x & highs) != 0; };
    return ((w - ones * 0x20) & ~w & highs) != 0 || has_zero(w ^ (ones * '"')) ||
           has_zero(w ^ (ones * '\\'));
  }
  // The index of the first byte that needs an escape, or s.size(): eight bytes at a time.
  static size_t first_escape(std::string_view s) {
    size_t i = 0;
    for (; s.size() - i >= 8; i += 8) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if (may_need_escape(w)) break;
    }
    for (; i < s.size(); ++i) {
      if (needs_escape(static_cast<unsigned char>(s[i]))) return i;
    }
    return s.size();
  }
  // Appends `sep` (when not 0), the quoted string, and `suffix` (when not 0).
  void quote(std::string_view s, char sep, char suffix) {
    size_t escape_at = first_escape(s);
    if (escape_at == s.size()) {  // the common case: one append of everything
      char* p = grow((sep ? 1 : 0) + s.size() + 2 + (suffix ? 1 : 0));
      if (sep) *p++ = sep;
      *p++ = '"';
      std::memcpy(p, s.data(), s.size());
      p += s.size();
      *p++ = '"';
      if (suffix) *p = suffix;
      return;
    }
    if (sep) out_->append(1, sep);
    out_->append(1, '"');
    size_t run = 0;  // the start of the bytes not yet appended
    while (escape_at < s.size()) {
      out_->append(s.data() + run, escape_at - run);
      const auto c = static_cast<unsigned char>(s[escape_at]);
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
      run = escape_at + 1;
      escape_at = run + first_escape(s.substr(run));
    }
    out_->append(s.data() + run, s.size() - run);
    out_->append(1, '"');
    if (suffix) out_->append(1, suffix);
  }

  std::string own_;
  std::string* out_ = &own_;
  char first_[64] = {};
  std::vector<char> deep_first_;  // levels below the 64th
  size_t depth_ = 0;
  bool after_key_ = false;
};

}  // namespace outpost
