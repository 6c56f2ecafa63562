#pragma once
// Payloads checked against their contracts (docs/contracts.md, "Validation"), from the bytes,
// as check_event() checks the envelope: a `json` payload is read against the contract's
// message by protobuf's JSON mapping rules (proto3), a pixel or sensor payload's protobuf
// bytes against its message. Protobuf's own JSON parser (JsonStringToMessage over a
// DynamicMessage) cost the gateway more per event than all its other work together
// (docs/BENCHMARKS.md, forward_bench); this reads the text once and builds nothing.
//
// What is bad, each with its reason code (Rejection::code, docs/contracts.md):
//   unknown_schema   the envelope names a schema the descriptor set has not (unless
//                    ValidatorOptions::unknown_schema_pass)
//   missing_payload  no payload at all
//   wrong_payload    a pixel or sensor payload whose message is not the schema's contract
//   not_json         a json payload that is not one JSON object (RFC 8259, UTF-8)
//   wrong_type       a value of the wrong JSON type or wire type (a string for an int32 ...)
//   out_of_range     a number outside its field's type, or not an integer where one must be
//   unknown_field    a field the contract has not, under the schema's `reject` policy
//   unknown_enum     an enum name the contract has not
//   duplicate_field  two members of one oneof (a field named twice is taken, the last value
//                    winning, as protobuf's parser does)
//   too_deep         nesting deeper than 64 levels
// A Rejection's message names the schema, the field path ($.items[2].quantity) and what was
// wrong.
//
// Sensitive fields ((outpost.v1.field).sensitivity) are applied to good payloads: the
// Verdict then holds the payload to write in place of the event's own.
//
// Thread-safety: a Validator is immutable; check() from any thread.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "proto/contract_registry.hpp"

namespace outpost::proto {

struct Rejection {
  std::string_view code;  // machine-readable, one of the list above (a static name)
  std::string message;    // for a person: schema, field path, what was wrong
};

struct ValidatorOptions {
  // An event whose schema the set does not name is written as good, unvalidated.
  bool unknown_schema_pass = false;
  // Unknown fields: kept (and written) or the event is bad; per schema, else the default.
  bool keep_unknown_fields = false;
  std::map<std::string, bool> keep_unknown_fields_by_schema;
  // The HASH action's key; make() refuses a set with a HASH field when it is empty.
  std::string hash_key;
};

struct Verdict {
  std::optional<Rejection> bad;
  // The contract it was validated against; empty when its schema was unknown and passed.
  std::string_view contract, fingerprint;
  // Non-zero: the Event field (10 pixel, 11 sensor, 12 json) to write with `payload` in
  // place of the event's own (sensitive fields applied, merged message chunks joined).
  uint32_t payload_field = 0;
  std::string payload;
  // Otherwise (payload_field 0, a known schema): the payload as it is in the event's bytes.
  std::string_view original;
};

class Validator {
 public:
  // Refuses (config_invalid, naming the schema and field) a sensitivity the validator cannot
  // apply (HASH, REDACT or TRUNCATE_IP on a field that is not a string), and a HASH field
  // without options.hash_key.
  static Result<std::shared_ptr<const Validator>> make(
      std::shared_ptr<const ContractRegistry> registry, ValidatorOptions options);
  ~Validator();

  // `event`: an event's bytes that check_event() accepted; `schema` its schema.
  Verdict check(std::string_view event, std::string_view schema) const;
  const ContractRegistry& registry() const { return *registry_; }
  // Whether the schema is one of the set's (its metrics label; others are "unknown").
  bool knows(std::string_view schema) const;
  // Whether the schema's contract marks any field sensitive (a bad event's dead letter then
  // withholds its payload: one that does not parse cannot be cleaned reliably).
  bool sensitive(std::string_view schema) const;

  struct Impl;

 private:
  Validator();
  std::shared_ptr<const ContractRegistry> registry_;
  std::unique_ptr<Impl> impl_;
};

// The text of a sensitive string value after an action (exposed for tests and docs):
// "hash" (HMAC-SHA-256 hex under `key`), "redact", "truncate_ip".
std::string apply_sensitivity(std::string_view action, std::string_view value,
                              std::string_view key);

}  // namespace outpost::proto
