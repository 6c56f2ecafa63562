#include "proto/validator.hpp"

#include <arpa/inet.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <array>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <unordered_map>
#include <vector>

#include "common/errc.hpp"
#include "common/tls/digest.hpp"
#include "common/utf8.hpp"
#include "outpost/v1/contract_options.pb.h"
#include "proto/event_view.hpp"
#include "proto/validator_rules.hpp"
#include "proto/varint.hpp"

namespace outpost::proto {
namespace rules {

const char* type_name(FD::Type t) {
  switch (t) {
    case FD::TYPE_DOUBLE:
      return "a double";
    case FD::TYPE_FLOAT:
      return "a float";
    case FD::TYPE_INT64:
    case FD::TYPE_SINT64:
    case FD::TYPE_SFIXED64:
      return "a 64-bit integer";
    case FD::TYPE_UINT64:
    case FD::TYPE_FIXED64:
      return "an unsigned 64-bit integer";
    case FD::TYPE_INT32:
    case FD::TYPE_SINT32:
    case FD::TYPE_SFIXED32:
      return "a 32-bit integer";
    case FD::TYPE_UINT32:
    case FD::TYPE_FIXED32:
      return "an unsigned 32-bit integer";
    case FD::TYPE_BOOL:
      return "true or false";
    case FD::TYPE_STRING:
      return "a string";
    case FD::TYPE_BYTES:
      return "base64 bytes";
    case FD::TYPE_ENUM:
      return "an enum name or number";
    default:
      return "an object";
  }
}

uint8_t wire_type_of(FD::Type t) {
  switch (t) {
    case FD::TYPE_DOUBLE:
    case FD::TYPE_FIXED64:
    case FD::TYPE_SFIXED64:
      return kFixed64;
    case FD::TYPE_FLOAT:
    case FD::TYPE_FIXED32:
    case FD::TYPE_SFIXED32:
      return kFixed32;
    case FD::TYPE_STRING:
    case FD::TYPE_BYTES:
    case FD::TYPE_MESSAGE:
    case FD::TYPE_GROUP:
      return kLengthDelimited;
    default:
      return kVarint;
  }
}

// Dotted-quad IPv4 in canonical form ("198.51.100.23": no leading zeros, each part 0..255):
// the offset of its last part, or 0 when `v` is not one.
size_t ipv4_last_part(std::string_view v) {
  size_t parts = 0, digits = 0, last = 0;
  unsigned value = 0;
  for (size_t i = 0; i <= v.size(); ++i) {
    if (i == v.size() || v[i] == '.') {
      if (digits == 0 || value > 255 || (digits > 1 && v[i - digits] == '0')) return 0;
      if (++parts == 4) last = i - digits;
      digits = value = 0;
      continue;
    }
    if (v[i] < '0' || v[i] > '9' || ++digits > 3) return 0;
    value = value * 10 + static_cast<unsigned>(v[i] - '0');
  }
  return parts == 4 ? last : 0;
}

std::string truncate_ip(std::string_view value) {
  // The common case without inet_pton/inet_ntop (which format through sprintf).
  if (const size_t last = ipv4_last_part(value); last != 0) {
    return std::string(value.substr(0, last)) + "0";
  }
  const std::string text(value);
  unsigned char a[16];
  if (inet_pton(AF_INET, text.c_str(), a) == 1) {
    a[3] = 0;
    char out[INET_ADDRSTRLEN];
    return inet_ntop(AF_INET, a, out, sizeof out);
  }
  if (inet_pton(AF_INET6, text.c_str(), a) == 1) {
    std::fill(a + 6, a + 16, 0);
    char out[INET6_ADDRSTRLEN];
    return inet_ntop(AF_INET6, a, out, sizeof out);
  }
  return std::string(kRedacted);
}

// A HASH token: 64 lower-case hex digits.
bool is_token(std::string_view v) {
  if (v.size() != 64) return false;
  for (char c : v) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool would_change(Action a, std::string_view value) {
  switch (a) {
    case Action::none:
      return false;
    case Action::hash:
      return !is_token(value);
    case Action::redact:
      return value != kRedacted;
    case Action::truncate_ip: {
      const size_t last = ipv4_last_part(value);
      return last == 0 ? truncate_ip(value) != value : value.substr(last) != "0";
    }
    default:
      return true;  // drop
  }
}

// Every action is idempotent, so that an event validated at the edge and again at the
// gateway is changed once: REDACT, DROP and TRUNCATE_IP are by nature, and HASH keeps a value
// that is already a token (docs/contracts.md, "Sensitive fields").
std::string apply(Action a, std::string_view value, std::string_view key) {
  switch (a) {
    case Action::hash:
      return is_token(value) ? std::string(value) : tls::hmac_sha256_hex(key, value);
    case Action::truncate_ip:
      return truncate_ip(value);
    default:
      return std::string(kRedacted);
  }
}

}  // namespace rules

namespace {

using namespace rules;

Action action_of(const FD* f) {
  switch (f->options().GetExtension(v1::field).sensitivity()) {
    case v1::HASH:
      return Action::hash;
    case v1::REDACT:
      return Action::redact;
    case v1::DROP:
      return Action::drop;
    case v1::TRUNCATE_IP:
      return Action::truncate_ip;
    default:
      return Action::none;
  }
}

}  // namespace

struct Validator::Impl {
  std::deque<MessageRules> rules;
  std::unordered_map<const pb::Descriptor*, MessageRules*> by_descriptor;
  std::map<std::string, Contract, std::less<>> contracts;
  ValidatorOptions options;

  Result<MessageRules*> compile(const pb::Descriptor* d, bool& needs_key) {
    if (auto it = by_descriptor.find(d); it != by_descriptor.end()) return it->second;
    MessageRules& m = rules.emplace_back();
    by_descriptor[d] = &m;
    m.d = d;
    m.well_known = d->file()->package() == "google.protobuf";
    for (int i = 0; i < d->field_count(); ++i) {
      const FD* fd = d->field(i);
      FieldRule f;
      f.fd = fd;
      f.name = fd->name();
      f.json_name = fd->json_name();
      f.type = fd->type();
      f.repeated = fd->is_repeated();
      f.map = fd->is_map();
      f.action = action_of(fd);
      f.oneof = fd->real_containing_oneof() ? fd->real_containing_oneof()->index() : -1;
      if (f.action != Action::none && f.action != Action::drop &&
          (fd->type() != FD::TYPE_STRING || f.map)) {
        return make_error(common_errc::config_invalid,
                          "contracts: " + fd->full_name() +
                              ": a HASH, REDACT or TRUNCATE_IP field must be a string (or "
                              "repeated string); use DROP for other types");
      }
      if (f.action == Action::hash) needs_key = true;
      if (f.action != Action::none) m.has_sensitive = true;
      if (fd->message_type() != nullptr) {
        auto nested = compile(fd->message_type(), needs_key);
        if (!nested) return nested.error();
        f.message = *nested;
      }
      m.by_number[static_cast<uint32_t>(fd->number())] = m.fields.size();
      m.fields.push_back(std::move(f));
    }
    return &m;
  }

  // has_sensitive includes nested messages (a fixed point: types may nest recursively).
  void propagate() {
    for (bool changed = true; changed;) {
      changed = false;
      for (MessageRules& m : rules) {
        if (m.has_sensitive) continue;
        for (const FieldRule& f : m.fields) {
          if (f.message != nullptr && !f.map && f.message->has_sensitive) {
            m.has_sensitive = changed = true;
            break;
          }
        }
      }
    }
  }
};

Validator::Validator() : impl_(std::make_unique<Impl>()) {}
Validator::~Validator() = default;

Result<std::shared_ptr<const Validator>> Validator::make(
    std::shared_ptr<const ContractRegistry> registry, ValidatorOptions options) {
  std::shared_ptr<Validator> v(new Validator());
  v->registry_ = std::move(registry);
  v->impl_->options = std::move(options);
  bool needs_key = false;
  std::string needs_key_schema;
  for (const auto& [schema, full_name] : v->registry_->schemas()) {
    const pb::Descriptor* d = v->registry_->find(schema);
    bool this_needs_key = false;
    auto rules = v->impl_->compile(d, this_needs_key);
    if (!rules) return rules.error();
    if (this_needs_key && needs_key_schema.empty()) needs_key_schema = schema;
    needs_key = needs_key || this_needs_key;
    pb::FileDescriptorProto file;
    d->file()->CopyTo(&file);
    Contract c;
    c.schema = schema;
    c.fingerprint = tls::sha256_hex(file.SerializeAsString()).substr(0, 16);
    c.rules = *rules;
    auto policy = v->impl_->options.keep_unknown_fields_by_schema.find(schema);
    c.keep_unknown = policy != v->impl_->options.keep_unknown_fields_by_schema.end()
                         ? policy->second
                         : v->impl_->options.keep_unknown_fields;
    v->impl_->contracts.emplace(schema, std::move(c));
  }
  v->impl_->propagate();
  for (const MessageRules& m : v->impl_->rules) {
    for (const FieldRule& f : m.fields) {
      if (f.map && f.message->has_sensitive) {
        return make_error(common_errc::config_invalid,
                          "contracts: " + f.fd->full_name() +
                              ": sensitive fields inside a map's values are not supported; "
                              "make it a repeated message");
      }
    }
  }
  for (const auto& [schema, policy] : v->impl_->options.keep_unknown_fields_by_schema) {
    if (v->impl_->contracts.count(schema) == 0) {
      return make_error(common_errc::config_invalid,
                        "contracts.schemas.\"" + schema + "\": the descriptor set " +
                            v->registry_->path() + " has no such schema");
    }
  }
  if (needs_key && v->impl_->options.hash_key.empty()) {
    return make_error(common_errc::config_invalid,
                      "contracts: schema " + needs_key_schema +
                          " has a HASH field: set contracts.hash_key_file to a file with the "
                          "secret key (e.g. head -c 32 /dev/urandom > hash.key)");
  }
  return std::shared_ptr<const Validator>(std::move(v));
}

bool Validator::knows(std::string_view schema) const {
  return impl_->contracts.find(schema) != impl_->contracts.end();
}

bool Validator::sensitive(std::string_view schema) const {
  auto it = impl_->contracts.find(schema);
  return it != impl_->contracts.end() && it->second.rules->has_sensitive;
}

Verdict Validator::check(std::string_view event, std::string_view schema) const {
  Verdict v;
  auto it = impl_->contracts.find(schema);
  if (it == impl_->contracts.end()) {
    if (!impl_->options.unknown_schema_pass) {
      v.bad =
          Rejection{"unknown_schema", "schema \"" + std::string(schema) +
                                          "\" is not in the descriptor set " + registry_->path()};
    }
    return v;
  }
  const Contract& c = it->second;
  v.contract = c.schema;
  v.fingerprint = c.fingerprint;
  // The payload: the last member of the oneof wins; a message member that appears more
  // than once is merged (its chunks joined in `joined`), as protobuf's parser does.
  std::string joined;
  uint32_t field = 0;
  const std::string_view payload = payload_bytes(event, joined, &field);
  const bool merged = !joined.empty() && payload.data() == joined.data();
  auto bad = [&](const char* code, std::string what) {
    v.bad = Rejection{code, c.schema + ": " + std::move(what)};
    return v;
  };
  if (field == 0) return bad("missing_payload", "the event has no payload");
  std::string out;
  const bool rewrite = c.rules->has_sensitive;
  bool changed = false;
  const std::string& key = impl_->options.hash_key;
  CheckResult r;
  if (field == 12) {
    // Checked without writing first; written again only when a member that an action applies
    // to is there (most events of most contracts have none).
    if (!check_json(payload, c, key, nullptr, r)) return bad(r.fail.code, r.fail.what);
    if (rewrite && r.saw_sensitive) {
      if (!check_json(payload, c, key, &out, r)) return bad(r.fail.code, r.fail.what);
      changed = r.changed;
    }
  } else {
    const char* expected = field == 10 ? "outpost.v1.PixelHit" : "outpost.v1.SensorReading";
    if (c.rules->d->full_name() != expected) {
      return bad("wrong_payload", std::string("a ") + (field == 10 ? "pixel" : "sensor") +
                                      " payload (" + expected + ") where the contract is " +
                                      c.rules->d->full_name());
    }
    // As for JSON: written again only when an action would change a value (a pixel's
    // client_ip that the source truncated already stays as it is).
    if (!check_proto(payload, c, key, nullptr, r)) return bad(r.fail.code, r.fail.what);
    if (rewrite && r.saw_sensitive) {
      if (!check_proto(payload, c, key, &out, r)) return bad(r.fail.code, r.fail.what);
      changed = r.changed;
    }
  }
  if (changed) {
    v.payload_field = field;
    v.payload = std::move(out);
  } else if (merged) {
    v.payload_field = field;
    v.payload = std::move(joined);
  } else {
    v.original = payload;
  }
  return v;
}

std::string apply_sensitivity(std::string_view action, std::string_view value,
                              std::string_view key) {
  const Action a = action == "hash"          ? Action::hash
                   : action == "truncate_ip" ? Action::truncate_ip
                                             : Action::redact;
  return apply(a, value, key);
}

}  // namespace outpost::proto
