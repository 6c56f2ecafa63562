#include "common/json/json_reader.hpp"

#include <cctype>
#include <cstdint>

#include "common/errc.hpp"
#include "common/utf8.hpp"

namespace outpost::json {
namespace {

Error bad(std::string message) { return make_error(common_errc::bad_input, std::move(message)); }

// A minimal scanner over one JSON object: finds a top-level member by key without decoding
// anything else, so that a `json` payload can be taken out byte for byte.
class Scanner {
 public:
  explicit Scanner(std::string_view s) : s_(s) {}

  using Member = MemberSpan;

  // nullopt with ok()==true when the key is absent; ok()==false when `s` is not an object.
  std::optional<Member> find(std::string_view key) {
    std::optional<Member> found;
    skip_ws();
    if (!eat('{')) return fail();
    skip_ws();
    if (eat('}')) return end_of_input() ? found : fail();
    while (true) {
      skip_ws();
      size_t begin = pos_;
      if (peek() != '"') return fail();
      size_t key_begin = pos_ + 1;
      if (!skip_string()) return fail();
      std::string_view k = s_.substr(key_begin, pos_ - 1 - key_begin);
      skip_ws();
      if (!eat(':')) return fail();
      skip_ws();
      size_t value_begin = pos_;
      if (!skip_value()) return fail();
      if (k == key) {
        if (found) return fail();  // the same key twice
        found = Member{begin, pos_, value_begin, pos_};
      }
      skip_ws();
      if (eat(',')) continue;
      if (eat('}')) break;
      return fail();
    }
    return end_of_input() ? found : fail();
  }
  bool ok() const { return ok_; }

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool eat(char c) {
    if (peek() != c || pos_ >= s_.size()) return false;
    ++pos_;
    return true;
  }
  void skip_ws() {
    while (pos_ < s_.size() && is_ws(s_[pos_])) ++pos_;
  }
  bool end_of_input() {
    skip_ws();
    return pos_ == s_.size();
  }
  std::nullopt_t fail() {
    ok_ = false;
    return std::nullopt;
  }
  bool skip_string() {  // at '"'
    ++pos_;
    while (pos_ < s_.size()) {
      char c = s_[pos_++];
      if (c == '\\') {
        if (pos_ >= s_.size()) return false;
        ++pos_;
      } else if (c == '"') {
        return true;
      }
    }
    return false;
  }
  bool skip_value() {
    char c = peek();
    if (c == '"') return skip_string();
    if (c == '{' || c == '[') {
      int depth = 0;
      while (pos_ < s_.size()) {
        char d = s_[pos_];
        if (d == '"') {
          if (!skip_string()) return false;
          continue;
        }
        ++pos_;
        if (d == '{' || d == '[') ++depth;
        if (d == '}' || d == ']') {
          if (--depth == 0) return true;
        }
      }
      return false;
    }
    size_t start = pos_;
    while (pos_ < s_.size() && !is_ws(s_[pos_]) && s_[pos_] != ',' && s_[pos_] != '}' &&
           s_[pos_] != ']') {
      ++pos_;
    }
    return pos_ > start;
  }

  std::string_view s_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// A strict RFC 8259 check of one JSON value (with UTF-8 validation and a depth limit), fast
// enough for the gateway's hot path: it decides whether a `json` payload is written inline.
class JsonCheck {
 public:
  explicit JsonCheck(std::string_view s) : s_(s) {}
  bool document() {
    ws();
    if (!value(0)) return false;
    ws();
    return i_ == s_.size();
  }

 private:
  static constexpr int kMaxDepth = 128;
  bool value(int depth) {
    if (i_ >= s_.size() || depth > kMaxDepth) return false;
    switch (s_[i_]) {
      case '{':
        return object(depth);
      case '[':
        return array(depth);
      case '"':
        return string();
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }
  bool object(int depth) {
    ++i_;
    ws();
    if (eat('}')) return true;
    while (true) {
      ws();
      if (i_ >= s_.size() || s_[i_] != '"' || !string()) return false;
      ws();
      if (!eat(':')) return false;
      ws();
      if (!value(depth + 1)) return false;
      ws();
      if (eat('}')) return true;
      if (!eat(',')) return false;
    }
  }
  bool array(int depth) {
    ++i_;
    ws();
    if (eat(']')) return true;
    while (true) {
      ws();
      if (!value(depth + 1)) return false;
      ws();
      if (eat(']')) return true;
      if (!eat(',')) return false;
    }
  }
  bool string() {
    ++i_;
    while (i_ < s_.size()) {
      auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        if (++i_ >= s_.size()) return false;
        char e = s_[i_++];
        if (e == 'u') {
          for (int k = 0; k < 4; ++k, ++i_) {
            if (i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_]))) return false;
          }
        } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
          return false;
        }
        continue;
      }
      if (c < 0x80) {
        ++i_;
        continue;
      }
      const size_t n = utf8::sequence_length(s_.substr(i_));
      if (n == 0) return false;
      i_ += n;
    }
    return false;
  }
  bool number() {
    eat('-');
    if (eat('0')) {
    } else if (!digits()) {
      return false;
    }
    if (eat('.') && !digits()) return false;
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (!eat('+')) eat('-');
      if (!digits()) return false;
    }
    return true;
  }
  bool digits() {
    size_t start = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    return i_ > start;
  }
  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void ws() {
    while (i_ < s_.size() && is_ws(s_[i_])) ++i_;
  }
  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace

std::optional<MemberSpan> find_member(std::string_view object, std::string_view key,
                                      bool* is_object) {
  Scanner scanner(object);
  auto member = scanner.find(key);
  if (is_object != nullptr) *is_object = scanner.ok();
  return member;
}

bool valid_json_value(std::string_view text) { return JsonCheck(text).document(); }

bool json_object_or_array(std::string_view raw) {
  size_t i = 0;
  while (i < raw.size() && is_ws(raw[i])) ++i;
  return i < raw.size() && (raw[i] == '{' || raw[i] == '[') && valid_json_value(raw);
}

Result<std::vector<std::string_view>> split_json_events(std::string_view body, size_t max_events) {
  size_t i = 0;
  while (i < body.size() && is_ws(body[i])) ++i;
  if (i == body.size()) return bad("the body is empty: expected a JSON object or an array of them");
  std::vector<std::string_view> out;
  auto object_at = [&](size_t at, size_t index) -> Result<size_t> {
    if (at >= body.size() || body[at] != '{') {
      return bad(index == SIZE_MAX ? std::string("the body is not a JSON object or array")
                                   : "element " + std::to_string(index) + " is not a JSON object");
    }
    // The object's extent: strings skipped, brackets counted; then checked strictly.
    size_t depth = 0, j = at;
    bool in_string = false;
    for (; j < body.size(); ++j) {
      char c = body[j];
      if (in_string) {
        if (c == '\\') {
          ++j;
        } else if (c == '"') {
          in_string = false;
        }
      } else if (c == '"') {
        in_string = true;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        break;
      }
    }
    if (j >= body.size()) return bad("the JSON ends before its object is closed");
    std::string_view object = body.substr(at, j + 1 - at);
    if (!valid_json_value(object)) {
      const std::string what =
          index == SIZE_MAX ? std::string("the body") : "element " + std::to_string(index);
      if (!utf8::valid(object)) return bad(what + " is not valid UTF-8 (JSON text must be UTF-8)");
      return bad(what + " is not valid JSON");
    }
    out.push_back(object);
    return j + 1;
  };
  auto skip_ws = [&](size_t at) {
    while (at < body.size() && is_ws(body[at])) ++at;
    return at;
  };
  if (body[i] == '[') {
    i = skip_ws(i + 1);
    if (i < body.size() && body[i] == ']') return bad("the array is empty: nothing to record");
    for (size_t index = 0;; ++index) {
      if (index >= max_events) {
        return bad("more than " + std::to_string(max_events) + " events in one request");
      }
      auto next = object_at(i, index);
      if (!next) return next.error();
      i = skip_ws(*next);
      if (i < body.size() && body[i] == ',') {
        i = skip_ws(i + 1);
        continue;
      }
      if (i < body.size() && body[i] == ']') {
        ++i;
        break;
      }
      return bad("expected ',' or ']' after element " + std::to_string(index));
    }
  } else {
    auto next = object_at(i, SIZE_MAX);
    if (!next) return next.error();
    i = *next;
  }
  if (skip_ws(i) != body.size()) return bad("unexpected bytes after the JSON value");
  return out;
}

std::optional<std::string_view> json_member(std::string_view object, std::string_view key) {
  Scanner scanner(object);
  auto member = scanner.find(key);
  if (!member) return std::nullopt;
  return object.substr(member->value_begin, member->value_end - member->value_begin);
}

std::optional<std::string> json_string_member(std::string_view object, std::string_view key) {
  auto value = json_member(object, key);
  if (!value) return std::nullopt;
  std::string_view v = *value;
  if (v.size() < 2 || v.front() != '"') return std::nullopt;
  std::string out;
  for (size_t i = 1; i + 1 < v.size(); ++i) {
    if (v[i] != '\\') {
      out += v[i];
      continue;
    }
    char e = v[++i];
    switch (e) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'u':
        return std::nullopt;  // not decoded here: such a name is refused by the caller
      default:
        out += e;  // \" \\ \/
    }
  }
  return out;
}

}  // namespace outpost::json
