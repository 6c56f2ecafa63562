#pragma once
// A relayed event (agent/relay/): a device's event that a site agent took, stored with the
// device's identity first — agent_id (field 1) at byte 0, then seq and collected_at — which
// the body of an agent's own event never has (the buffer stamps those). Header-only and free
// of protobuf, so that the buffer can tell whose rows it drops without linking proto/.
//
// Thread-safety: pure functions.

#include <cstdint>
#include <optional>
#include <string_view>

#include "proto/field_reader.hpp"

namespace outpost::proto {

inline bool is_relayed(std::string_view body) { return !body.empty() && body[0] == 0x0A; }

// The device's identity in a relayed body (or in its first 150 bytes: enough for both
// fields), or nullopt when the body is not one.
struct RelayedIdentity {
  std::string_view agent_id;
  uint64_t seq = 0;
};
inline std::optional<RelayedIdentity> relayed_identity(std::string_view body) {
  if (!is_relayed(body)) return std::nullopt;
  FieldReader r(body);
  Field f;
  RelayedIdentity id;
  if (!r.next(f) || f.number != 1 || f.type != kLengthDelimited) return std::nullopt;
  id.agent_id = f.bytes;
  if (!r.next(f) || f.number != 2 || f.type != kVarint) return std::nullopt;
  id.seq = f.value;
  return id;
}

}  // namespace outpost::proto
