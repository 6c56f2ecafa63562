#include "proto/event_codec.hpp"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "common/errc.hpp"
#include "outpost/v1/event.pb.h"

namespace outpost::proto {
namespace {

namespace pb = google::protobuf;

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
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

bool valid_json_value(std::string_view text) {
  pb::Value value;
  return pb::util::JsonStringToMessage(std::string(text), &value).ok();
}

// A json payload is shown inline when it is an object or an array; anything else keeps
// protobuf's base64 form, so that import can tell the two apart.
bool inline_json(std::string_view raw) {
  size_t i = 0;
  while (i < raw.size() && is_ws(raw[i])) ++i;
  return i < raw.size() && (raw[i] == '{' || raw[i] == '[') && valid_json_value(raw);
}

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
  event.clear_agent_id();
  event.clear_seq();
  event.clear_collected_at();
  out.body = event.SerializeAsString();
  return out;
}

}  // namespace

std::string stamp(std::string_view body, std::string_view agent_id, uint64_t seq,
                  int64_t collected_at_ns) {
  std::string out;
  out.reserve(body.size() + agent_id.size() + 24);
  out.append(body);
  out.push_back(static_cast<char>((1 << 3) | 2));  // agent_id: field 1, length-delimited
  put_varint(out, agent_id.size());
  out.append(agent_id);
  out.push_back(static_cast<char>(2 << 3));  // seq: field 2, varint
  put_varint(out, seq);
  out.push_back(static_cast<char>(5 << 3));  // collected_at: field 5, varint
  put_varint(out, static_cast<uint64_t>(collected_at_ns));
  return out;
}

Result<std::string> event_to_json(std::string_view event_bytes) {
  v1::Event event;
  if (!event.ParseFromArray(event_bytes.data(), static_cast<int>(event_bytes.size()))) {
    return bad("stored event does not parse as outpost.v1.Event");
  }
  return event_to_json(std::move(event));
}

Result<std::string> event_to_json(v1::Event event) {
  std::string raw;
  if (event.payload_case() == v1::Event::kJson && inline_json(event.json())) {
    raw = event.json();
    event.clear_json();
  }
  pb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string out;
  if (!pb::util::MessageToJsonString(event, &out, options).ok()) {
    return bad("event cannot be shown as JSON");
  }
  if (!raw.empty()) {
    out.pop_back();  // '}'
    if (out.size() > 1) out.push_back(',');
    out += "\"json\":";
    out += raw;
    out.push_back('}');
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
