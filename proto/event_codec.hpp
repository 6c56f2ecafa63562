#pragma once
// Conversions of outpost.v1.Event between the buffer's stored form, protobuf bytes and JSON,
// without exposing protobuf headers to callers (STYLE.md rule 2).
//
// JSON form (peek, export --format ndjson): protobuf's JSON mapping with the proto field names
// (agent_id, event_time, ...), except that a `json` payload appears as the JSON value itself,
// byte for byte as it was stored, not base64. Import reads that form back.
//
// Thread-safety: pure functions.

#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/event.hpp"
#include "common/result.hpp"
#include "proto/relayed.hpp"

namespace outpost::v1 {
class Event;
}

namespace outpost::proto {

// Largest event accepted by the import paths.
inline constexpr size_t kMaxEventBytes = 16u << 20;

// The full event: a stored body with agent_id, seq and collected_at appended (a relayed body,
// below, is one already). Protobuf's rule
// that the last occurrence of a scalar field wins makes this a valid Event without re-encoding.
std::string stamp(std::string_view body, std::string_view agent_id, uint64_t seq,
                  int64_t collected_at_ns);
// The same stamped event, length-delimited, appended to `out` without an intermediate string
// (the forwarder builds a batch payload this way).
void append_stamped_delimited(std::string& out, std::string_view body, std::string_view agent_id,
                              uint64_t seq, int64_t collected_at_ns);

// stamp() and append_stamped_delimited() leave a relayed body (proto/relayed.hpp) as it is,
// so it reaches the gateway under the device's identity. relayed_body() makes one: the body a
// relay stores for a device's event (its bytes as the device sent them).
std::string relayed_body(std::string_view event_bytes, std::string_view agent_id, uint64_t seq,
                         int64_t collected_at_ns);

// The fields of a pixel hit, as the HTTP source has them (already bounded and valid UTF-8).
struct PixelHitFields {
  int64_t event_time_ns = 0;
  std::string_view path, site_id, user_agent, referer, accept_language, client_ip, cookie_id;
  const std::vector<std::pair<std::string, std::string>>* query = nullptr;  // may repeat a key
};
// The stored body of a pixel event (kind PIXEL, schema "pixel.v1"), encoded by hand: building
// a v1::Event with its query map cost the HTTP source more than answering the request.
// The same message as filling a v1::Event; of a repeated query key only the last value is
// written, as the map would hold it.
std::string encode_pixel_event(const PixelHitFields& hit);

// One line of JSON, no trailing newline (event_view.hpp renders it).
Result<std::string> event_to_json(std::string_view event_bytes);

// A line of the JSON form (or protobuf bytes) back to an event ready to append: the kind,
// priority and event_time are taken from it; agent_id, seq and collected_at leave the body
// (the importing buffer stamps them) and seq and collected_at go to NewEvent::seq and
// ::collected_at_ns, which the importer keeps or clears.
// `agent_id`, when given, receives the event's agent id before it is cleared.
Result<NewEvent> event_from_json(std::string_view line, std::string* agent_id = nullptr);
Result<NewEvent> event_from_bytes(std::string_view event_bytes, std::string* agent_id = nullptr);

// Length-delimited framing (a varint byte count before each message), as protobuf's
// writeDelimitedTo / parseDelimitedFrom.
void append_delimited(std::string& out, std::string_view message);
// The next message, nullopt at a clean end of input, an error on a torn or oversized one.
Result<std::optional<std::string>> read_delimited(std::istream& in, size_t max_bytes);

}  // namespace outpost::proto
