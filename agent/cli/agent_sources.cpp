#include "agent/cli/agent_sources.hpp"

#include <fmt/ranges.h>

#include "agent/generator/synthetic_generator.hpp"
#include "agent/sources/http/http_source.hpp"
#include "agent/sources/mqtt/mqtt_source.hpp"
#include "agent/sources/spool/spool_source.hpp"
#include "common/log.hpp"

namespace outpost::agent {
namespace {

// Takes the source out under the lock and lets it stop outside it: a stopping source finishes
// what it accepted, and /metrics should not wait for that.
template <typename T>
void stop_source(std::mutex& mu, std::unique_ptr<T>& source) {
  std::unique_ptr<T> gone;
  {
    std::lock_guard lock(mu);
    gone = std::move(source);
  }
  gone.reset();
}

// One source moved from `old` to `next` (each with `enabled`).
template <typename Config, typename Start, typename Stop>
void change(const std::string& name, const Config& old, const Config& next, Config& in_use,
            Start start, Stop stop, AgentSources::Applied& out) {
  if (old == next) return;
  if (old.enabled) stop();
  if (!next.enabled) {
    in_use = next;
    if (old.enabled) out.changes.push_back(name + " stopped");
    return;
  }
  auto started = start(next);
  if (started) {
    in_use = next;
    out.changes.push_back(name + (old.enabled ? " restarted with its new settings" : " started"));
    return;
  }
  out.refused.push_back(
      make_error(started.error().code, name + ": the new settings cannot start (" +
                                           started.error().describe() + "); the old ones stay"));
  if (!old.enabled) return;
  if (auto again = start(old); !again) {
    // The old settings worked a moment ago: a port taken in between, say.
    in_use.enabled = false;
    out.refused.push_back(make_error(again.error().code, name +
                                                             ": stopped: it cannot start again "
                                                             "with its old settings either (" +
                                                             again.error().describe() + ")"));
  }
}

}  // namespace

AgentSources::AgentSources(Buffer& buffer, const Clock& clock) : buffer_(buffer), clock_(clock) {}

AgentSources::~AgentSources() { stop(); }

Result<void> AgentSources::start_http(const HttpSourceConfig& c) {
  auto started = HttpSource::start(c.options, buffer_, clock_);
  if (!started) return started.error();
  log::get("agent")->info("HTTP source: pixel at {} and events at {} on {}:{}",
                          fmt::join(c.options.pixel_paths, ", "), c.options.events_path,
                          c.options.host, (*started)->port());
  std::lock_guard lock(mu_);
  http_ = std::move(*started);
  return {};
}

Result<void> AgentSources::start_mqtt(const MqttSourceConfig& c) {
  auto started = MqttSource::start(c.options, buffer_, clock_);
  if (!started) return started.error();
  log::get("agent")->info("MQTT source: {} on {} as {}", fmt::join(c.options.topics, ", "),
                          c.options.broker, c.options.client_id);
  std::lock_guard lock(mu_);
  mqtt_ = std::move(*started);
  return {};
}

Result<void> AgentSources::start_spool(const SpoolSourceConfig& c) {
  auto started = SpoolSource::start(c.options, buffer_);
  if (!started) return started.error();
  log::get("agent")->info("spool source: {} ({})", c.options.directory, c.options.schema);
  std::lock_guard lock(mu_);
  spool_ = std::move(*started);
  return {};
}

void AgentSources::start_generator(const GeneratorConfig& c) {
  auto g = std::make_unique<SyntheticGenerator>(buffer_, clock_, c);
  g->start();
  log::get("agent")->info("synthetic generator: {} events at {}/s",
                          c.events == 0 ? std::string("unlimited") : std::to_string(c.events),
                          c.rate);
  std::lock_guard lock(mu_);
  generator_ = std::move(g);
}

Result<void> AgentSources::start(const SourcesConfig& config) {
  if (config.generator.enabled) start_generator(config.generator);
  config_.generator = config.generator;
  if (config.http.enabled) {
    if (auto r = start_http(config.http); !r) return r;
  }
  config_.http = config.http;
  if (config.mqtt.enabled) {
    if (auto r = start_mqtt(config.mqtt); !r) return r;
  }
  config_.mqtt = config.mqtt;
  if (config.spool.enabled) {
    if (auto r = start_spool(config.spool); !r) return r;
  }
  config_.spool = config.spool;
  return {};
}

AgentSources::Applied AgentSources::apply(const SourcesConfig& next) {
  Applied out;
  const SourcesConfig old = config_;
  change(
      "generator", old.generator, next.generator, config_.generator,
      [&](const GeneratorConfig& c) -> Result<void> {
        start_generator(c);
        return {};
      },
      [&] {
        if (generator_) generator_->stop();
        stop_source(mu_, generator_);
      },
      out);
  change(
      "sources.http", old.http, next.http, config_.http,
      [&](const HttpSourceConfig& c) { return start_http(c); }, [&] { stop_source(mu_, http_); },
      out);
  change(
      "sources.mqtt", old.mqtt, next.mqtt, config_.mqtt,
      [&](const MqttSourceConfig& c) { return start_mqtt(c); }, [&] { stop_source(mu_, mqtt_); },
      out);
  change(
      "sources.spool", old.spool, next.spool, config_.spool,
      [&](const SpoolSourceConfig& c) { return start_spool(c); }, [&] { stop_source(mu_, spool_); },
      out);
  return out;
}

void AgentSources::stop() {
  if (generator_) generator_->stop();
  stop_source(mu_, generator_);
  stop_source(mu_, http_);
  stop_source(mu_, mqtt_);
  stop_source(mu_, spool_);
}

void AgentSources::append_metrics(std::string& out) const {
  std::lock_guard lock(mu_);
  if (spool_) spool_->append_metrics(out);
}

bool AgentSources::generator_done() const {
  std::lock_guard lock(mu_);
  return generator_ && generator_->done();
}

}  // namespace outpost::agent
