#pragma once
// The validator's internals (proto/validator.hpp), shared by its files:
//   validator.cpp        the contracts compiled into rules, the sensitive-field actions, the
//                        envelope's payload found and checked
//   validator_json.cpp   a JSON payload read against its message's rules (and rewritten)
//   validator_proto.cpp  a pixel or sensor payload's protobuf bytes against its message
// Only those files include it.
//
// Thread-safety: the rules are immutable after Validator::make; a check uses its own state.

#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace outpost::proto::rules {

namespace pb = google::protobuf;
using FD = pb::FieldDescriptor;

constexpr int kMaxDepth = 64;
constexpr std::string_view kRedacted = "[REDACTED]";

enum class Action { none, hash, redact, drop, truncate_ip };

struct MessageRules;

struct FieldRule {
  const FD* fd = nullptr;
  std::string name, json_name;
  FD::Type type = FD::TYPE_STRING;
  bool repeated = false, map = false;
  Action action = Action::none;
  const MessageRules* message = nullptr;  // a message field's, or a map's entry
  int oneof = -1;
};

struct MessageRules {
  const pb::Descriptor* d = nullptr;
  std::vector<FieldRule> fields;
  std::unordered_map<uint32_t, size_t> by_number;
  bool has_sensitive = false;  // here or in a nested message
  bool well_known = false;     // google.protobuf.*: special JSON forms, read leniently

  const FieldRule* by_json(std::string_view key) const {
    for (const FieldRule& f : fields) {
      if ((f.json_name.size() == key.size() &&
           std::memcmp(f.json_name.data(), key.data(), key.size()) == 0) ||
          (f.name.size() == key.size() &&
           std::memcmp(f.name.data(), key.data(), key.size()) == 0)) {
        return &f;
      }
    }
    return nullptr;
  }
  const FieldRule* number(uint32_t n) const {
    auto it = by_number.find(n);
    return it == by_number.end() ? nullptr : &fields[it->second];
  }
};

struct Contract {
  std::string schema, fingerprint;
  const MessageRules* rules = nullptr;
  bool keep_unknown = false;
};

// Where the check is, as "$.items[2].quantity" (built only for a message): a fixed stack, so
// that checking an event allocates nothing for it.
class PathStack {
 public:
  void push(std::string_view name, int64_t index) {
    if (depth_ < kCapacity) {
      names_[depth_] = name.data();
      sizes_[depth_] = name.size();
      indexes_[depth_] = index;
    }
    ++depth_;
  }
  void pop() { --depth_; }
  std::string str() const {
    std::string s = "$";
    for (size_t i = 0; i < std::min(depth_, kCapacity); ++i) {
      if (indexes_[i] >= 0) {
        s += "[" + std::to_string(indexes_[i]) + "]";
      } else {
        s += ".";
        s.append(names_[i], sizes_[i]);
      }
    }
    return s;
  }

 private:
  static constexpr size_t kCapacity = kMaxDepth + 8;
  // Left uninitialized: an entry is written before it is read (below depth_).
  const char* names_[kCapacity];
  size_t sizes_[kCapacity];
  int64_t indexes_[kCapacity];
  size_t depth_ = 0;
};

// What a check found: its failure (code is null while it has none), whether an action changed
// the payload, whether a member an action applies to is there (for protobuf payloads: one
// whose value an action would change).
struct Fail {
  const char* code;
  std::string what;
};
struct CheckResult {
  Fail fail{nullptr, {}};
  bool changed = false;
  bool saw_sensitive = false;
};

// "a 32-bit integer": a type as a message names it.
const char* type_name(FD::Type t);
// The wire type a field of type `t` is written with.
uint8_t wire_type_of(FD::Type t);
// A sensitive value after its action (idempotent: validator.hpp).
std::string apply(Action a, std::string_view value, std::string_view key);
// Whether apply() would change `value`, without computing a HASH.
bool would_change(Action a, std::string_view value);

// A JSON payload: one object of the contract's message, nothing after it. With `out`, the
// payload written again with the actions applied. False on a failure (in `r.fail`).
bool check_json(std::string_view text, const Contract& c, std::string_view key, std::string* out,
                CheckResult& r);
// A message's protobuf bytes against its rules; with `out`, written again likewise.
bool check_proto(std::string_view bytes, const Contract& c, std::string_view key, std::string* out,
                 CheckResult& r);

}  // namespace outpost::proto::rules
