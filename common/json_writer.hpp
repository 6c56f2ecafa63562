#pragma once
// JsonWriter: builds compact JSON text for machine-readable command output (`--json`).
// Commas are managed for the caller; strings are escaped (control characters as \u00XX).
//
// Thread-safety: one writer per thread.

#include <cstdint>
#include <cstdio>
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
  JsonWriter& value(int64_t v) { return raw(std::to_string(v)); }
  JsonWriter& value(uint64_t v) { return raw(std::to_string(v)); }
  JsonWriter& value(int32_t v) { return raw(std::to_string(v)); }
  JsonWriter& value(uint32_t v) { return raw(std::to_string(v)); }
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
  JsonWriter& open(char c) {
    comma();
    out_->push_back(c);
    first_.push_back(true);
    return *this;
  }
  JsonWriter& close(char c) {
    out_->push_back(c);
    first_.pop_back();
    return *this;
  }
  void comma() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (!first_.empty()) {
      if (!first_.back()) out_->push_back(',');
      first_.back() = false;
    }
  }
  void quote(std::string_view s) {
    out_->push_back('"');
    // Runs of characters that need no escape are appended whole (the common case).
    size_t run = 0;
    for (size_t i = 0; i < s.size(); ++i) {
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
    out_->append(s.data() + run, s.size() - run);
    out_->push_back('"');
  }

  std::string own_;
  std::string* out_ = &own_;
  std::vector<bool> first_;
  bool after_key_ = false;
};

}  // namespace outpost
