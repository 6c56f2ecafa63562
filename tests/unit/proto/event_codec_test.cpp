#include <doctest/doctest.h>

#include <sstream>

#include <google/protobuf/util/message_differencer.h>
#include "agent/generator/synthetic_generator.hpp"

#include "outpost/v1/event.pb.h"
#include "proto/event_codec.hpp"

using namespace outpost;

TEST_CASE("stamp adds identity without re-encoding: the result parses as the full event") {
  NewEvent e = agent::synthetic_event(2, 123);
  std::string full = proto::stamp(e.body, "edge-7", 42, 456);
  v1::Event parsed;
  REQUIRE(parsed.ParseFromString(full));
  CHECK(parsed.agent_id() == "edge-7");
  CHECK(parsed.seq() == 42);
  CHECK(parsed.collected_at() == 456);
  CHECK(parsed.event_time() == 123);
  CHECK(parsed.kind() == v1::EVENT_KIND_JSON);
}

TEST_CASE("JSON: a json payload is shown inline, and the line imports back to the same body") {
  for (uint64_t i = 0; i < 3; ++i) {
    NewEvent e = agent::synthetic_event(i, 1'700'000'000'000'000'000);
    auto json = proto::event_to_json(proto::stamp(e.body, "edge-7", 9, 10));
    REQUIRE(json);
    CHECK(json->find("\"agent_id\":\"edge-7\"") != std::string::npos);
    if (e.kind == EventKind::json) CHECK(json->find("\"json\":{\"order\":2") != std::string::npos);
    auto back = proto::event_from_json(*json);
    REQUIRE_MESSAGE(back, (back ? "" : back.error().message));
    CHECK(back->kind == e.kind);
    CHECK(back->priority == e.priority);
    CHECK(back->event_time_ns == e.event_time_ns);
    v1::Event a, b;
    REQUIRE(a.ParseFromString(e.body));
    REQUIRE(b.ParseFromString(back->body));
    // Same content (map entries may serialize in another order), identity cleared.
    CHECK(google::protobuf::util::MessageDifferencer::Equals(a, b));
  }
}

TEST_CASE("a payload that is not a JSON object keeps protobuf's base64 form and round-trips") {
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_JSON);
  e.set_json("\"just a string\"");
  auto json = proto::event_to_json(e.SerializeAsString());
  REQUIRE(json);
  auto back = proto::event_from_json(*json);
  REQUIRE(back);
  v1::Event b;
  REQUIRE(b.ParseFromString(back->body));
  CHECK(b.json() == "\"just a string\"");
}

TEST_CASE("bad lines are refused with a reason") {
  CHECK_FALSE(proto::event_from_json("not json"));
  CHECK_FALSE(proto::event_from_json("{\"kind\":\"EVENT_KIND_JSON\",\"json\":{\"a\":}"));
  CHECK_FALSE(proto::event_from_json("{\"kind\":\"EVENT_KIND_BOGUS\"}"));
  auto no_kind = proto::event_from_json("{\"schema\":\"x\"}");
  REQUIRE_FALSE(no_kind);
  CHECK(no_kind.error().message.find("kind") != std::string::npos);
  CHECK_FALSE(proto::event_from_json("{\"kind\":\"EVENT_KIND_JSON\",\"unknown_field\":1}"));
  CHECK_FALSE(proto::event_from_bytes("\xff\xff\xff"));
}

TEST_CASE("length-delimited framing round-trips and rejects torn or oversized input") {
  std::string out;
  proto::append_delimited(out, "hello");
  proto::append_delimited(out, std::string(300, 'x'));
  std::istringstream in(out);
  auto a = proto::read_delimited(in, 1000);
  auto b = proto::read_delimited(in, 1000);
  auto end = proto::read_delimited(in, 1000);
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(end);
  CHECK(**a == "hello");
  CHECK((*b)->size() == 300);
  CHECK_FALSE(*end);
  std::istringstream torn(out.substr(0, out.size() - 1));
  (void)proto::read_delimited(torn, 1000);
  CHECK_FALSE(proto::read_delimited(torn, 1000));
  std::istringstream big(out);
  CHECK_FALSE(proto::read_delimited(big, 3));
}
