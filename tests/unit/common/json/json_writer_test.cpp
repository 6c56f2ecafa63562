#include "common/json/json_writer.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <limits>
#include <string>

using namespace outpost;

namespace {

// The escaping rule, one character at a time: what quote() must produce.
std::string expected_quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

}  // namespace

TEST_CASE("strings are escaped exactly, wherever the special byte falls in an 8-byte word") {
  const std::string specials = std::string("\"\\\n\t\r\x01\x1f", 7) + "\x7f\xc3\xa4 ";
  for (size_t length = 0; length <= 24; ++length) {
    for (size_t at = 0; at < length; ++at) {
      for (char special : specials) {
        std::string s(length, 'a');
        s[at] = special;
        JsonWriter w;
        w.value(s);
        REQUIRE_MESSAGE(w.str() == expected_quote(s), "length " << length << " at " << at);
      }
    }
  }
  // UTF-8 and bytes above 0x7f pass unchanged; every byte value once.
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  JsonWriter w;
  w.value(all);
  CHECK(w.str() == expected_quote(all));
}

TEST_CASE("commas, nesting beyond 64 levels, and integers quoted or not") {
  JsonWriter w;
  w.begin_object()
      .key("a")
      .value(int64_t{-5})
      .key("b")
      .quoted(std::numeric_limits<uint64_t>::max());
  w.key("c").begin_array();
  for (int i = 0; i < 70; ++i) w.begin_array().value(uint32_t{1});
  for (int i = 0; i < 70; ++i) w.end_array();
  w.value(true).end_array().key("d").quoted(int64_t{-1}).end_object();
  // Each inner array holds 1 and the next array: [1,[1,[1,...]]]
  std::string inner;
  for (int i = 0; i < 70; ++i) inner += i == 0 ? "[1" : ",[1";
  inner += std::string(70, ']');
  CHECK(w.str() ==
        "{\"a\":-5,\"b\":\"18446744073709551615\",\"c\":[" + inner + ",true],\"d\":\"-1\"}");
}

TEST_CASE("a known key is written like key() writes it, separators included") {
  JsonWriter a, b;
  a.begin_object().key("agent_id").value("x").key("seq").quoted(uint64_t{7}).end_object();
  b.begin_object().known_key("agent_id").value("x").known_key("seq").quoted(uint64_t{7});
  b.end_object();
  CHECK(a.str() == R"({"agent_id":"x","seq":"7"})");
  CHECK(b.str() == a.str());
}

// The writer stages text in a 512-byte buffer and hands it to the string when it fills:
// tokens that end exactly at, straddle, or exceed that size, with and without escapes, must
// come out whole and in order; and the target holds everything once the writer is gone.
TEST_CASE("text staged across the writer's buffer comes out whole, in order") {
  std::string expected = "[";
  std::string target = "before:";
  {
    JsonWriter w(target);
    w.begin_array();
    for (size_t n : {0, 1, 7, 200, 505, 508, 509, 510, 511, 512, 513, 900, 1500}) {
      for (bool escaped : {false, true}) {
        std::string s(n, 'x');
        if (escaped && n > 0) s[n / 2] = '\n';
        if (expected.size() > 1) expected += ',';
        expected += expected_quote(s);
        w.value(s);
        w.value(static_cast<int64_t>(n));
        expected += "," + std::to_string(n);
        w.raw(std::string(n, '1'));
        expected += "," + std::string(n, '1');
      }
    }
    w.end_array();
    expected += "]";
  }
  CHECK(target == "before:" + expected);
  JsonWriter own;
  own.begin_object().key(std::string(700, 'k')).value("v").end_object();
  CHECK(own.str() == "{\"" + std::string(700, 'k') + "\":\"v\"}");
}
