#include "proto/event_codec.hpp"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <vector>

#include "common/errc.hpp"
#include "common/json/json_reader.hpp"
#include "common/json/json_writer.hpp"
#include "common/utf8.hpp"
#include "outpost/v1/event.pb.h"
#include "proto/event_view.hpp"
#include "proto/field_reader.hpp"
#include "proto/varint.hpp"

namespace outpost::proto {
namespace {

namespace pb = google::protobuf;

void put_tag(std::string& out, uint32_t field, uint8_t wire_type) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | wire_type);
}

// proto3: an empty string is not written.
void put_string(std::string& out, uint32_t field, std::string_view s) {
  if (s.empty()) return;
  put_tag(out, field, kLengthDelimited);
  put_varint(out, s.size());
  out.append(s);
}

Error bad(std::string message) { return make_error(common_errc::bad_input, std::move(message)); }

Result<NewEvent> to_new_event(v1::Event& event, const std::string& where, std::string* agent_id) {
  auto kind = kind_from_number(event.kind());
  if (!kind) {
    return bad(where + ": kind " + std::to_string(event.kind()) +
               " is not one of EVENT_KIND_PIXEL, EVENT_KIND_SENSOR, EVENT_KIND_JSON");
  }
  if (agent_id != nullptr) *agent_id = event.agent_id();
  NewEvent out;
  out.kind = *kind;
  out.priority = event.priority();
  out.event_time_ns = event.event_time();
  out.seq = event.seq();  // kept only where the importer says so (buffer import)
  out.collected_at_ns = event.collected_at();
  event.clear_agent_id();
  event.clear_seq();
  event.clear_collected_at();
  out.body = event.SerializeAsString();
  return out;
}

}  // namespace

namespace {

// The fields stamp() appends, and their size.
void put_stamp_fields(std::string& out, std::string_view agent_id, uint64_t seq,
                      int64_t collected_at_ns) {
  out.push_back(static_cast<char>((1 << 3) | 2));  // agent_id: field 1, length-delimited
  put_varint(out, agent_id.size());
  out.append(agent_id);
  out.push_back(static_cast<char>(2 << 3));  // seq: field 2, varint
  put_varint(out, seq);
  out.push_back(static_cast<char>(5 << 3));  // collected_at: field 5, varint
  put_varint(out, static_cast<uint64_t>(collected_at_ns));
}

size_t stamp_fields_size(std::string_view agent_id, uint64_t seq, int64_t collected_at_ns) {
  return 3 + varint_size(agent_id.size()) + agent_id.size() + varint_size(seq) +
         varint_size(static_cast<uint64_t>(collected_at_ns));
}

}  // namespace

std::string stamp(std::string_view body, std::string_view agent_id, uint64_t seq,
                  int64_t collected_at_ns) {
  if (is_relayed(body)) return std::string(body);
  std::string out;
  out.reserve(body.size() + stamp_fields_size(agent_id, seq, collected_at_ns));
  out.append(body);
  put_stamp_fields(out, agent_id, seq, collected_at_ns);
  return out;
}

void append_stamped_delimited(std::string& out, std::string_view body, std::string_view agent_id,
                              uint64_t seq, int64_t collected_at_ns) {
  if (is_relayed(body)) {
    put_varint(out, body.size());
    out.append(body);
    return;
  }
  put_varint(out, body.size() + stamp_fields_size(agent_id, seq, collected_at_ns));
  out.append(body);
  put_stamp_fields(out, agent_id, seq, collected_at_ns);
}

std::string relayed_body(std::string_view event_bytes, std::string_view agent_id, uint64_t seq,
                         int64_t collected_at_ns) {
  std::string out;
  out.reserve(event_bytes.size() + stamp_fields_size(agent_id, seq, collected_at_ns));
  put_stamp_fields(out, agent_id, seq, collected_at_ns);
  FieldReader r(event_bytes);
  Field f;
  size_t run = 0;
  for (size_t start = 0; r.next(f); start = r.position()) {
    if (f.number != 1 && f.number != 2 && f.number != 5) continue;
    if (start > run) out.append(event_bytes.substr(run, start - run));
    run = r.position();
  }
  if (event_bytes.size() > run) out.append(event_bytes.substr(run));
  return out;
}

std::string encode_pixel_event(const PixelHitFields& hit) {
  // PixelHit first, to know its length; then the Event around it.
  std::string pixel;
  pixel.reserve(64 + hit.user_agent.size() + hit.referer.size() + hit.path.size());
  put_string(pixel, 1, hit.site_id);
  if (hit.query) {
    const auto& query = *hit.query;
    for (size_t i = 0; i < query.size(); ++i) {
      const std::string& key = query[i].first;     // not a structured binding: clang 14's
      const std::string& value = query[i].second;  // lambdas cannot capture one
      // A repeated key: only its last value is written, as the map would hold it.
      if (std::any_of(query.begin() + static_cast<ptrdiff_t>(i) + 1, query.end(),
                      [&](const auto& later) { return later.first == key; })) {
        continue;
      }
      // A map entry is a message {key = 1, value = 2}; both are written, as protobuf does.
      const size_t entry =
          1 + varint_size(key.size()) + key.size() + 1 + varint_size(value.size()) + value.size();
      put_tag(pixel, 2, kLengthDelimited);
      put_varint(pixel, entry);
      put_tag(pixel, 1, kLengthDelimited);
      put_varint(pixel, key.size());
      pixel.append(key);
      put_tag(pixel, 2, kLengthDelimited);
      put_varint(pixel, value.size());
      pixel.append(value);
    }
  }
  put_string(pixel, 3, hit.user_agent);
  put_string(pixel, 4, hit.referer);
  put_string(pixel, 5, hit.accept_language);
  put_string(pixel, 6, hit.client_ip);
  put_string(pixel, 7, hit.cookie_id);
  put_string(pixel, 8, hit.path);

  std::string out;
  out.reserve(pixel.size() + 32);
  put_tag(out, 3, kVarint);  // kind
  put_varint(out, v1::EVENT_KIND_PIXEL);
  if (hit.event_time_ns != 0) {
    put_tag(out, 4, kVarint);
    put_varint(out, static_cast<uint64_t>(hit.event_time_ns));
  }
  put_string(out, 6, "pixel.v1");
  put_tag(out, 10, kLengthDelimited);  // payload: pixel (written even when empty: the oneof)
  put_varint(out, pixel.size());
  out.append(pixel);
  return out;
}

Result<std::string> event_to_json(std::string_view event_bytes) {
  if (auto head = check_event(event_bytes); !head) {
    return bad("stored event does not parse as outpost.v1.Event (" + head.error().message + ")");
  }
  std::string out;
  append_event_json(out, event_bytes);
  return out;
}

Result<NewEvent> event_from_json(std::string_view line, std::string* agent_id) {
  if (line.size() > kMaxEventBytes) return bad("event larger than 16 MiB");
  bool is_object = false;
  auto member = json::find_member(line, "json", &is_object);
  if (!is_object) return bad("not a JSON object");
  std::string rest(line);
  std::string raw;
  if (member && (line[member->value_begin] == '{' || line[member->value_begin] == '[')) {
    raw = std::string(line.substr(member->value_begin, member->value_end - member->value_begin));
    if (!json::valid_json_value(raw)) return bad("the json payload is not valid JSON");
    // Cut the member and one comma next to it.
    size_t begin = member->begin, end = member->end;
    size_t after = end;
    while (after < line.size() && json::is_ws(line[after])) ++after;
    if (after < line.size() && line[after] == ',') {
      end = after + 1;
    } else {
      size_t before = begin;
      while (before > 0 && json::is_ws(line[before - 1])) --before;
      if (before > 0 && line[before - 1] == ',') begin = before - 1;
    }
    rest = std::string(line.substr(0, begin)) + std::string(line.substr(end));
  }
  v1::Event event;
  auto status = pb::util::JsonStringToMessage(rest, &event);
  if (!status.ok()) return bad("not an outpost.v1.Event: " + std::string(status.message()));
  if (!raw.empty()) event.set_json(raw);
  return to_new_event(event, "event", agent_id);
}

Result<NewEvent> event_from_bytes(std::string_view event_bytes, std::string* agent_id) {
  v1::Event event;
  if (event_bytes.size() > kMaxEventBytes ||
      !event.ParseFromArray(event_bytes.data(), static_cast<int>(event_bytes.size()))) {
    return bad("not an outpost.v1.Event in protobuf encoding");
  }
  return to_new_event(event, "event", agent_id);
}

void append_delimited(std::string& out, std::string_view message) {
  put_varint(out, message.size());
  out.append(message);
}

Result<std::optional<std::string>> read_delimited(std::istream& in, size_t max_bytes) {
  uint64_t size = 0;
  int shift = 0;
  for (int i = 0;; ++i) {
    int c = in.get();
    if (c == std::char_traits<char>::eof()) {
      if (i == 0) return std::optional<std::string>();
      return bad("input ends inside a length prefix");
    }
    if (i == 10) return bad("length prefix longer than 10 bytes");
    size |= static_cast<uint64_t>(c & 0x7f) << shift;
    shift += 7;
    if ((c & 0x80) == 0) break;
  }
  if (size > max_bytes) {
    return bad("message of " + std::to_string(size) + " bytes exceeds the limit of " +
               std::to_string(max_bytes));
  }
  std::string message(size, '\0');
  in.read(message.data(), static_cast<std::streamsize>(size));
  if (static_cast<uint64_t>(in.gcount()) != size) return bad("input ends inside a message");
  return std::optional<std::string>(std::move(message));
}

}  // namespace outpost::proto
