#include "proto/event_view.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/errc.hpp"
#include "common/json/json_reader.hpp"
#include "common/json/json_writer.hpp"
#include "common/utf8.hpp"
#include "proto/event_codec.hpp"
#include "proto/field_reader.hpp"
#include "proto/varint.hpp"

namespace outpost::proto {
namespace {

struct Checked {
  const char* error = nullptr;  // static text
  const char* where = "";
};

// Each message type's check: which field numbers are strings (UTF-8), which are nested
// messages; everything of another wire type than the schema's is an unknown field.
bool check_string(const Field& f, Checked& c, const char* where) {
  if (utf8::valid(f.bytes)) return true;
  c.error = "a string field is not valid UTF-8";
  c.where = where;
  return false;
}

// The end of a message's check: what the reader found wrong in it, if anything.
bool reader_ok(const FieldReader& r, Checked& c, const char* where) {
  if (r.error() == nullptr) return true;
  c.error = r.error();
  c.where = where;
  return false;
}

bool check_map_entry(std::string_view bytes, Checked& c, const char* where) {
  FieldReader r(bytes);
  Field f;
  while (r.next(f)) {
    if ((f.number == 1 || f.number == 2) && f.type == kLengthDelimited &&
        !check_string(f, c, where)) {
      return false;
    }
  }
  return reader_ok(r, c, where);
}

bool check_pixel(std::string_view bytes, Checked& c) {
  FieldReader r(bytes);
  Field f;
  while (r.next(f)) {
    if (f.type != kLengthDelimited) continue;
    if (f.number == 2) {
      if (!check_map_entry(f.bytes, c, "pixel.query")) return false;
    } else if (f.number >= 1 && f.number <= 8 && !check_string(f, c, "pixel")) {
      return false;
    }
  }
  return reader_ok(r, c, "pixel");
}

bool check_sensor(std::string_view bytes, Checked& c) {
  FieldReader r(bytes);
  Field f;
  while (r.next(f)) {
    const bool string_field = f.number == 1 || f.number == 2 || f.number == 5 || f.number == 7;
    if (string_field && f.type == kLengthDelimited && !check_string(f, c, "sensor")) return false;
  }
  return reader_ok(r, c, "sensor");
}

bool check_provenance(std::string_view bytes, Checked& c) {
  FieldReader r(bytes);
  Field f;
  while (r.next(f)) {
    const bool string_field = f.number == 1 || (f.number >= 3 && f.number <= 6);
    if (string_field && f.type == kLengthDelimited && !check_string(f, c, "provenance")) {
      return false;
    }
  }
  return reader_ok(r, c, "provenance");
}

// ---- JSON -----------------------------------------------------------------------------------

// protobuf's JSON mapping of a double: the shortest text that reads back the same.
std::string double_text(double d) {
  if (std::isnan(d)) return "\"NaN\"";
  if (std::isinf(d)) return d > 0 ? "\"Infinity\"" : "\"-Infinity\"";
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, d);
  return std::string(buf, r.ptr);
}

using Entry = std::pair<std::string_view, std::string_view>;

// A map<string, string> entry's key and value (absent: empty).
Entry map_entry(std::string_view bytes) {
  Entry e;
  FieldReader r(bytes);
  Field f;
  while (r.next(f)) {
    if (f.type != kLengthDelimited) continue;
    if (f.number == 1) e.first = f.bytes;
    if (f.number == 2) e.second = f.bytes;
  }
  return e;
}

// A map's members as protobuf holds them (a later entry with the same key replaces the
// earlier one), sorted by key so that the text does not depend on the order on the wire.
void write_map(JsonWriter& w, std::string_view key, std::vector<Entry>& entries) {
  if (entries.empty()) return;
  // Stable (equal keys keep their wire order), in place: maps hold a few entries, and
  // std::stable_sort allocated a buffer for every event.
  for (size_t i = 1; i < entries.size(); ++i) {
    for (size_t j = i; j > 0 && entries[j].first < entries[j - 1].first; --j) {
      std::swap(entries[j], entries[j - 1]);
    }
  }
  w.known_key(key).begin_object();
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i + 1 < entries.size() && entries[i + 1].first == entries[i].first) continue;  // replaced
    w.key(entries[i].first).value(entries[i].second);
  }
  w.end_object();
}

void write_string(JsonWriter& w, std::string_view key, std::string_view v) {
  if (!v.empty()) w.known_key(key).value(v);
}

ProvenanceFields read_provenance_fields(std::string_view bytes) {
  ProvenanceFields p;
  FieldReader r(bytes);
  Field f;
  while (r.next(f)) {
    if (f.number == 2 && f.type == kVarint) p.received_at = static_cast<int64_t>(f.value);
    if (f.type != kLengthDelimited) continue;
    if (f.number == 1) p.gateway_id = f.bytes;
    if (f.number == 3) p.contract = f.bytes;
    if (f.number == 4) p.contract_fingerprint = f.bytes;
    if (f.number == 5) p.payload_sha256 = f.bytes;
    if (f.number == 6) p.relay_id = f.bytes;
  }
  return p;
}

// What rendering needs of an event; the views point into its bytes. A message field that
// appears more than once is merged (its later fields win), as protobuf's parser merges it.
struct Render {
  std::string_view agent_id, schema, json, provenance;
  uint64_t seq = 0;
  int64_t event_time = 0, collected_at = 0;
  int32_t kind = 0, priority = 0;
  uint32_t payload = 0;                  // the oneof's field number, 0 when not set
  std::vector<std::string_view> chunks;  // the occurrences of the pixel or sensor message
  std::vector<Entry> attributes, query;
  bool stamped = false;

  void reset() {
    agent_id = schema = json = provenance = {};
    seq = 0;
    event_time = collected_at = 0;
    kind = priority = 0;
    payload = 0;
    chunks.clear();
    attributes.clear();
    query.clear();
  }

  void read(std::string_view bytes) {
    FieldReader r(bytes);
    Field f;
    while (r.next(f)) {
      const bool varint = f.type == kVarint, delimited = f.type == kLengthDelimited;
      switch (f.number) {
        // clang-format off
        case 1: if (delimited) agent_id = f.bytes; break;
        case 2: if (varint) seq = f.value; break;
        case 3: if (varint) kind = static_cast<int32_t>(f.value); break;
        case 4: if (varint) event_time = static_cast<int64_t>(f.value); break;
        case 5: if (varint) collected_at = static_cast<int64_t>(f.value); break;
        case 6: if (delimited) schema = f.bytes; break;
        case 7: if (varint) priority = static_cast<int32_t>(f.value); break;
        case 8: if (delimited) attributes.push_back(map_entry(f.bytes)); break;
        case 13: if (delimited) provenance = f.bytes; break;
        // clang-format on
        case 10:
        case 11:
        case 12:
          if (!delimited) break;
          if (payload != f.number) chunks.clear();  // another member: the oneof switches
          payload = f.number;
          if (f.number == 12) {
            json = f.bytes;
          } else {
            chunks.push_back(f.bytes);
          }
          break;
        default:
          break;
      }
    }
  }

  void write_pixel(JsonWriter& w) {
    std::array<std::string_view, 9> s{};  // by field number
    for (std::string_view chunk : chunks) {
      FieldReader r(chunk);
      Field f;
      while (r.next(f)) {
        if (f.type != kLengthDelimited || f.number > 8) continue;
        if (f.number == 2) {
          query.push_back(map_entry(f.bytes));
        } else {
          s[f.number] = f.bytes;
        }
      }
    }
    w.known_key("pixel").begin_object();
    write_string(w, "site_id", s[1]);
    write_map(w, "query", query);
    write_string(w, "user_agent", s[3]);
    write_string(w, "referer", s[4]);
    write_string(w, "accept_language", s[5]);
    write_string(w, "client_ip", s[6]);
    write_string(w, "cookie_id", s[7]);
    write_string(w, "path", s[8]);
    w.end_object();
  }

  void write_sensor(JsonWriter& w) {
    std::array<std::string_view, 8> s{};
    uint32_t value_case = 0;  // 3 (number) or 4 (raw)
    double number = 0;
    bool raw_payload = false;
    bool retained = false;
    for (std::string_view chunk : chunks) {
      FieldReader r(chunk);
      Field f;
      while (r.next(f)) {
        if (f.number == 3 && f.type == kFixed64) {
          std::memcpy(&number, &f.value, sizeof number);
          value_case = 3;
        } else if (f.number == 6 && f.type == kVarint) {
          raw_payload = f.value != 0;
        } else if (f.number == 8 && f.type == kVarint) {
          retained = f.value != 0;
        } else if (f.number < s.size() && f.number != 3 && f.number != 6 &&
                   f.type == kLengthDelimited) {
          s[f.number] = f.bytes;
          if (f.number == 4) value_case = 4;
        }
      }
    }
    w.known_key("sensor").begin_object();
    write_string(w, "device", s[1]);
    write_string(w, "metric", s[2]);
    if (value_case == 3) w.known_key("number").raw(double_text(number));
    if (value_case == 4) w.known_key("raw").value(base64(s[4]));
    write_string(w, "unit", s[5]);
    if (raw_payload) w.known_key("raw_payload").value(true);
    write_string(w, "topic", s[7]);
    if (retained) w.known_key("retained").value(true);
    w.end_object();
  }

  void write(std::string& out) {
    JsonWriter w(out);
    w.begin_object();
    write_string(w, "agent_id", agent_id);
    if (seq != 0) w.known_key("seq").quoted(seq);
    if (kind != 0) {
      static constexpr std::array<std::string_view, 4> kNames = {
          "", "EVENT_KIND_PIXEL", "EVENT_KIND_SENSOR", "EVENT_KIND_JSON"};
      if (kind > 0 && static_cast<size_t>(kind) < kNames.size()) {
        w.known_key("kind").value(kNames[static_cast<size_t>(kind)]);
      } else {
        w.known_key("kind").value(kind);
      }
    }
    if (event_time != 0) w.known_key("event_time").quoted(event_time);
    if (collected_at != 0) w.known_key("collected_at").quoted(collected_at);
    write_string(w, "schema", schema);
    if (priority != 0) w.known_key("priority").value(priority);
    write_map(w, "attributes", attributes);
    if (payload == 10) write_pixel(w);
    if (payload == 11) write_sensor(w);
    if (payload == 12) {
      const bool validated =
          stamped && !provenance.empty() && !read_provenance_fields(provenance).contract.empty();
      if (validated || json::json_object_or_array(json)) {
        w.known_key("json").raw(json);
      } else {
        w.known_key("json").value(base64(json));
      }
    }
    if (!provenance.empty()) write_provenance(w);
    w.end_object();
  }

  void write_provenance(JsonWriter& w) {
    const ProvenanceFields p = read_provenance_fields(provenance);
    w.known_key("provenance").begin_object();
    write_string(w, "gateway_id", p.gateway_id);
    if (p.received_at != 0) w.known_key("received_at").quoted(p.received_at);
    write_string(w, "contract", p.contract);
    // The gateway writes both as hex digits; anything else (an event not from a gateway) is
    // escaped as any string.
    auto hex = [&](std::string_view key, std::string_view v) {
      if (v.empty()) return;
      const bool digits = std::all_of(v.begin(), v.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      });
      w.known_key(key);
      digits ? (void)w.plain(v) : (void)w.value(v);
    };
    hex("contract_fingerprint", p.contract_fingerprint);
    hex("payload_sha256", p.payload_sha256);
    write_string(w, "relay_id", p.relay_id);
    w.end_object();
  }
};

}  // namespace

std::string base64(std::string_view in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint32_t{static_cast<unsigned char>(in[i])} << 16) |
                 (uint32_t{static_cast<unsigned char>(in[i + 1])} << 8) |
                 static_cast<unsigned char>(in[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < in.size()) {
    uint32_t v = uint32_t{static_cast<unsigned char>(in[i])} << 16;
    if (i + 1 < in.size()) v |= uint32_t{static_cast<unsigned char>(in[i + 1])} << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

Result<EventHead> check_event(std::string_view bytes) {
  EventHead head;
  Checked c;
  FieldReader r(bytes);
  Field f;
  bool ok = true;
  while (ok && r.next(f)) {
    if (f.type == kVarint) {
      if (f.number == 2) head.seq = f.value;
      if (f.number == 3) head.kind = static_cast<int32_t>(f.value);
      if (f.number == 5) head.collected_at = static_cast<int64_t>(f.value);
      continue;
    }
    if (f.type != kLengthDelimited) continue;
    switch (f.number) {
      case 1:
        ok = check_string(f, c, "agent_id");
        break;
      case 6:
        ok = check_string(f, c, "schema");
        head.schema = f.bytes;
        break;
      case 8:
        ok = check_map_entry(f.bytes, c, "attributes");
        break;
      case 10:
        ok = check_pixel(f.bytes, c);
        break;
      case 11:
        ok = check_sensor(f.bytes, c);
        break;
      case 13:
        ok = check_provenance(f.bytes, c);
        break;
      default:
        break;  // json (bytes: anything goes) and unknown fields
    }
  }
  if (!ok) {
    return make_error(common_errc::bad_input,
                      std::string("not an outpost.v1.Event: ") + c.error + " (in " + c.where + ")");
  }
  if (r.error()) {
    return make_error(common_errc::bad_input, std::string("not an outpost.v1.Event: ") + r.error());
  }
  return head;
}

void append_event_json(std::string& out, std::string_view bytes,
                       std::optional<std::string_view> agent_id, bool stamped) {
  // One scratch per thread: the vectors keep their capacity from event to event.
  thread_local Render r;
  r.reset();
  r.stamped = stamped;
  r.read(bytes);
  if (agent_id) r.agent_id = *agent_id;
  r.write(out);
}

namespace {

// Calls keep(from, to) for each run of `bytes` between agent_id fields, and returns the size
// of what was kept.
template <typename Keep>
size_t without_agent_id(std::string_view bytes, Keep keep) {
  FieldReader r(bytes);
  Field f;
  size_t run = 0, dropped = 0;  // the kept run starts at `run`
  for (size_t start = 0; r.next(f); start = r.position()) {
    if (f.number != 1 || f.type != kLengthDelimited) continue;
    if (start > run) keep(run, start);
    dropped += r.position() - start;
    run = r.position();
  }
  if (bytes.size() > run) keep(run, bytes.size());
  return bytes.size() - dropped;
}

}  // namespace

std::string_view payload_bytes(std::string_view bytes, std::string& scratch, uint32_t* field) {
  uint32_t number = 0;
  std::string_view payload;
  int chunks = 0;
  FieldReader r(bytes);
  Field f;
  while (r.next(f)) {
    if (f.type != kLengthDelimited || f.number < 10 || f.number > 12) continue;
    if (f.number != number || f.number == 12) chunks = 0;
    number = f.number;
    if (++chunks == 2) scratch.assign(payload);
    if (chunks >= 2) scratch.append(f.bytes);
    payload = f.bytes;
  }
  if (field != nullptr) *field = number;
  return chunks >= 2 ? std::string_view(scratch) : payload;
}

std::pair<size_t, size_t> append_with_provenance(std::string& out, std::string_view bytes,
                                                 uint32_t payload_field, std::string_view payload,
                                                 const ProvenanceFields& p) {
  const size_t base = out.size();
  std::pair<size_t, size_t> schema{0, 0};
  FieldReader r(bytes);
  Field f;
  size_t run = 0;
  for (size_t start = 0; r.next(f); start = r.position()) {
    const bool skip = (f.number == 13 && f.type == kLengthDelimited) ||
                      (payload_field != 0 && f.number >= 10 && f.number <= 12);
    if (f.number == 6 && f.type == kLengthDelimited) {
      // Where the schema's bytes land: the runs kept so far, then its offset in this run.
      const size_t at = out.size() - base + (start - run) + (r.position() - start - f.bytes.size());
      schema = {at, f.bytes.size()};
    }
    if (!skip) continue;
    if (start > run) out.append(bytes.substr(run, start - run));
    run = r.position();
  }
  if (bytes.size() > run) out.append(bytes.substr(run));
  if (payload_field != 0) {
    put_varint(out, (uint64_t{payload_field} << 3) | kLengthDelimited);
    put_varint(out, payload.size());
    out.append(payload);
  }
  // The provenance message written in place: its size first, then its fields.
  auto string_size = [](std::string_view v) {
    return v.empty() ? 0 : 1 + varint_size(v.size()) + v.size();
  };
  const size_t size =
      string_size(p.gateway_id) +
      (p.received_at != 0 ? 1 + varint_size(static_cast<uint64_t>(p.received_at)) : 0) +
      string_size(p.contract) + string_size(p.contract_fingerprint) +
      string_size(p.payload_sha256) + string_size(p.relay_id);
  if (size != 0) {  // none: only the payload replaced (the agent's edge validation)
    auto put = [&](uint32_t n, std::string_view v) {
      if (v.empty()) return;
      put_varint(out, (uint64_t{n} << 3) | kLengthDelimited);
      put_varint(out, v.size());
      out.append(v);
    };
    put_varint(out, (13 << 3) | kLengthDelimited);
    put_varint(out, size);
    put(1, p.gateway_id);
    if (p.received_at != 0) {
      put_varint(out, (2 << 3) | kVarint);
      put_varint(out, static_cast<uint64_t>(p.received_at));
    }
    put(3, p.contract);
    put(4, p.contract_fingerprint);
    put(5, p.payload_sha256);
    put(6, p.relay_id);
  }
  return schema;
}

ProvenanceFields read_provenance(std::string_view bytes) {
  FieldReader r(bytes);
  Field f;
  std::string_view last;
  while (r.next(f)) {
    if (f.number == 13 && f.type == kLengthDelimited) last = f.bytes;
  }
  return read_provenance_fields(last);
}

void append_restamped(std::string& out, std::string_view bytes, std::string_view agent_id) {
  without_agent_id(bytes,
                   [&](size_t from, size_t to) { out.append(bytes.substr(from, to - from)); });
  out.push_back(static_cast<char>((1 << 3) | kLengthDelimited));
  put_varint(out, agent_id.size());
  out.append(agent_id);
}

void append_restamped_delimited(std::string& out, std::string_view bytes,
                                std::string_view agent_id) {
  const size_t kept = without_agent_id(bytes, [](size_t, size_t) {});
  put_varint(out, kept + 1 + varint_size(agent_id.size()) + agent_id.size());
  append_restamped(out, bytes, agent_id);
}

}  // namespace outpost::proto
