#include <doctest/doctest.h>

#include <fstream>

#include "agent/config.hpp"
#include "common/errc.hpp"
#include "tests/support/temp_dir.hpp"

using namespace outpost;
using namespace outpost::agent;

TEST_CASE("defaults: durable, pixel hits drop oldest, sensors and JSON are refused when full") {
  auto doc = ConfigDoc::empty("defaults");
  auto c = load_agent_config(doc);
  REQUIRE(c);
  CHECK(c->buffer.synchronous == Synchronous::full);
  CHECK(c->buffer.max_bytes == 1ULL << 30);
  CHECK(c->buffer.kinds[kind_index(EventKind::pixel)].policy == FullPolicy::drop_oldest);
  CHECK(c->buffer.kinds[kind_index(EventKind::sensor)].policy == FullPolicy::reject);
  CHECK(c->buffer.kinds[kind_index(EventKind::json)].policy == FullPolicy::reject);
  CHECK(c->buffer.commit_interval_ns <= 10'000'000);
  CHECK_FALSE(c->agent_id.empty());
}

TEST_CASE("the documented example in deploy/ loads as it is") {
  auto doc = ConfigDoc::parse_file(OUTPOST_SOURCE_DIR "/deploy/agent.toml");
  REQUIRE_MESSAGE(doc, (doc ? "" : doc.error().message));
  auto c = load_agent_config(*doc);
  REQUIRE_MESSAGE(c, (c ? "" : c.error().message));
  CHECK(c->buffer.path == "/var/lib/outpost/buffer.db");
  CHECK_FALSE(c->uplink.enabled);  // endpoints = "": buffer only
  CHECK(c->uplink.forwarder.window == 8);
}

TEST_CASE("uplink endpoints: a list in failover order, and a clear error for a bad one") {
  auto doc = ConfigDoc::parse_string(
      "[uplink]\nendpoints = \"gw1.example.com:7443, 10.0.0.2:7443\"\n", "a.toml");
  auto c = load_agent_config(*doc);
  REQUIRE_MESSAGE(c, (c ? "" : c.error().message));
  CHECK(c->uplink.enabled);
  REQUIRE(c->uplink.forwarder.endpoints.size() == 2);
  CHECK(c->uplink.forwarder.endpoints[1] == "10.0.0.2:7443");
  auto bad = ConfigDoc::parse_string("[uplink]\nendpoints = \"gw1.example.com\"\n", "a.toml");
  auto r = load_agent_config(*bad);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("uplink.endpoints") != std::string::npos);
}

TEST_CASE("per-kind settings and their errors") {
  auto doc = ConfigDoc::parse_string(
      "[buffer.kinds.sensor]\npolicy = \"drop_oldest\"\nmax_age = \"2d\"\n", "a.toml");
  auto c = load_agent_config(*doc);
  REQUIRE(c);
  CHECK(c->buffer.kinds[kind_index(EventKind::sensor)].policy == FullPolicy::drop_oldest);
  CHECK(c->buffer.kinds[kind_index(EventKind::sensor)].max_age_ns == 2 * 86'400'000'000'000);

  auto bad_kind = ConfigDoc::parse_string("[buffer.kinds.video]\npolicy = \"reject\"\n", "a.toml");
  auto r = load_agent_config(*bad_kind);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("buffer.kinds.video is not a kind") != std::string::npos);

  auto bad_policy =
      ConfigDoc::parse_string("[buffer.kinds.pixel]\npolicy = \"drop_newest\"\n", "a.toml");
  r = load_agent_config(*bad_policy);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("buffer.kinds.pixel.policy") != std::string::npos);
  CHECK(r.error().message.find("reject, drop_oldest") != std::string::npos);

  auto slow = ConfigDoc::parse_string("[buffer]\ncommit_interval = \"1s\"\n", "a.toml");
  r = load_agent_config(*slow);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("buffer.commit_interval") != std::string::npos);
  CHECK(r.error().message.find("10ms") != std::string::npos);
}
