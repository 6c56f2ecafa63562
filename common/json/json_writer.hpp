#pragma once
// JsonWriter: builds compact JSON text for machine-readable command output (`--json`) and for
// the gateway's NDJSON files, where it runs for every event: text is staged in a buffer on
// the writer (each token, separator and quotes included, one copy) and appended to the target
// string when the buffer fills, at str() and when the writer is destroyed; appending every
// token to the string cost a library call and a zero-fill each. Commas are managed for the
// caller; strings are escaped (control characters as \u00XX).
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
  // `target` holds the text once the writer is destroyed (or after str()).
  explicit JsonWriter(std::string& target) : out_(&target) {}
  ~JsonWriter() { flush(); }
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
    copy(p, k);
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
  // A string known to need no escaping (hex digits, a number's text): quoted, not scanned.
  JsonWriter& plain(std::string_view v) {
    const char sep = separator();
    char* p = grow((sep ? 1 : 0) + v.size() + 2);
    if (sep) *p++ = sep;
    *p++ = '"';
    copy(p, v);
    p[v.size()] = '"';
    return *this;
  }
  // Inserts text that is already JSON.
  JsonWriter& raw(std::string_view json) {
    if (const char sep = separator()) *grow(1) = sep;
    append(json);
    return *this;
  }
  const std::string& str() const {
    flush();
    return *out_;
  }

 private:
  static constexpr size_t kStage = 512;
  // Reserves `n` bytes (at most kStage) at the end of the text; returns where to write them.
  char* grow(size_t n) {
    if (staged_ + n > kStage) flush();
    char* p = stage_ + staged_;
    staged_ += n;
    return p;
  }
  void append(std::string_view s) {
    if (s.size() <= kStage) {
      copy(grow(s.size()), s);
    } else {
      flush();
      out_->append(s);
    }
  }
  // memcpy of the view's bytes; an empty view may have no data pointer at all.
  static void copy(char* to, std::string_view s) {
    if (!s.empty()) std::memcpy(to, s.data(), s.size());
  }
  void flush() const {
    if (staged_ == 0) return;
    out_->append(stage_, staged_);
    staged_ = 0;
  }
  template <typename Int>
  JsonWriter& number(Int v, bool in_quotes) {
    char buf[32];
    char* p = buf;
    if (const char sep = separator()) *p++ = sep;
    if (in_quotes) *p++ = '"';
    p = std::to_chars(p, buf + sizeof buf - 1, v).ptr;
    if (in_quotes) *p++ = '"';
    append(std::string_view(buf, static_cast<size_t>(p - buf)));
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
    *grow(1) = c;
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
    const size_t whole = (sep ? 1 : 0) + s.size() + 2 + (suffix ? 1 : 0);
    if (escape_at == s.size() && whole <= kStage) {  // the common case: one copy of it all
      char* p = grow(whole);
      if (sep) *p++ = sep;
      *p++ = '"';
      copy(p, s);
      p += s.size();
      *p++ = '"';
      if (suffix) *p = suffix;
      return;
    }
    if (sep) *grow(1) = sep;
    *grow(1) = '"';
    size_t run = 0;  // the start of the bytes not yet appended
    while (escape_at < s.size()) {
      append(s.substr(run, escape_at - run));
      const auto c = static_cast<unsigned char>(s[escape_at]);
      switch (c) {
        case '"':
          append("\\\"");
          break;
        case '\\':
          append("\\\\");
          break;
        case '\n':
          append("\\n");
          break;
        case '\t':
          append("\\t");
          break;
        case '\r':
          append("\\r");
          break;
        default: {
          char buf[8];
          const int n = std::snprintf(buf, sizeof buf, "\\u%04x", c);
          append(std::string_view(buf, static_cast<size_t>(n)));
        }
      }
      run = escape_at + 1;
      escape_at = run + first_escape(s.substr(run));
    }
    append(s.substr(run));
    *grow(1) = '"';
    if (suffix) *grow(1) = suffix;
  }

  std::string own_;
  std::string* out_ = &own_;
  mutable char stage_[kStage];  // text not yet in *out_ (no initializer: written before read)
  mutable size_t staged_ = 0;
  char first_[64] = {};
  std::vector<char> deep_first_;  // levels below the 64th
  size_t depth_ = 0;
  bool after_key_ = false;
};

}  // namespace outpost
