#pragma once
// An outpost.v1.Event read straight from its protobuf bytes, without building the message.
// The gateway checks, routes and renders every event of every batch; protobuf's parser (a
// string copy per field, a hash map per query string) cost it more than all the rest of that
// work together (docs/BENCHMARKS.md, forward_bench).
//
// check_event() accepts what protobuf's parser accepts for outpost.v1.Event: proto3 strings
// must be valid UTF-8, unknown fields are skipped, a known field with an unexpected wire type
// is an unknown field, a message field that appears twice is merged, the last member of a
// oneof wins. One exception: groups (wire types 3 and 4, deprecated) are refused; no Outpost
// agent writes them. event_view_test compares both functions with protobuf's own parser.
//
// Thread-safety: pure functions.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/result.hpp"

namespace outpost::proto {

// The fields of a checked event that the gateway routes and stamps by.
struct EventHead {
  uint64_t seq = 0;
  int32_t kind = 0;  // an outpost.v1.EventKind number; open enum, any value
  int64_t collected_at = 0;
  std::string_view schema;  // into the event's bytes
};

// Checks that `bytes` parse as an outpost.v1.Event; an error names what is wrong.
Result<EventHead> check_event(std::string_view bytes);

// The event's JSON form (event_codec.hpp: protobuf's JSON mapping, `json` payloads inline),
// one line without a newline, appended to `out`; `agent_id`, when given, in place of the
// event's own. For bytes that check_event() accepted; others render as far as they read.
// `stamped`: the bytes are the gateway's own (its validation stage stamped them and dropped
// any provenance the agent sent), so a json payload whose provenance names a contract is a
// JSON object already checked, and is not checked again before it is written inline.
void append_event_json(std::string& out, std::string_view bytes,
                       std::optional<std::string_view> agent_id = std::nullopt,
                       bool stamped = false);

// Standard base64 with padding, as protobuf's JSON mapping writes bytes.
std::string base64(std::string_view in);

// The fields of Event.provenance (docs/gateway.md, "Provenance").
struct ProvenanceFields {
  std::string_view gateway_id;
  int64_t received_at = 0;
  std::string_view contract, contract_fingerprint, payload_sha256;
  std::string_view relay_id;  // the relay it came through; empty: from the device itself
};

// The event's payload bytes as protobuf reads them (the json text, or the pixel or sensor
// message; chunks of a message that appears more than once joined in `scratch`), and its
// field number (0: none).
std::string_view payload_bytes(std::string_view bytes, std::string& scratch, uint32_t* field);

// The event as the gateway writes it: any provenance the agent put in left out, the payload
// replaced by `payload` when `payload_field` is non-zero (10, 11, 12), the provenance
// appended (none when every field of `p` is empty). Appends to `out` and returns where the schema's
// bytes are in what it appended (offset from the start of the appended event, size).
std::pair<size_t, size_t> append_with_provenance(std::string& out, std::string_view bytes,
                                                 uint32_t payload_field, std::string_view payload,
                                                 const ProvenanceFields& p);
// An event's provenance as the gateway stamped it (views into `bytes`); all empty if none.
ProvenanceFields read_provenance(std::string_view bytes);

// The event's bytes with `agent_id` as its agent id, appended to `out`: each agent_id field
// in the bytes is left out and one is written at the end. For checked bytes.
void append_restamped(std::string& out, std::string_view bytes, std::string_view agent_id);
// The same, length-delimited (a varint byte count first), as the file sink's protobuf files.
void append_restamped_delimited(std::string& out, std::string_view bytes,
                                std::string_view agent_id);

}  // namespace outpost::proto
