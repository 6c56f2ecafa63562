// Framing round trips, and every malformed-frame case: oversized length (refused before the
// body arrives), garbage protobuf, an empty frame, truncation, byte-by-byte delivery; and the
// batch payload decoder's checks.
#include "uplink/frame.hpp"

#include "proto/event_codec.hpp"
#include "tests/support/event_list.hpp"

#include <doctest/doctest.h>

#include <random>

using namespace outpost;
using namespace outpost::wire;

namespace {

v1::Frame batch_frame(uint64_t batch_seq, size_t payload_bytes) {
  v1::Frame f;
  auto* b = f.mutable_batch();
  b->set_batch_seq(batch_seq);
  b->set_first_seq(10);
  b->set_last_seq(19);
  b->set_event_count(10);
  b->set_codec(v1::CODEC_ZSTD);
  b->set_payload(std::string(payload_bytes, 'p'));
  return f;
}

std::string event_bytes(uint64_t seq) {
  v1::Event e;
  e.set_agent_id("dev-1");
  e.set_seq(seq);
  e.set_kind(v1::EVENT_KIND_JSON);
  e.set_json("{\"n\":" + std::to_string(seq) + "}");
  return e.SerializeAsString();
}

}  // namespace

TEST_CASE("every frame type round-trips, fed whole or one byte at a time") {
  std::vector<v1::Frame> frames(7);
  frames[0].mutable_hello()->set_agent_id("dev-1");
  frames[0].mutable_hello()->add_codecs(v1::CODEC_ZSTD);
  frames[1].mutable_welcome()->set_max_frame_bytes(1 << 20);
  frames[2] = batch_frame(3, 1000);
  frames[3].mutable_ack()->set_batch_seq(3);
  frames[3].mutable_ack()->set_status(v1::Ack::OK);
  frames[4].mutable_ping()->set_nonce(9);
  frames[5].mutable_pong()->set_nonce(9);
  frames[6].mutable_goodbye()->set_reason("replaced by a newer session");
  std::string stream;
  for (const auto& f : frames) append_frame(stream, f);

  for (bool bytewise : {false, true}) {
    CAPTURE(bytewise);
    FrameDecoder d(1 << 20);
    std::vector<v1::Frame> got;
    auto drain = [&] {
      while (true) {
        auto r = d.next();
        REQUIRE(r);
        if (!*r) break;
        got.push_back(std::move(**r));
      }
    };
    if (bytewise) {
      for (char c : stream) {
        d.feed(std::string_view(&c, 1));
        drain();
      }
    } else {
      d.feed(stream);
      drain();
    }
    REQUIRE(got.size() == frames.size());
    for (size_t i = 0; i < frames.size(); ++i) {
      CHECK(got[i].SerializeAsString() == frames[i].SerializeAsString());
    }
    CHECK(d.finish());
    CHECK(d.buffered_bytes() == 0);
  }
}

TEST_CASE("an oversized length is refused from the 4-byte prefix alone") {
  FrameDecoder d(1000);
  std::string prefix = encode_frame(batch_frame(1, 5000)).substr(0, kLengthPrefixBytes);
  d.feed(prefix);  // the body never needs to arrive
  auto r = d.next();
  REQUIRE_FALSE(r);
  CHECK(r.error().code == wire_errc::frame_too_large);
  CHECK(r.error().message.find("exceeds the limit of 1000") != std::string::npos);

  FrameDecoder huge(1 << 20);
  huge.feed(std::string("\xff\xff\xff\xff", 4));  // 4 GiB claimed
  auto r2 = huge.next();
  REQUIRE_FALSE(r2);
  CHECK(r2.error().code == wire_errc::frame_too_large);
}

TEST_CASE("garbage protobuf and an empty frame are bad frames") {
  FrameDecoder d(1000);
  d.feed(std::string("\x00\x00\x00\x05\xff\xff\xff\xff\xff", 9));
  auto r = d.next();
  REQUIRE_FALSE(r);
  CHECK(r.error().code == wire_errc::bad_frame);

  FrameDecoder e(1000);
  e.feed(std::string("\x00\x00\x00\x00", 4));  // a valid, empty Frame: no message in it
  auto r2 = e.next();
  REQUIRE_FALSE(r2);
  CHECK(r2.error().code == wire_errc::bad_frame);
  CHECK(r2.error().message.find("no message") != std::string::npos);
}

TEST_CASE("a stream that ends inside a frame is truncated") {
  std::string whole = encode_frame(batch_frame(1, 100));
  for (size_t cut : {size_t{1}, size_t{3}, size_t{4}, whole.size() - 1}) {
    CAPTURE(cut);
    FrameDecoder d(1000);
    d.feed(std::string_view(whole).substr(0, cut));
    auto r = d.next();
    REQUIRE(r);
    CHECK_FALSE(*r);
    auto end = d.finish();
    REQUIRE_FALSE(end);
    CHECK(end.error().code == wire_errc::truncated);
  }
}

TEST_CASE("random bytes never crash the decoder, and it holds at most one frame plus a read") {
  std::mt19937 rng(5);
  for (int i = 0; i < 3000; ++i) {
    FrameDecoder d(4096);
    std::string noise(rng() % 200, '\0');
    for (char& c : noise) c = static_cast<char>(rng());
    d.feed(noise);
    for (int k = 0; k < 10; ++k) {
      auto r = d.next();
      if (!r || !*r) break;
    }
    CHECK(d.buffered_bytes() <= noise.size());
  }
}

TEST_CASE("a batch payload decodes to its events and is checked against its header") {
  std::string payload;
  for (uint64_t seq = 10; seq <= 19; ++seq) proto::append_delimited(payload, event_bytes(seq));
  auto events = decode_payload(payload, 10, 10, 19);
  REQUIRE_MESSAGE(events, (events ? "" : events.error().message));
  REQUIRE(events->size() == 10);
  CHECK(events->front().seq == 10);
  v1::Event last;
  REQUIRE(last.ParseFromString(std::string(events->back().bytes)));
  CHECK(last.json() == "{\"n\":19}");
  CHECK(events->back().seq == 19);
  CHECK(events->back().kind == v1::EVENT_KIND_JSON);

  auto wrong_count = decode_payload(payload, 9, 10, 19);
  REQUIRE_FALSE(wrong_count);
  CHECK(wrong_count.error().code == wire_errc::bad_batch);
  CHECK_FALSE(decode_payload(payload, 11, 10, 20));                // fewer than declared
  CHECK_FALSE(decode_payload(payload, 10, 11, 19));                // seq 10 outside the range
  CHECK_FALSE(decode_payload(payload, 10, 10, 18));                // seq 19 outside the range
  CHECK_FALSE(decode_payload(payload, 0, 10, 19));                 // empty batch
  CHECK_FALSE(decode_payload(payload.substr(0, 50), 10, 10, 19));  // truncated event
  CHECK_FALSE(decode_payload(payload + "\x05zz", 10, 10, 19));     // trailing garbage

  std::string repeated;
  proto::append_delimited(repeated, event_bytes(5));
  proto::append_delimited(repeated, event_bytes(5));
  auto dup = decode_payload(repeated, 2, 1, 9);
  REQUIRE_FALSE(dup);
  CHECK(dup.error().message.find("not increasing") != std::string::npos);

  v1::Event not_utf8;  // well framed, but protobuf's parser would refuse it
  not_utf8.set_seq(1);
  not_utf8.set_schema("\xc0\x80");
  std::string refused;
  proto::append_delimited(refused, not_utf8.SerializeAsString());
  auto bad_event = decode_payload(refused, 1, 1, 1);
  REQUIRE_FALSE(bad_event);
  CHECK(bad_event.error().message.find("event 0 is not an outpost.v1.Event") != std::string::npos);
  CHECK(bad_event.error().message.find("UTF-8") != std::string::npos);
}

TEST_CASE("a header's event count cannot make the decoder reserve more than the payload holds") {
  std::string payload;
  for (uint64_t seq = 1; seq <= 3; ++seq) proto::append_delimited(payload, event_bytes(seq));
  auto events = decode_payload(payload, 4'000'000'000u, 1, UINT64_MAX);
  REQUIRE_FALSE(events);  // an error, not an allocation of 4 billion slots
  CHECK(events.error().message.find("holds 3 events") != std::string::npos);
}

TEST_CASE("an EventList moves without copying, copies, and erases a range") {
  std::string payload;
  for (uint64_t seq = 1; seq <= 6; ++seq) proto::append_delimited(payload, event_bytes(seq));
  auto decoded = decode_payload(payload, 6, 1, 6);
  REQUIRE(decoded);
  EventList list = std::move(*decoded);
  const char* first = list[0].bytes.data();
  EventList moved = std::move(list);
  CHECK(moved[0].bytes.data() == first);  // the same bytes: the payload moved with the list
  EventList copy = moved;
  REQUIRE(copy.size() == 6);
  CHECK(copy[0].bytes.data() != first);
  CHECK(copy[0].bytes == moved[0].bytes);
  copy.erase(copy.begin(), copy.begin() + 4);
  REQUIRE(copy.size() == 2);
  CHECK(copy.front().seq == 5);
  uint64_t sum = 0;
  for (const EventView e : moved) sum += e.seq;
  CHECK(sum == 21);
  EventList pushed;
  CHECK(pushed.empty());
  v1::Event e;
  e.set_seq(6);
  e.set_kind(v1::EVENT_KIND_SENSOR);
  e.set_schema("s.v2");
  e.set_collected_at(77);
  test::push_event(pushed, e);
  CHECK(pushed.front().seq == 6);
  CHECK(pushed.front().kind == v1::EVENT_KIND_SENSOR);
  CHECK(pushed.front().schema == "s.v2");
  CHECK(pushed.front().collected_at == 77);
  CHECK(pushed.front().bytes == e.SerializeAsString());
}
