// What a reload changes in a running gateway (docs/configuration.md, "Reload"): the log level,
// the shutdown grace, the [limits] and the file sink's rotation change in place; the contracts
// and the TLS files are read again from their paths. Everything else takes a restart: the
// listeners and threads, the identity rules and file paths of TLS, the contracts' settings,
// and the sink (its type, the Kafka producer and its transactional id, the file sink's
// directory and format), which holds the agents' marks and may not change under them.
#include "gateway/config.hpp"

#include <algorithm>

namespace outpost::gateway {
namespace {

const std::vector<std::string> kReloads = {"gateway.log_level", "gateway.shutdown_grace", "limits",
                                           "sink.file.rotate_bytes", "sink.file.rotate_age"};

}  // namespace

GatewayReload plan_gateway_reload(const ConfigSettings& started, const GatewayConfig& running,
                                  const ConfigSettings& last, const ConfigSettings& next_settings,
                                  const GatewayConfig& next) {
  GatewayReload out;
  out.changed = changed_settings(last, next_settings);
  const std::vector<std::string> reloads = changed_settings(started, next_settings, kReloads);
  for (const std::string& key : changed_settings(started, next_settings)) {
    if (std::find(reloads.begin(), reloads.end(), key) == reloads.end()) {
      out.restart_only.push_back(key);
    }
  }
  out.config = running;
  out.config.log_level = next.log_level;
  out.config.shutdown_grace_ns = next.shutdown_grace_ns;
  out.config.limits = next.limits;
  out.config.file_sink.rotate_bytes = next.file_sink.rotate_bytes;
  out.config.file_sink.rotate_age_ns = next.file_sink.rotate_age_ns;
  return out;
}

}  // namespace outpost::gateway
