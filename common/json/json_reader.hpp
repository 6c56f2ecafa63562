#pragma once
// Reading JSON without building a document: a strict RFC 8259 check of a value (the gateway's
// hot path decides with it whether a `json` payload is written inline), the objects of an HTTP
// body, and single top-level members of an object (the MQTT source's `value`, `unit`, `ts`;
// the HTTP source's schema field; the JSON form's `json` member). Nothing here knows the
// contracts: proto/ and agent/ call it, it calls nothing above common/.
//
// Thread-safety: pure functions over their arguments.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace outpost::json {

inline bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// A strict RFC 8259 check of one JSON value, with UTF-8 validation and a depth limit.
bool valid_json_value(std::string_view text);
// A valid JSON object or array (leading whitespace allowed): how a `json` payload is shown
// inline in the JSON form; anything else keeps protobuf's base64, so import can tell them apart.
bool json_object_or_array(std::string_view raw);

// The JSON events of an HTTP body: one object, or an array of at most `max_events` objects.
// Each returned span is one object, byte for byte. The error (common_errc::bad_input) names
// the problem for a 400.
Result<std::vector<std::string_view>> split_json_events(std::string_view body, size_t max_events);

// Where a top-level member is in an object: from its key's opening quote to its value's end,
// and the value alone.
struct MemberSpan {
  size_t begin, end;
  size_t value_begin, value_end;
};
// The member named `key` of the object `object`: nullopt when absent. `*is_object` is false
// when `object` is not one JSON object (or names the key twice); the values are not checked.
std::optional<MemberSpan> find_member(std::string_view object, std::string_view key,
                                      bool* is_object);
// The raw text of a top-level member's value in a JSON object (a number, a string with its
// quotes, an object...); nullopt when absent or when `object` is not a JSON object.
std::optional<std::string_view> json_member(std::string_view object, std::string_view key);
// A top-level string member of a JSON object (simple escapes decoded); nullopt when absent
// or not a string.
std::optional<std::string> json_string_member(std::string_view object, std::string_view key);

}  // namespace outpost::json
