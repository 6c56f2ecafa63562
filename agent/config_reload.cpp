// What a reload changes in a running agent (docs/configuration.md, "Reload"). The sources,
// the uplink's settings and the log level change in place; the settings below take a restart,
// because what they configure is open for the agent's whole run: the buffer file and its
// writer, the identity its events are stamped with, the status listener, the relay's server,
// and the edge validator the sources append through.
#include "agent/config.hpp"

namespace outpost::agent {
namespace {

const std::vector<std::string> kRestartOnly = {"agent.id", "agent.http_listen", "buffer", "relay",
                                               "contracts"};

}  // namespace

AgentReload plan_agent_reload(const ConfigSettings& started, const AgentConfig& running,
                              const ConfigSettings& last, const ConfigSettings& next_settings,
                              AgentConfig next) {
  AgentReload out;
  out.changed = changed_settings(last, next_settings);
  out.restart_only = changed_settings(started, next_settings, kRestartOnly);
  // The MQTT client id defaults to one made from agent.id: it stays with the running id too.
  if (next.agent_id != running.agent_id &&
      next.mqtt.options.client_id == "outpost-" + next.agent_id) {
    next.mqtt.options.client_id = "outpost-" + running.agent_id;
  }
  next.agent_id = running.agent_id;
  next.http_host = running.http_host;
  next.http_port = running.http_port;
  next.http_enabled = running.http_enabled;
  next.buffer = running.buffer;
  next.relay = running.relay;
  next.validate_at_edge = running.validate_at_edge;
  next.contracts = running.contracts;
  next.uplink.forwarder.agent_id = running.agent_id;
  // The forwarder is made at start, or not at all: turning the uplink on or off takes a
  // restart; while it is on, every uplink setting reloads.
  if (next.uplink.enabled != running.uplink.enabled) {
    out.restart_only.push_back(running.uplink.enabled ? "uplink.endpoints (emptied)"
                                                      : "uplink.endpoints (set)");
    next.uplink = running.uplink;
  }
  out.config = std::move(next);
  return out;
}

}  // namespace outpost::agent
