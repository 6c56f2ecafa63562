// The gateway's configuration: the documented example loads as it is, overrides apply, and
// bad values are errors that name the key.
#include "gateway/config.hpp"

#include <doctest/doctest.h>

using namespace outpost;
using namespace outpost::gateway;

TEST_CASE("deploy/gateway.toml loads as it is, with the documented defaults") {
  auto doc = ConfigDoc::parse_file(OUTPOST_SOURCE_DIR "/deploy/gateway.toml");
  REQUIRE_MESSAGE(doc, (doc ? "" : doc.error().message));
  auto c = load_gateway_config(*doc);
  REQUIRE_MESSAGE(c, (c ? "" : c.error().message));
  CHECK(c->listen_port == 7443);
  CHECK(c->http_address == "127.0.0.1");
  CHECK(c->limits.max_frame_bytes == 16u << 20);
  CHECK(c->limits.handshake_timeout_ns == 10'000'000'000);
  CHECK(c->file_sink.rotate_bytes == 64u << 20);
  CHECK_FALSE(c->identity_from_uri_san);
}

TEST_CASE("overrides apply; bad values and unknown keys name the key") {
  auto doc = ConfigDoc::parse_string("", "g.toml");
  REQUIRE(doc);
  REQUIRE(doc->set_override("gateway.listen=\"[::]:0\""));
  REQUIRE(doc->set_override("limits.device_events_per_second=500"));
  auto c = load_gateway_config(*doc);
  REQUIRE_MESSAGE(c, (c ? "" : c.error().message));
  CHECK(c->listen_address == "::");
  CHECK(c->listen_port == 0);
  CHECK(c->limits.device_burst_events == 10'000);  // max(rate, 10000)

  auto bad_port = ConfigDoc::parse_string("[gateway]\nlisten = \"0.0.0.0:99999\"\n", "g.toml");
  auto r1 = load_gateway_config(*bad_port);
  REQUIRE_FALSE(r1);
  CHECK(r1.error().message.find("gateway.listen") != std::string::npos);
  CHECK(r1.error().message.find("HOST:PORT") != std::string::npos);

  auto typo = ConfigDoc::parse_string("[limits]\nmax_conections = 5\n", "g.toml");
  auto r2 = load_gateway_config(*typo);
  REQUIRE_FALSE(r2);
  CHECK(r2.error().message.find("max_conections") != std::string::npos);

  auto small = ConfigDoc::parse_string("[limits]\nmax_frame_bytes = 10\n", "g.toml");
  auto r3 = load_gateway_config(*small);
  REQUIRE_FALSE(r3);
  CHECK(r3.error().message.find("limits.max_frame_bytes") != std::string::npos);
}

TEST_CASE("a gateway reload: limits, log level and rotation change; the rest takes a restart") {
  auto read = [](const std::string& text) {
    auto doc = ConfigDoc::parse_string(text, "gateway.toml");
    REQUIRE(doc);
    auto c = load_gateway_config(*doc);
    REQUIRE_MESSAGE(c, (c ? "" : c.error().describe()));
    return std::make_pair(doc->settings(), *c);
  };
  auto [s0, c0] = read("[gateway]\nlisten = \"0.0.0.0:7443\"\n[sink.file]\ndir = \"/tmp/s\"\n");
  auto [s1, c1] = read(
      "[gateway]\nlisten = \"0.0.0.0:7444\"\nlog_level = \"debug\"\n"
      "[limits]\ndevice_events_per_second = 100\ndevice_burst_events = 200\n"
      "[sink.file]\ndir = \"/tmp/other\"\nrotate_bytes = \"1MiB\"\nrotate_age = \"10s\"\n");
  GatewayReload r = plan_gateway_reload(s0, c0, s0, s1, c1);
  CHECK(r.restart_only == std::vector<std::string>{"gateway.listen", "sink.file.dir"});
  CHECK(r.config.listen_port == 7443);
  CHECK(r.config.file_sink.dir == "/tmp/s");
  CHECK(r.config.log_level == "debug");
  CHECK(r.config.limits.device_events_per_second == 100);
  CHECK(r.config.limits.device_burst_events == 200);
  CHECK(r.config.file_sink.rotate_bytes == 1u << 20);
  CHECK(r.config.file_sink.rotate_age_ns == 10'000'000'000);
  CHECK(r.changed.size() == 7);
}
