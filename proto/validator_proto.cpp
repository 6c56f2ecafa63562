// A pixel or sensor payload's protobuf bytes checked against its contract's message, field
// by field (validator_rules.hpp).
#include "common/utf8.hpp"
#include "proto/field_reader.hpp"
#include "proto/validator_rules.hpp"
#include "proto/varint.hpp"

namespace outpost::proto::rules {
namespace {

class ProtoCheck {
 public:
  ProtoCheck(const Contract& c, std::string_view key) : c_(c), key_(key) {}

  bool message(const MessageRules& m, std::string_view bytes, std::string* out, int depth) {
    if (depth > kMaxDepth) return fail("too_deep", "nested deeper than 64 levels");
    FieldReader r(bytes);
    Field f;
    size_t start = 0;
    while (r.next(f)) {
      const size_t end = r.position();
      auto copy = [&] {
        if (out != nullptr) out->append(bytes.substr(start, end - start));
      };
      const FieldRule* rule = m.number(f.number);
      if (rule == nullptr) {
        if (!c_.keep_unknown) {
          return fail("unknown_field",
                      "no field number " + std::to_string(f.number) + " in " + m.d->full_name());
        }
        copy();
        start = end;
        continue;
      }
      path_.push(rule->name, -1);
      const uint8_t expected = wire_type_of(rule->type);
      const bool packed =
          rule->repeated && f.type == kLengthDelimited && expected != kLengthDelimited;
      if (f.type != expected && !packed) {
        return fail("wrong_type", std::string("expected ") + type_name(rule->type) +
                                      " (wire type " + std::to_string(expected) +
                                      "), got wire type " + std::to_string(f.type));
      }
      if (rule->type == FD::TYPE_STRING && !utf8::valid(f.bytes))
        return fail("wrong_type", "a string is not valid UTF-8");
      if (rule->type == FD::TYPE_MESSAGE) {
        const bool nested_changes = out != nullptr && rule->message->has_sensitive;
        if (rule->message->well_known) {
          copy();
        } else if (nested_changes) {
          std::string inner;
          if (!message(*rule->message, f.bytes, &inner, depth + 1)) return false;
          put_varint(*out, (uint64_t{f.number} << 3) | kLengthDelimited);
          put_varint(*out, inner.size());
          out->append(inner);
        } else {
          if (!message(*rule->message, f.bytes, nullptr, depth + 1)) return false;
          copy();
        }
      } else if (out == nullptr && rule->action != Action::none) {
        if (would_change(rule->action, f.bytes)) saw_sensitive_ = true;
        copy();
      } else if (out != nullptr && rule->action != Action::none) {
        if (rule->action == Action::drop) changed_ = true;
        if (rule->action != Action::drop) {
          const std::string v = apply(rule->action, f.bytes, key_);
          if (v != f.bytes) changed_ = true;  // an IP the source truncated already stays
          put_varint(*out, (uint64_t{f.number} << 3) | kLengthDelimited);
          put_varint(*out, v.size());
          out->append(v);
        }
      } else {
        copy();
      }
      path_.pop();
      start = end;
    }
    if (r.error() != nullptr) return fail("wrong_type", r.error());
    return true;
  }
  const Fail& failure() const { return fail_; }
  bool changed() const { return changed_; }
  bool saw_sensitive() const { return saw_sensitive_; }

 private:
  bool fail(const char* code, std::string what) {
    fail_ = Fail{code, path_.str() + ": " + std::move(what)};
    return false;
  }
  const Contract& c_;
  std::string_view key_;
  PathStack path_;
  Fail fail_{nullptr, {}};
  bool changed_ = false;
  bool saw_sensitive_ = false;  // pass without `out`: an action would change a value
};

}  // namespace

bool check_proto(std::string_view bytes, const Contract& c, std::string_view key, std::string* out,
                 CheckResult& r) {
  ProtoCheck check(c, key);
  const bool ok = check.message(*c.rules, bytes, out, 0);
  r.fail = check.failure();
  r.changed = check.changed();
  r.saw_sensitive = check.saw_sensitive();
  return ok;
}

}  // namespace outpost::proto::rules
