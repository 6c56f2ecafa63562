#pragma once
// The sources of a running agent (HTTP, MQTT, spool and the synthetic generator), started from
// its configuration and changed in place by a reload (docs/configuration.md, "Reload"): a
// source whose settings are unchanged keeps running untouched (its connections, its MQTT
// session); a changed one is stopped, which answers or finishes what it accepted, and started
// with the new settings; a removed one is stopped; an added one is started. When a changed
// source cannot start with its new settings, it is started again with the old ones.
//
// Thread-safety: start(), apply() and stop() from the owning thread; append_metrics() and
// generator_done() from any (the status server's thread). The Buffer and the Clock outlive it.

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/config.hpp"

namespace outpost::agent {

class HttpSource;
class MqttSource;
class SpoolSource;
class SyntheticGenerator;

// The settings of the sources (the parts of AgentConfig that apply() changes).
struct SourcesConfig {
  GeneratorConfig generator;
  HttpSourceConfig http;
  MqttSourceConfig mqtt;
  SpoolSourceConfig spool;
  static SourcesConfig of(const AgentConfig& c) { return {c.generator, c.http, c.mqtt, c.spool}; }
};

class AgentSources {
 public:
  AgentSources(Buffer& buffer, const Clock& clock);
  ~AgentSources();
  AgentSources(const AgentSources&) = delete;
  AgentSources& operator=(const AgentSources&) = delete;

  // Starts the sources `config` enables; the first that cannot start is the error.
  Result<void> start(const SourcesConfig& config);

  struct Applied {
    std::vector<std::string> changes;  // "sources.spool started", for the log
    std::vector<Error> refused;        // a source whose new settings could not start
  };
  // Moves the running sources to `next`. Sources whose new settings were refused keep their
  // old ones: in_use() tells what runs afterwards.
  Applied apply(const SourcesConfig& next);
  const SourcesConfig& in_use() const { return config_; }

  void stop();  // every source, in the order the agent stops them
  void append_metrics(std::string& out) const;
  bool generator_done() const;

 private:
  Result<void> start_http(const HttpSourceConfig& c);
  Result<void> start_mqtt(const MqttSourceConfig& c);
  Result<void> start_spool(const SpoolSourceConfig& c);
  void start_generator(const GeneratorConfig& c);

  Buffer& buffer_;
  const Clock& clock_;
  SourcesConfig config_;
  mutable std::mutex mu_;  // guards the pointers below against the status thread
  std::unique_ptr<SyntheticGenerator> generator_;
  std::unique_ptr<HttpSource> http_;
  std::unique_ptr<MqttSource> mqtt_;
  std::unique_ptr<SpoolSource> spool_;
};

}  // namespace outpost::agent
