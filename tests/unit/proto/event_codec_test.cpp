#include <doctest/doctest.h>

#include <cmath>
#include <limits>
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

TEST_CASE("a stamped event appended length-delimited equals stamping then delimiting") {
  for (uint64_t i = 0; i < 3; ++i) {
    NewEvent e = agent::synthetic_event(i, 123);
    for (uint64_t seq : {uint64_t{1}, uint64_t{300}, uint64_t{1} << 40}) {
      std::string expected = "x";
      proto::append_delimited(expected, proto::stamp(e.body, "edge-7", seq, 1'700'000'000'000));
      std::string got = "x";
      proto::append_stamped_delimited(got, e.body, "edge-7", seq, 1'700'000'000'000);
      CHECK(got == expected);
    }
  }
}

TEST_CASE("JSON: a json payload is shown inline, and the line imports back to the same body") {
  for (uint64_t i = 0; i < 3; ++i) {
    NewEvent e = agent::synthetic_event(i, 1'700'000'000'000'000'000);
    auto json = proto::event_to_json(proto::stamp(e.body, "edge-7", 9, 10));
    REQUIRE(json);
    CHECK(json->find("\"agent_id\":\"edge-7\"") != std::string::npos);
    if (e.kind == EventKind::json)
      CHECK(json->find("\"json\":{\"order_id\":\"north-17-2\"") != std::string::npos);
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

TEST_CASE("the hand-written JSON form reads back to the same event, for every field") {
  std::vector<v1::Event> events(6);
  for (auto& e : events) {
    e.set_agent_id("dev-\xc3\xa9\"1\\");  // UTF-8, a quote and a backslash
    e.set_seq(18'446'744'073'709'551'615ULL);
    e.set_event_time(-5);
    e.set_collected_at(1'790'000'000'000'000'000);
    e.set_schema("s.v1");
    e.set_priority(-3);
    (*e.mutable_attributes())["b"] = "2\n";
    (*e.mutable_attributes())["a"] = "\x01";
  }
  events[0].set_kind(v1::EVENT_KIND_PIXEL);
  auto* p = events[0].mutable_pixel();
  p->set_site_id("site");
  (*p->mutable_query())["utm"] = "x y";
  p->set_user_agent("Mozilla/5.0");
  p->set_client_ip("192.0.2.0");
  p->set_path("/p.gif");
  events[1].set_kind(v1::EVENT_KIND_SENSOR);
  events[1].mutable_sensor()->set_number(0.1);
  events[1].mutable_sensor()->set_unit("C");
  events[2].set_kind(v1::EVENT_KIND_SENSOR);
  events[2].mutable_sensor()->set_number(std::numeric_limits<double>::quiet_NaN());
  events[3].set_kind(v1::EVENT_KIND_SENSOR);
  events[3].mutable_sensor()->set_raw(std::string("\x00\xff\x10", 3));
  events[3].mutable_sensor()->set_raw_payload(true);
  events[4].set_kind(v1::EVENT_KIND_JSON);
  events[4].set_json("{\"a\":[1,2.5e3,true,null,\"\\u00e9\"]}");
  events[5].set_kind(v1::EVENT_KIND_JSON);
  events[5].set_json("{\"unterminated\": ");
  for (size_t i = 0; i < events.size(); ++i) {
    CAPTURE(i);
    auto line = proto::event_to_json(events[i].SerializeAsString());
    REQUIRE_MESSAGE(line, (line ? "" : line.error().message));
    CAPTURE(*line);
    std::string agent;
    auto back = proto::event_from_json(*line, &agent);
    REQUIRE_MESSAGE(back, (back ? "" : back.error().message));
    CHECK(agent == events[i].agent_id());
    v1::Event expected = events[i];
    expected.clear_agent_id();
    expected.clear_seq();
    expected.clear_collected_at();
    v1::Event got;
    REQUIRE(got.ParseFromString(back->body));
    if (i == 2) {  // NaN != NaN: compare the rest
      CHECK(std::isnan(got.sensor().number()));
      got.mutable_sensor()->clear_number();
      expected.mutable_sensor()->clear_number();
    }
    CHECK(google::protobuf::util::MessageDifferencer::Equals(got, expected));
  }
  // Inline only when the payload is valid JSON; otherwise base64.
  CHECK(proto::event_to_json(events[4].SerializeAsString())->find("\"json\":{\"a\"") !=
        std::string::npos);
  CHECK(proto::event_to_json(events[5].SerializeAsString())->find("\"json\":\"") !=
        std::string::npos);
  v1::Event deep;
  deep.set_json(std::string(500, '[') + std::string(500, ']'));
  CHECK(proto::event_to_json(deep.SerializeAsString())->find("\"json\":\"") != std::string::npos);
  v1::Event bad_utf8;
  bad_utf8.set_json("{\"k\":\"\xff\"}");
  CHECK(proto::event_to_json(bad_utf8.SerializeAsString())->find("\"json\":\"") !=
        std::string::npos);
  for (const char* forbidden : {"\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80"}) {
    v1::Event e;  // an overlong NUL, a surrogate, above U+10FFFF: not shown inline
    e.set_json(std::string("{\"k\":\"") + forbidden + "\"}");
    CHECK(proto::event_to_json(e.SerializeAsString())->find("\"json\":\"") != std::string::npos);
  }
}

TEST_CASE("a pixel event encoded by hand parses to the message protobuf would build") {
  const std::vector<std::pair<std::string, std::string>> query = {{"site", "shop-1"},
                                                                  {"utm",
                                                                   "n\xc3\xa4"
                                                                   "chste"},
                                                                  {"empty", ""},
                                                                  {"utm", "last wins"},
                                                                  {"", "no key"}};
  const std::string cookie(300, 'c');  // a length that needs a two-byte varint
  proto::PixelHitFields hit;
  hit.event_time_ns = 1'700'000'000'123'456'789;
  hit.path = "/p.gif";
  hit.site_id = "shop-1";
  hit.query = &query;
  hit.user_agent = "TestBrowser/1.0";
  hit.referer = std::string_view();  // absent: not written
  hit.accept_language = "de-CH";
  hit.client_ip = "203.0.113.0";
  hit.cookie_id = cookie;
  const std::string body = proto::encode_pixel_event(hit);

  v1::Event expected;
  expected.set_kind(v1::EVENT_KIND_PIXEL);
  expected.set_schema("pixel.v1");
  expected.set_event_time(hit.event_time_ns);
  auto* p = expected.mutable_pixel();
  p->set_path("/p.gif");
  p->set_site_id("shop-1");
  for (const auto& [k, v] : query) (*p->mutable_query())[k] = v;
  p->set_user_agent("TestBrowser/1.0");
  p->set_accept_language("de-CH");
  p->set_client_ip("203.0.113.0");
  p->set_cookie_id(cookie);

  v1::Event parsed;
  REQUIRE(parsed.ParseFromString(body));
  CHECK(parsed.pixel().query().at("utm") == "last wins");
  CHECK(parsed.pixel().query().size() == 4);
  std::string diff;
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  CHECK_MESSAGE(differ.Compare(expected, parsed), diff);
  // Same size as protobuf's own encoding: nothing extra, nothing missing.
  CHECK(body.size() == expected.ByteSizeLong());

  // An empty hit still is a pixel event (the oneof is set), and stamping works on it.
  proto::PixelHitFields bare;
  v1::Event stamped;
  REQUIRE(stamped.ParseFromString(proto::stamp(proto::encode_pixel_event(bare), "edge", 7, 8)));
  CHECK(stamped.has_pixel());
  CHECK(stamped.seq() == 7);
}
