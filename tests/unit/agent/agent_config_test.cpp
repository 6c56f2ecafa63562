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

namespace {

struct Read {
  ConfigSettings settings;
  AgentConfig config;
};
Read read_agent(const std::string& text) {
  auto doc = ConfigDoc::parse_string(text, "agent.toml");
  REQUIRE(doc);
  auto c = load_agent_config(*doc);
  REQUIRE_MESSAGE(c, (c ? "" : c.error().describe()));
  return {doc->settings(), *c};
}

}  // namespace

TEST_CASE("changed_settings: by key and by table, set in one only, quoted and nested") {
  auto a = ConfigDoc::parse_string(
      "[agent]\nid = \"a\"\nidle = 1\n[buffer]\nmax_bytes = \"1GiB\"\n"
      "[buffer.kinds.pixel]\npolicy = \"reject\"\n",
      "a.toml");
  auto b = ConfigDoc::parse_string(
      "[agent]\nid = \"a\"\nidle = 2\n[buffer]\nmax_bytes = \"2GiB\"\n"
      "[buffer.kinds.pixel]\npolicy = \"drop_oldest\"\n[uplink]\nrate_limit = \"1MiB\"\n",
      "b.toml");
  REQUIRE(a);
  REQUIRE(b);
  CHECK(changed_settings(a->settings(), b->settings()) ==
        std::vector<std::string>{"agent.idle", "buffer.kinds.pixel.policy", "buffer.max_bytes",
                                 "uplink.rate_limit"});
  // "agent.id" is the key, not a prefix of agent.idle; "buffer" is the table.
  CHECK(changed_settings(a->settings(), b->settings(), {"agent.id"}).empty());
  CHECK(changed_settings(a->settings(), b->settings(), {"buffer"}).size() == 2);
  CHECK(changed_settings(b->settings(), a->settings(), {"uplink"}) ==
        std::vector<std::string>{"uplink.rate_limit"});  // removed counts too
  CHECK(changed_settings(a->settings(), a->settings()).empty());
}

TEST_CASE("an agent reload: sources and uplink change, restart-only settings keep their values") {
  const std::string base =
      "[agent]\nid = \"dev-1\"\n[buffer]\npath = \"/tmp/a.db\"\n"
      "[uplink]\nendpoints = \"127.0.0.1:7443\"\n"
      "[sources.http]\nenabled = true\nlisten = \"127.0.0.1:8080\"\n";
  Read started = read_agent(base);
  Read next = read_agent(
      "[agent]\nid = \"dev-2\"\nlog_level = \"debug\"\n[buffer]\npath = \"/tmp/b.db\"\n"
      "max_bytes = \"10MiB\"\n"
      "[uplink]\nendpoints = \"127.0.0.1:7444\"\nrate_limit = \"64KiB\"\n"
      "[sources.http]\nenabled = true\nlisten = \"127.0.0.1:8080\"\n"
      "[sources.spool]\nenabled = true\ndirectory = \"/tmp/spool\"\nschema = \"order.v1\"\n");
  AgentReload r = plan_agent_reload(started.settings, started.config, started.settings,
                                    next.settings, next.config);
  CHECK(r.restart_only == std::vector<std::string>{"agent.id", "buffer.max_bytes", "buffer.path"});
  CHECK(r.config.agent_id == "dev-1");
  CHECK(r.config.uplink.forwarder.agent_id == "dev-1");
  CHECK(r.config.buffer.path == "/tmp/a.db");
  CHECK(r.config.buffer.max_bytes == started.config.buffer.max_bytes);
  // What reloads takes the new values.
  CHECK(r.config.log_level == "debug");
  CHECK(r.config.uplink.forwarder.endpoints == std::vector<std::string>{"127.0.0.1:7444"});
  CHECK(r.config.uplink.forwarder.rate_limit_bytes_per_s == 64 * 1024);
  CHECK(r.config.spool.enabled);
  CHECK(r.config.http == started.config.http);  // unchanged: the source keeps running
  // The MQTT client id made from agent.id stays with the running id.
  Read mqtt = read_agent(base + "[sources.mqtt]\nenabled = true\n");
  Read mqtt_next = read_agent(
      "[agent]\nid = \"dev-9\"\n[buffer]\npath = \"/tmp/a.db\"\n"
      "[uplink]\nendpoints = \"127.0.0.1:7443\"\n"
      "[sources.http]\nenabled = true\nlisten = \"127.0.0.1:8080\"\n"
      "[sources.mqtt]\nenabled = true\n");
  AgentReload m = plan_agent_reload(mqtt.settings, mqtt.config, mqtt.settings, mqtt_next.settings,
                                    mqtt_next.config);
  CHECK(m.config.mqtt == mqtt.config.mqtt);
  CHECK(m.restart_only == std::vector<std::string>{"agent.id"});
  CHECK(r.changed.size() == 9);

  // The restart-only keys are compared with the start: a second reload still says so, and the
  // changes are counted from the last read.
  AgentReload again =
      plan_agent_reload(started.settings, r.config, next.settings, next.settings, next.config);
  CHECK(again.restart_only.size() == 3);
  CHECK(again.changed.empty());

  // Turning the uplink off takes a restart: the running uplink stays.
  Read off = read_agent(
      "[agent]\nid = \"dev-1\"\n[buffer]\npath = \"/tmp/a.db\"\n"
      "[sources.http]\nenabled = true\nlisten = \"127.0.0.1:8080\"\n");
  AgentReload o = plan_agent_reload(started.settings, started.config, started.settings,
                                    off.settings, off.config);
  CHECK(o.restart_only == std::vector<std::string>{"uplink.endpoints (emptied)"});
  CHECK(o.config.uplink.enabled);
  CHECK(o.config.uplink.forwarder.endpoints == std::vector<std::string>{"127.0.0.1:7443"});
}
