#pragma once
// Plain types for an event on its way into the buffer, shared by sources, the buffer and the
// codecs without exposing protobuf headers (STYLE.md rule 2).
//
// `body` is a serialized outpost.v1.Event without its identity (agent_id, seq) and without
// collected_at: the buffer assigns those, and proto/event_codec.hpp stamps them on read.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace outpost {

// Values equal outpost.v1.EventKind's numbers (proto/outpost/v1/event.proto).
enum class EventKind : uint8_t { pixel = 1, sensor = 2, json = 3 };
inline constexpr EventKind kAllKinds[] = {EventKind::pixel, EventKind::sensor, EventKind::json};
inline constexpr int kKindCount = 3;

inline std::string_view kind_name(EventKind k) {
  switch (k) {
    case EventKind::pixel:
      return "pixel";
    case EventKind::sensor:
      return "sensor";
    case EventKind::json:
      return "json";
  }
  return "unknown";
}

inline std::optional<EventKind> kind_from_name(std::string_view name) {
  for (EventKind k : kAllKinds) {
    if (kind_name(k) == name) return k;
  }
  return std::nullopt;
}

inline std::optional<EventKind> kind_from_number(int64_t n) {
  if (n >= 1 && n <= kKindCount) return static_cast<EventKind>(n);
  return std::nullopt;
}

inline int kind_index(EventKind k) { return static_cast<int>(k) - 1; }

struct NewEvent {
  EventKind kind = EventKind::json;
  int32_t priority = 0;
  int64_t event_time_ns = 0;
  std::string body;
  // Optional: what identifies this event at its source (the MQTT source: packet id, topic and
  // payload digest). The buffer remembers the last BufferOptions::identity_window identities;
  // an event marked maybe_duplicate whose identity is among them is not stored again
  // (docs/buffer.md, "Identities").
  std::string identity;
  bool maybe_duplicate = false;
  // Non-zero: the event already has its per-agent seq (a salvage of a corrupt buffer being
  // imported, a relay's device events) and keeps it, with its collected_at, so that the
  // gateway's dedupe by (agent_id, seq) recognises it. Zero: the buffer assigns the next seq.
  uint64_t seq = 0;
  int64_t collected_at_ns = 0;
};

}  // namespace outpost
