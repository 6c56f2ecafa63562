#include "proto/event_codec.hpp"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <vector>

#include "common/errc.hpp"
#include "common/json_writer.hpp"
#include "common/utf8.hpp"
#include "outpost/v1/event.pb.h"
#include "proto/event_view.hpp"
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

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// A minimal scanner over one JSON object: finds a top-level member by key without decoding
// anything else, so that a `json` payload can be taken out byte for byte.
class Scanner {
 public:
  explicit Scanner(std::string_view s) : s_(s) {}

  struct Member {
    size_t begin, end;              // the member, from its key's quote to its value's end
    size_t value_begin, value_end;  // the value alone
  };

  // nullopt with ok()==true when the key is absent; ok()==false when `s` is not an object.
  std::optional<Member> find(std::string_view key) {
    std::optional<Member> found;
    skip_ws();
    if (!eat('{')) return fail();
    skip_ws();
    if (eat('}')) return end_of_input() ? found : fail();
    while (true) {
      skip_ws();
      size_t begin = pos_;
      if (peek() != '"') return fail();
      size_t key_begin = pos_ + 1;
      if (!skip_string()) return fail();
      std::string_view k = s_.substr(key_begin, pos_ - 1 - key_begin);
      skip_ws();
      if (!eat(':')) return fail();
      skip_ws();
      size_t value_begin = pos_;
      if (!skip_value()) return fail();
      if (k == key) {
        if (found) return fail();  // the same key twice
        found = Member{begin, pos_, value_begin, pos_};
      }
      skip_ws();
      if (eat(',')) continue;
      if (eat('}')) break;
      return fail();
    }
    return end_of_input() ? found : fail();
  }
  bool ok() const { return ok_; }

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool eat(char c) {
    if (peek() != c || pos_ >= s_.size()) return false;
    ++pos_;
    return true;
  }
  void skip_ws() {
    while (pos_ < s_.size() && is_ws(s_[pos_])) ++pos_;
  }
  bool end_of_input() {
    skip_ws();
    return pos_ == s_.size();
  }
  std::nullopt_t fail() {
    ok_ = false;
    return std::nullopt;
  }
  bool skip_string() {  // at '"'
    ++pos_;
    while (pos_ < s_.size()) {
      char c = s_[pos_++];
      if (c == '\\') {
        if (pos_ >= s_.size()) return false;
        ++pos_;
      } else if (c == '"') {
        return true;
      }
    }
    return false;
  }
  bool skip_value() {
    char c = peek();
    if (c == '"') return skip_string();
    if (c == '{' || c == '[') {
      int depth = 0;
      while (pos_ < s_.size()) {
        char d = s_[pos_];
        if (d == '"') {
          if (!skip_string()) return false;
          continue;
        }
        ++pos_;
        if (d == '{' || d == '[') ++depth;
        if (d == '}' || d == ']') {
          if (--depth == 0) return true;
        }
      }
      return false;
    }
    size_t start = pos_;
    while (pos_ < s_.size() && !is_ws(s_[pos_]) && s_[pos_] != ',' && s_[pos_] != '}' &&
           s_[pos_] != ']') {
      ++pos_;
    }
    return pos_ > start;
  }

  std::string_view s_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// A strict RFC 8259 check of one JSON value (with UTF-8 validation and a depth limit), fast
// enough for the gateway's hot path: it decides whether a `json` payload is written inline.
class JsonCheck {
 public:
  explicit JsonCheck(std::string_view s) : s_(s) {}
  bool document() {
    ws();
    if (!value(0)) return false;
    ws();
    return i_ == s_.size();
  }

 private:
  static constexpr int kMaxDepth = 128;
  bool value(int depth) {
    if (i_ >= s_.size() || depth > kMaxDepth) return false;
    switch (s_[i_]) {
      case '{':
        return object(depth);
      case '[':
        return array(depth);
      case '"':
        return string();
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }
  bool object(int depth) {
    ++i_;
    ws();
    if (eat('}')) return true;
    while (true) {
      ws();
      if (i_ >= s_.size() || s_[i_] != '"' || !string()) return false;
      ws();
      if (!eat(':')) return false;
      ws();
      if (!value(depth + 1)) return false;
      ws();
      if (eat('}')) return true;
      if (!eat(',')) return false;
    }
  }
  bool array(int depth) {
    ++i_;
    ws();
    if (eat(']')) return true;
    while (true) {
      ws();
      if (!value(depth + 1)) return false;
      ws();
      if (eat(']')) return true;
      if (!eat(',')) return false;
    }
  }
  bool string() {
    ++i_;
    while (i_ < s_.size()) {
      auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        if (++i_ >= s_.size()) return false;
        char e = s_[i_++];
        if (e == 'u') {
          for (int k = 0; k < 4; ++k, ++i_) {
            if (i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_]))) return false;
          }
        } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
          return false;
        }
        continue;
      }
      if (c < 0x80) {
        ++i_;
        continue;
      }
      const size_t n = utf8::sequence_length(s_.substr(i_));
      if (n == 0) return false;
      i_ += n;
    }
    return false;
  }
  bool number() {
    eat('-');
    if (eat('0')) {
    } else if (!digits()) {
      return false;
    }
    if (eat('.') && !digits()) return false;
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (!eat('+')) eat('-');
      if (!digits()) return false;
    }
    return true;
  }
  bool digits() {
    size_t start = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    return i_ > start;
  }
  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void ws() {
    while (i_ < s_.size() && is_ws(s_[i_])) ++i_;
  }
  std::string_view s_;
  size_t i_ = 0;
};

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
  std::string out;
  out.reserve(body.size() + stamp_fields_size(agent_id, seq, collected_at_ns));
  out.append(body);
  put_stamp_fields(out, agent_id, seq, collected_at_ns);
  return out;
}

void append_stamped_delimited(std::string& out, std::string_view body, std::string_view agent_id,
                              uint64_t seq, int64_t collected_at_ns) {
  put_varint(out, body.size() + stamp_fields_size(agent_id, seq, collected_at_ns));
  out.append(body);
  put_stamp_fields(out, agent_id, seq, collected_at_ns);
}

std::string encode_pixel_event(const PixelHitFields& hit) {
  // PixelHit first, to know its length; then the Event around it.
  std::string pixel;
  pixel.reserve(64 + hit.user_agent.size() + hit.referer.size() + hit.path.size());
  put_string(pixel, 1, hit.site_id);
  if (hit.query) {
    const auto& query = *hit.query;
    for (size_t i = 0; i < query.size(); ++i) {
      const auto& [key, value] = query[i];
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

bool valid_json_value(std::string_view text) { return JsonCheck(text).document(); }

bool json_object_or_array(std::string_view raw) {
  size_t i = 0;
  while (i < raw.size() && is_ws(raw[i])) ++i;
  return i < raw.size() && (raw[i] == '{' || raw[i] == '[') && valid_json_value(raw);
}

Result<std::string> event_to_json(std::string_view event_bytes) {
  if (auto head = check_event(event_bytes); !head) {
    return bad("stored event does not parse as outpost.v1.Event (" + head.error().message + ")");
  }
  std::string out;
  append_event_json(out, event_bytes);
  return out;
}

Result<std::vector<std::string_view>> split_json_events(std::string_view body, size_t max_events) {
  size_t i = 0;
  while (i < body.size() && is_ws(body[i])) ++i;
  if (i == body.size()) return bad("the body is empty: expected a JSON object or an array of them");
  std::vector<std::string_view> out;
  auto object_at = [&](size_t at, size_t index) -> Result<size_t> {
    if (at >= body.size() || body[at] != '{') {
      return bad(index == SIZE_MAX ? std::string("the body is not a JSON object or array")
                                   : "element " + std::to_string(index) + " is not a JSON object");
    }
    // The object's extent: strings skipped, brackets counted; then checked strictly.
    size_t depth = 0, j = at;
    bool in_string = false;
    for (; j < body.size(); ++j) {
      char c = body[j];
      if (in_string) {
        if (c == '\\') {
          ++j;
        } else if (c == '"') {
          in_string = false;
        }
      } else if (c == '"') {
        in_string = true;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        break;
      }
    }
    if (j >= body.size()) return bad("the JSON ends before its object is closed");
    std::string_view object = body.substr(at, j + 1 - at);
    if (!valid_json_value(object)) {
      const std::string what =
          index == SIZE_MAX ? std::string("the body") : "element " + std::to_string(index);
      if (!utf8::valid(object)) return bad(what + " is not valid UTF-8 (JSON text must be UTF-8)");
      return bad(what + " is not valid JSON");
    }
    out.push_back(object);
    return j + 1;
  };
  auto skip_ws = [&](size_t at) {
    while (at < body.size() && is_ws(body[at])) ++at;
    return at;
  };
  if (body[i] == '[') {
    i = skip_ws(i + 1);
    if (i < body.size() && body[i] == ']') return bad("the array is empty: nothing to record");
    for (size_t index = 0;; ++index) {
      if (index >= max_events) {
        return bad("more than " + std::to_string(max_events) + " events in one request");
      }
      auto next = object_at(i, index);
      if (!next) return next.error();
      i = skip_ws(*next);
      if (i < body.size() && body[i] == ',') {
        i = skip_ws(i + 1);
        continue;
      }
      if (i < body.size() && body[i] == ']') {
        ++i;
        break;
      }
      return bad("expected ',' or ']' after element " + std::to_string(index));
    }
  } else {
    auto next = object_at(i, SIZE_MAX);
    if (!next) return next.error();
    i = *next;
  }
  if (skip_ws(i) != body.size()) return bad("unexpected bytes after the JSON value");
  return out;
}

std::optional<std::string_view> json_member(std::string_view object, std::string_view key) {
  Scanner scanner(object);
  auto member = scanner.find(key);
  if (!member) return std::nullopt;
  return object.substr(member->value_begin, member->value_end - member->value_begin);
}

std::optional<std::string> json_string_member(std::string_view object, std::string_view key) {
  auto value = json_member(object, key);
  if (!value) return std::nullopt;
  std::string_view v = *value;
  if (v.size() < 2 || v.front() != '"') return std::nullopt;
  std::string out;
  for (size_t i = 1; i + 1 < v.size(); ++i) {
    if (v[i] != '\\') {
      out += v[i];
      continue;
    }
    char e = v[++i];
    switch (e) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'u':
        return std::nullopt;  // not decoded here: such a name is refused by the caller
      default:
        out += e;  // \" \\ \/
    }
  }
  return out;
}

Result<NewEvent> event_from_json(std::string_view line, std::string* agent_id) {
  if (line.size() > kMaxEventBytes) return bad("event larger than 16 MiB");
  Scanner scanner(line);
  auto member = scanner.find("json");
  if (!scanner.ok()) return bad("not a JSON object");
  std::string rest(line);
  std::string raw;
  if (member && (line[member->value_begin] == '{' || line[member->value_begin] == '[')) {
    raw = std::string(line.substr(member->value_begin, member->value_end - member->value_begin));
    if (!valid_json_value(raw)) return bad("the json payload is not valid JSON");
    // Cut the member and one comma next to it.
    size_t begin = member->begin, end = member->end;
    size_t after = end;
    while (after < line.size() && is_ws(line[after])) ++after;
    if (after < line.size() && line[after] == ',') {
      end = after + 1;
    } else {
      size_t before = begin;
      while (before > 0 && is_ws(line[before - 1])) --before;
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
