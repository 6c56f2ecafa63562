// A JSON payload read against its contract's message by protobuf's JSON mapping (proto3),
// from the text, building nothing (validator_rules.hpp).
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "common/utf8.hpp"
#include "proto/validator_rules.hpp"

namespace outpost::proto::rules {
namespace {

// Reads a JSON text against a message's rules; with `out`, writes it again with the
// sensitive fields applied (everything else copied byte for byte).
class JsonCheck {
 public:
  JsonCheck(std::string_view text, const Contract& c, std::string_view key)
      : p_(text.data()), end_(text.data() + text.size()), c_(c), key_(key) {}

  // The whole payload: one object and nothing after it.
  bool payload(std::string* out) {
    ws();
    if (p_ == end_ || *p_ != '{') return fail("not_json", "the payload is not a JSON object");
    if (!message(*c_.rules, out, 0)) return false;
    ws();
    if (p_ != end_) return fail("not_json", "text after the JSON object");
    return true;
  }
  const Fail& failure() const { return fail_; }
  bool changed() const { return changed_; }
  bool saw_sensitive() const { return saw_sensitive_; }
  std::string path() const { return path_.str(); }

 private:
  bool fail(const char* code, std::string what) {
    if (fail_.code == nullptr) fail_ = Fail{code, path() + ": " + std::move(what)};
    return false;
  }
  bool syntax(const char* what) { return fail("not_json", what); }
  void ws() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool eat(char c) {
    ws();
    if (p_ != end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }

  // A string at p_ (its quote): its raw inside (escapes undecoded) and whether it has any.
  bool string(std::string_view& raw, bool& escaped) {
    if (p_ == end_ || *p_ != '"') return syntax("a string was expected");
    const char* start = ++p_;
    escaped = false;
    while (true) {
      // Eight plain ASCII characters at a time: none a quote, a backslash, a control
      // character or a byte of a multi-byte sequence (SWAR: a byte's high bit is set in the
      // mask where one is).
      while (end_ - p_ >= 8) {
        uint64_t v;
        std::memcpy(&v, p_, 8);
        constexpr uint64_t kOnes = 0x0101010101010101ULL, kHigh = 0x8080808080808080ULL;
        const uint64_t quote = v ^ (kOnes * '"'), slash = v ^ (kOnes * '\\');
        const uint64_t special =
            ((quote - kOnes) & ~quote) | ((slash - kOnes) & ~slash) | ((v - kOnes * 0x20) & ~v) | v;
        if ((special & kHigh) != 0) {
          // The lowest flagged byte is exact (a borrow only runs upward): go to it.
          p_ += __builtin_ctzll(special & kHigh) / 8;
          break;
        }
        p_ += 8;
      }
      if (p_ == end_) return syntax("a string is not closed");
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') break;
      if (c < 0x20) return syntax("a control character inside a string");
      if (c == '\\') {
        escaped = true;
        if (++p_ == end_) return syntax("a string is not closed");
        const char e = *p_;
        if (e == 'u') {
          // A UTF-16 surrogate must come in a pair, high then low, as protobuf's JSON parser
          // (and every consumer that reads the payload as text) requires.
          const auto unit = [&](const char* at) -> int {  // -1: not 4 hex digits
            if (end_ - at < 4) return -1;
            unsigned v = 0;
            auto [next, ec] = std::from_chars(at, at + 4, v, 16);
            return ec == std::errc() && next == at + 4 ? static_cast<int>(v) : -1;
          };
          const int u = unit(p_ + 1);
          if (u < 0)
            return syntax(end_ - p_ < 5 ? "a \\u escape is cut short" : "a bad \\u escape");
          p_ += 5;
          if (u >= 0xdc00 && u < 0xe000)
            return syntax("a lone UTF-16 low surrogate in a \\u escape");
          if (u >= 0xd800 && u < 0xdc00) {
            const int low = end_ - p_ >= 6 && p_[0] == '\\' && p_[1] == 'u' ? unit(p_ + 2) : -1;
            if (low < 0xdc00 || low >= 0xe000)
              return syntax("a UTF-16 high surrogate in a \\u escape without its low half");
            p_ += 6;
          }
          continue;
        }
        if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos)
          return syntax("a bad escape in a string");
        ++p_;
        continue;
      }
      if (c < 0x80) {
        ++p_;
        continue;
      }
      const size_t n = utf8::sequence_length(std::string_view(p_, static_cast<size_t>(end_ - p_)));
      if (n == 0) return syntax("a string is not valid UTF-8");
      p_ += n;
    }
    raw = std::string_view(start, static_cast<size_t>(p_ - start));
    ++p_;
    return true;
  }

  // The decoded value of a string read by string() (surrogate pairs joined: string() refuses
  // a lone surrogate; were one here, it would become U+FFFD).
  static std::string decode(std::string_view raw) {
    std::string out;
    out.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] != '\\') {
        out += raw[i];
        continue;
      }
      const char e = raw[++i];
      if (e != 'u') {
        static constexpr std::string_view from = "\"\\/bfnrt", to = "\"\\/\b\f\n\r\t";
        out += to[from.find(e)];
        continue;
      }
      auto hex4 = [&](size_t at) {
        unsigned v = 0;
        std::from_chars(raw.data() + at, raw.data() + at + 4, v, 16);
        return v;
      };
      uint32_t cp = hex4(i + 1);
      i += 4;
      if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < raw.size() + 1 && raw.substr(i + 1, 2) == "\\u") {
        const uint32_t lo = hex4(i + 3);
        if (lo >= 0xdc00 && lo < 0xe000) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          i += 6;
        }
      }
      if (cp >= 0xd800 && cp < 0xe000) cp = 0xfffd;
      if (cp < 0x80) {
        out += static_cast<char>(cp);
      } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
      } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
      } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
      }
    }
    return out;
  }

  // A number's text at p_ (JSON grammar).
  bool number(std::string_view& text) {
    const char* s = p_;
    if (p_ != end_ && *p_ == '-') ++p_;
    if (p_ == end_ || !std::isdigit(static_cast<unsigned char>(*p_))) return syntax("a bad number");
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ != end_ && std::isdigit(static_cast<unsigned char>(*p_))) ++p_;
    }
    if (p_ != end_ && *p_ == '.') {
      ++p_;
      if (p_ == end_ || !std::isdigit(static_cast<unsigned char>(*p_)))
        return syntax("a bad number");
      while (p_ != end_ && std::isdigit(static_cast<unsigned char>(*p_))) ++p_;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || !std::isdigit(static_cast<unsigned char>(*p_)))
        return syntax("a bad number");
      while (p_ != end_ && std::isdigit(static_cast<unsigned char>(*p_))) ++p_;
    }
    text = std::string_view(s, static_cast<size_t>(p_ - s));
    return true;
  }

  bool literal(std::string_view word) {
    if (static_cast<size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) {
      return syntax("a bad literal");
    }
    p_ += word.size();
    return true;
  }

  // Any JSON value (an unknown field kept, a well-known type read leniently).
  bool skip(int depth) {
    if (depth > kMaxDepth) return fail("too_deep", "nested deeper than 64 levels");
    ws();
    if (p_ == end_) return syntax("a value is missing");
    std::string_view raw;
    bool escaped;
    switch (*p_) {
      case '"':
        return string(raw, escaped);
      case '{': {
        ++p_;
        if (eat('}')) return true;
        do {
          ws();
          if (!string(raw, escaped)) return false;
          if (!eat(':')) return syntax("a ':' is missing");
          if (!skip(depth + 1)) return false;
        } while (eat(','));
        return eat('}') || syntax("a '}' is missing");
      }
      case '[': {
        ++p_;
        if (eat(']')) return true;
        do {
          if (!skip(depth + 1)) return false;
        } while (eat(','));
        return eat(']') || syntax("a ']' is missing");
      }
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number(raw);
    }
  }

  bool integer(const FieldRule& f, std::string_view text) {
    const bool is_unsigned = f.type == FD::TYPE_UINT32 || f.type == FD::TYPE_FIXED32 ||
                             f.type == FD::TYPE_UINT64 || f.type == FD::TYPE_FIXED64;
    const bool is32 = f.type == FD::TYPE_INT32 || f.type == FD::TYPE_SINT32 ||
                      f.type == FD::TYPE_SFIXED32 || f.type == FD::TYPE_UINT32 ||
                      f.type == FD::TYPE_FIXED32;
    auto range = [&] {
      return fail("out_of_range", std::string(text) + " is not " + type_name(f.type));
    };
    if (text.find_first_of(".eE") == std::string_view::npos) {
      if (is_unsigned && text == "-0") return true;  // zero, as protobuf reads it
      if (is_unsigned) {
        uint64_t v = 0;
        auto r = std::from_chars(text.data(), text.data() + text.size(), v);
        if (r.ec != std::errc() || r.ptr != text.data() + text.size()) return range();
        if (is32 && v > std::numeric_limits<uint32_t>::max()) return range();
      } else {
        int64_t v = 0;
        auto r = std::from_chars(text.data(), text.data() + text.size(), v);
        if (r.ec != std::errc() || r.ptr != text.data() + text.size()) return range();
        if (is32 &&
            (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())) {
          return range();
        }
      }
      return true;
    }
    // 1.0 and 1e3 are integers too, as protobuf reads them.
    const double d = std::strtod(std::string(text).c_str(), nullptr);
    if (!std::isfinite(d) || d != std::floor(d)) return range();
    const double lo = is_unsigned ? 0 : is32 ? -2147483648.0 : -9223372036854775808.0;
    const double hi = is32 ? (is_unsigned ? 4294967295.0 : 2147483647.0)
                           : (is_unsigned ? 18446744073709551615.0 : 9223372036854775807.0);
    if (d < lo || d > hi) return range();
    return true;
  }

  bool floating(const FieldRule& f, std::string_view text) {
    const double d = std::strtod(std::string(text).c_str(), nullptr);
    if (!std::isfinite(d)) return fail("out_of_range", std::string(text) + " is out of range");
    if (f.type == FD::TYPE_FLOAT && std::fabs(d) > std::numeric_limits<float>::max())
      return fail("out_of_range", std::string(text) + " is out of range for a float");
    return true;
  }

  static bool base64(std::string_view s) {
    size_t n = s.size();
    while (n > 0 && s[n - 1] == '=') --n;
    if (s.size() - n > 2) return false;
    for (size_t i = 0; i < n; ++i) {
      const char c = s[i];
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '-' ||
            c == '_')) {
        return false;
      }
    }
    return n % 4 != 1;
  }

  // One value of field `f` (an element, for a repeated field). `raw_string` receives a
  // string's raw inside, for the sensitive-field actions.
  bool scalar(const FieldRule& f, int depth, std::string* out, std::string_view* raw_string) {
    ws();
    if (p_ == end_) return syntax("a value is missing");
    const char c = *p_;
    auto wrong = [&](const char* got) {
      return fail("wrong_type", std::string("expected ") + type_name(f.type) + ", got " + got);
    };
    auto got = [&]() -> const char* {
      switch (c) {
        case '"':
          return "a string";
        case '{':
          return "an object";
        case '[':
          return "an array";
        case 't':
        case 'f':
          return "a boolean";
        case 'n':
          return "null";
        default:
          return "a number";
      }
    };
    std::string_view raw;
    bool escaped = false;
    switch (f.type) {
      case FD::TYPE_MESSAGE:
      case FD::TYPE_GROUP:
        if (f.message->well_known) return skip(depth);
        if (c != '{') return wrong(got());
        return message(*f.message, out, depth + 1);
      case FD::TYPE_STRING:
        if (c != '"') return wrong(got());
        if (!string(raw, escaped)) return false;
        if (raw_string != nullptr) *raw_string = raw;
        return true;
      case FD::TYPE_BYTES:
        if (c != '"') return wrong(got());
        if (!string(raw, escaped)) return false;
        if (!base64(escaped ? decode(raw) : raw)) return fail("wrong_type", "not base64");
        return true;
      case FD::TYPE_BOOL:
        if (c != 't' && c != 'f') return wrong(got());
        return literal(c == 't' ? "true" : "false");
      case FD::TYPE_ENUM:
        if (c == '"') {
          if (!string(raw, escaped)) return false;
          const std::string name = escaped ? decode(raw) : std::string(raw);
          if (f.fd->enum_type()->FindValueByName(name) == nullptr) {
            return fail("unknown_enum",
                        "\"" + name + "\" is not a value of " + f.fd->enum_type()->full_name());
          }
          return true;
        }
        if (c == '-' || std::isdigit(static_cast<unsigned char>(c))) {
          if (!number(raw)) return false;
          FieldRule as_int = f;
          as_int.type = FD::TYPE_INT32;
          return integer(as_int, raw);
        }
        return wrong(got());
      case FD::TYPE_DOUBLE:
      case FD::TYPE_FLOAT:
        if (c == '"') {
          if (!string(raw, escaped)) return false;
          if (raw == "NaN" || raw == "Infinity" || raw == "-Infinity") return true;
          if (!number_text(raw)) return wrong("a non-numeric string");
          return floating(f, raw);
        }
        if (c != '-' && !std::isdigit(static_cast<unsigned char>(c))) return wrong(got());
        return number(raw) && floating(f, raw);
      default:  // the integers
        if (c == '"') {
          if (!string(raw, escaped)) return false;
          if (!number_text(raw)) return wrong("a non-numeric string");
          // In a string protobuf takes digits only: "12", not "12.0" or "1e3".
          if (raw.find_first_of(".eE") != std::string_view::npos)
            return wrong("a string that is not an integer");
          return integer(f, raw);
        }
        if (c != '-' && !std::isdigit(static_cast<unsigned char>(c))) return wrong(got());
        return number(raw) && integer(f, raw);
    }
  }

  // Whether `text` (a string's content) is a JSON number and nothing else.
  bool number_text(std::string_view text) const {
    JsonCheck inner(text, c_, key_);
    std::string_view parsed;
    return inner.number(parsed) && inner.p_ == inner.end_;
  }

  // A map's key, as protobuf reads it from a JSON member name.
  bool map_key(const FieldRule& key, std::string_view raw, bool escaped) {
    const std::string k = escaped ? decode(raw) : std::string(raw);
    switch (key.type) {
      case FD::TYPE_STRING:
        return true;
      case FD::TYPE_BOOL:
        return k == "true" || k == "false" ? true : fail("wrong_type", "a map key is not a bool");
      default: {
        if (!number_text(k))
          return fail("wrong_type", "map key \"" + k + "\" is not " + type_name(key.type));
        return integer(key, k);
      }
    }
  }

  // Writes "key":"<action applied>" for a sensitive string value.
  void put_sensitive(std::string& out, std::string_view member_key, Action a, std::string_view raw,
                     bool first) {
    if (!first) out += ',';
    out += '"';
    out += member_key;
    out += "\":";
    put_json_string(out, apply(a, JsonCheck::decode(raw), key_));
  }
  static void put_json_string(std::string& out, std::string_view s) {
    out += '"';
    for (char ch : s) {
      if (ch == '"' || ch == '\\') {
        out += '\\';
        out += ch;
      } else if (static_cast<unsigned char>(ch) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", ch);
        out += buf;
      } else {
        out += ch;
      }
    }
    out += '"';
  }

  // A field's whole value (array, map object or one value), at p_.
  bool field_value(const FieldRule& f, int depth, std::string* out, bool first,
                   std::string_view member_key) {
    ws();
    if (p_ != end_ && *p_ == 'n') {  // null: the field's default
      if (!literal("null")) return false;
      if (out != nullptr && f.action != Action::drop) {
        if (!first) *out += ',';
        *out += '"';
        *out += member_key;
        *out += "\":null";
      }
      return true;
    }
    const bool rewrite = out != nullptr && f.action != Action::none;
    if (rewrite) changed_ = true;
    if (f.map) {
      if (p_ == end_ || *p_ != '{')
        return fail("wrong_type", "expected an object (a map), got something else");
      ++p_;
      const FieldRule& k = f.message->fields[0];
      const FieldRule& v = f.message->fields[1];
      if (!eat('}')) {
        do {
          ws();
          std::string_view raw;
          bool escaped;
          if (!string(raw, escaped)) return false;
          if (!map_key(k, raw, escaped)) return false;
          if (!eat(':')) return syntax("a ':' is missing");
          path_.push(raw, -1);
          ws();
          if (p_ != end_ && *p_ == 'n') return fail("wrong_type", "null in a map");
          if (!scalar(v, depth, nullptr, nullptr)) return false;
          path_.pop();
        } while (eat(','));
        if (!eat('}')) return syntax("a '}' is missing");
      }
      return true;
    }
    if (f.repeated) {
      if (p_ == end_ || *p_ != '[')
        return fail("wrong_type", std::string("expected an array of ") + type_name(f.type));
      ++p_;
      // Elements rewritten: sensitive strings, or messages with sensitive fields inside.
      const bool nested = out != nullptr && f.message != nullptr && f.message->has_sensitive;
      std::string rewritten;
      if (rewrite || nested) rewritten = "[";
      int64_t i = 0;
      if (!eat(']')) {
        do {
          path_.push("", i);
          ws();
          if (p_ != end_ && *p_ == 'n') return fail("wrong_type", "null in an array");
          if (i > 0 && (rewrite || nested)) rewritten += ',';
          std::string_view raw;
          if (nested) {
            if (!scalar(f, depth, &rewritten, nullptr)) return false;
          } else if (!scalar(f, depth, nullptr, rewrite ? &raw : nullptr)) {
            return false;
          }
          if (rewrite) put_json_string(rewritten, apply(f.action, JsonCheck::decode(raw), key_));
          path_.pop();
          ++i;
        } while (eat(','));
        if (!eat(']')) return syntax("a ']' is missing");
      }
      if ((rewrite || nested) && f.action != Action::drop) {
        if (!first) *out += ',';
        *out += '"';
        *out += member_key;
        *out += "\":";
        *out += rewritten + "]";
      }
      return true;
    }
    if (rewrite) {
      std::string_view raw;
      if (!scalar(f, depth, nullptr, &raw)) return false;
      if (f.action != Action::drop) put_sensitive(*out, member_key, f.action, raw, first);
      return true;
    }
    if (out != nullptr && f.message != nullptr && f.message->has_sensitive) {
      if (!first) *out += ',';
      *out += '"';
      *out += member_key;
      *out += "\":";
      return scalar(f, depth, out, nullptr);
    }
    return scalar(f, depth, nullptr, nullptr);
  }

  bool message(const MessageRules& m, std::string* out, int depth) {
    if (depth > kMaxDepth) return fail("too_deep", "nested deeper than 64 levels");
    ++p_;  // '{'
    std::vector<std::pair<int, const FieldRule*>> oneofs;
    if (out != nullptr) *out += '{';
    bool first = true;
    // A member written again as it came: its key and value, byte for byte.
    auto copy_member = [&](const char* member_start) {
      if (out == nullptr) return;
      if (!first) *out += ',';
      out->append(member_start, static_cast<size_t>(p_ - member_start));
      first = false;
    };
    if (eat('}')) {
      if (out != nullptr) *out += '}';
      return true;
    }
    do {
      ws();
      const char* member_start = p_;
      std::string_view raw;
      bool escaped;
      if (!string(raw, escaped)) return false;
      const std::string decoded = escaped ? decode(raw) : std::string();
      const std::string_view name = escaped ? std::string_view(decoded) : raw;
      if (!eat(':')) return syntax("a ':' is missing");
      const FieldRule* f = m.by_json(name);
      path_.push(name, -1);
      if (f == nullptr && depth == 0 && name == "schema") {
        // The envelope's schema as the HTTP source found it in the posted object (its
        // schema_field), kept in the payload as posted: a string, not a contract field.
        ws();
        if (p_ == end_ || *p_ != '"')
          return fail("wrong_type", "the schema member is not a string");
        if (!string(raw, escaped)) return false;
        copy_member(member_start);
        path_.pop();
        continue;
      }
      if (f == nullptr) {
        if (!c_.keep_unknown) {
          return fail("unknown_field",
                      "no field \"" + std::string(name) + "\" in " + m.d->full_name());
        }
        if (!skip(depth + 1)) return false;
        copy_member(member_start);
        path_.pop();
        continue;
      }
      // A field named twice is taken, the last value winning, as protobuf's parser does; two
      // different members of one oneof are not.
      if (f->oneof >= 0) {
        for (const auto& [o, member] : oneofs) {
          if (o == f->oneof && member != f)
            return fail("duplicate_field",
                        "two members of oneof " + m.d->oneof_decl(f->oneof)->name() + " are set");
        }
        oneofs.emplace_back(f->oneof, f);
      }
      const bool sensitive = f->action != Action::none ||
                             (f->message != nullptr && !f->map && f->message->has_sensitive);
      saw_sensitive_ = saw_sensitive_ || sensitive;
      const bool changes = out != nullptr && sensitive;
      if (changes) {
        const size_t before = out->size();
        if (!field_value(*f, depth, out, first, raw)) return false;
        if (out->size() != before) first = false;
      } else {
        if (!field_value(*f, depth, nullptr, first, raw)) return false;
        copy_member(member_start);
      }
      path_.pop();
    } while (eat(','));
    if (!eat('}')) return syntax("a '}' or ',' is missing");
    if (out != nullptr) *out += '}';
    return true;
  }

  const char* p_;
  const char* end_;
  const Contract& c_;
  std::string_view key_;
  PathStack path_;
  Fail fail_{nullptr, {}};
  bool changed_ = false;        // an action was applied: the rewritten text differs
  bool saw_sensitive_ = false;  // a member that an action applies to (here or nested) is set
};

}  // namespace

bool check_json(std::string_view text, const Contract& c, std::string_view key, std::string* out,
                CheckResult& r) {
  JsonCheck check(text, c, key);
  const bool ok = check.payload(out);
  r.fail = check.failure();
  r.changed = check.changed();
  r.saw_sensitive = check.saw_sensitive();
  return ok;
}

}  // namespace outpost::proto::rules
