// outpost-gateway: receives agents' batches over mutual TLS and writes them to a sink.
// Usage and every option: `outpost-gateway --help`; configuration: docs/configuration.md.
#include <fmt/ranges.h>
#include <sys/resource.h>
#include <CLI/CLI.hpp>
#include <csignal>
#include <ctime>
#include <iostream>

#include "common/exit_code.hpp"
#include "common/file_lock.hpp"
#include "common/log.hpp"
#include "gateway/config.hpp"
#include "gateway/contracts/contracts_command.hpp"
#include "gateway/pipeline/validation.hpp"
#include "gateway/sinks/file_sink.hpp"
#include "gateway/sinks/kafka_sink.hpp"
#include "uplink/server/server.hpp"

using namespace outpost;
using namespace outpost::gateway;

namespace {

// The lock whose holder is the running gateway of `config`: gateway.pid_file, or the file
// sink's directory lock.
std::string running_gateway_lock(const GatewayConfig& config) {
  if (!config.pid_file.empty()) return config.pid_file;
  if (config.sink == "file") return FileSink::lock_path(config.file_sink.dir);
  return "";
}

struct ReadConfig {
  ConfigSettings settings;  // as written, for a reload to compare
  GatewayConfig config;
};

// The configuration file with `overrides` applied, checked; an error says which and why.
Result<ReadConfig> read_config(const std::string& path, const std::vector<std::string>& overrides) {
  auto doc = ConfigDoc::parse_file(path);
  if (!doc) return doc.error();
  for (const std::string& set : overrides) {
    if (auto r = doc->set_override(set); !r) return r.error();
  }
  auto config = load_gateway_config(*doc);
  if (!config) return config.error();
  return ReadConfig{doc->settings(), std::move(*config)};
}

// `outpost-gateway reload -c CONFIG`: SIGHUP to the gateway running with that configuration.
int reload_command(int argc, char** argv) {
  CLI::App app{
      "outpost-gateway reload: checks the configuration, then makes the running gateway read "
      "it, its contracts and its TLS files "
      "again (SIGHUP; docs/configuration.md, \"Reload\")"};
  std::string config_path = "/etc/outpost/gateway.toml";
  app.add_option("-c,--config", config_path, "The running gateway's configuration")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  auto read = read_config(config_path, {});
  if (!read) {
    // The running gateway would refuse it the same way: nothing is sent.
    std::cerr << "outpost-gateway reload: " << read.error().describe()
              << "\nnothing was sent: the running gateway keeps its configuration\n";
    return kExitUsage;
  }
  const std::string lock = running_gateway_lock(read->config);
  if (lock.empty()) {
    std::cerr << "outpost-gateway reload: with the Kafka sink, set gateway.pid_file to find the "
                 "running gateway (or use systemctl reload / kill -HUP)\n";
    return kExitUsage;
  }
  auto pid = FileLock::signal_holder(lock, SIGHUP);
  if (!pid) {
    std::cerr << "outpost-gateway reload: no outpost-gateway is running with " << config_path
              << " (" << pid.error().message << ")\n";
    return kExitError;
  }
  std::cout << "outpost-gateway reload: SIGHUP sent to pid " << *pid
            << "; its log says what it read\n";
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "contracts") {
    return run_contracts_command(argc - 1, argv + 1);
  }
  if (argc > 1 && std::string(argv[1]) == "reload") return reload_command(argc - 1, argv + 1);
  CLI::App app{
      "outpost-gateway: receives events from outpost-agents over mutual TLS, drops "
      "duplicates, and writes them to a sink.\nExit codes: 0 stopped cleanly, 1 runtime error, "
      "2 bad command line or configuration.\nAlso: outpost-gateway contracts check --old OLD "
      "--new NEW (docs/contracts.md); outpost-gateway reload -c CONFIG (SIGHUP to the running "
      "gateway)."};
  std::string config_path;
  std::vector<std::string> overrides;
  std::string log_level;
  app.add_option("-c,--config", config_path,
                 "TOML configuration file (docs/configuration.md; example deploy/gateway.toml)")
      ->required();
  app.add_option(
      "--set", overrides,
      "override a configuration key, e.g. --set limits.max_connections=5000 "
      "(repeatable). Keys: gateway.{id,listen,http_listen,threads,shutdown_grace,"
      "log_level,pid_file}, tls.{ca_file,cert_file,key_file,crl,reload_interval,identity}, "
      "limits.{max_connections,"
      "max_connections_per_ip,max_pending_handshakes,handshake_timeout,idle_timeout,max_"
      "frame_bytes,"
      "max_decompressed_bytes,max_window_log,max_events_per_batch,"
      "max_in_flight_batches,device_events_per_second,device_burst_events}, "
      "contracts.{descriptor_set,unknown_schema,unknown_fields,hash_key_file}, sink.type, "
      "sink.file.{dir,rotate_bytes,rotate_age,format,zstd_level}, "
      "sink.kafka.{brokers,topic_pixel,topic_sensor,topic_json,value_pixel,"
      "value_sensor,value_json,topic_bad,offsets_topic,transactional_id,create_topics,"
      "transactions,partitions,replication,batches_per_transaction,linger,"
      "transaction_timeout}, and kafka.* (librdkafka properties, passed through)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  if (!log_level.empty()) overrides.push_back("gateway.log_level=" + log_level);
  auto read = read_config(config_path, overrides);
  if (!read) {
    std::cerr << "outpost-gateway: " << read.error().describe() << "\n";
    return kExitUsage;
  }
  const ConfigSettings started_settings = read->settings;
  ConfigSettings last_settings = read->settings;  // what the next reload compares with
  GatewayConfig running = read->config;
  const GatewayConfig* config = &running;
  (void)log::init(config->log_level);
  auto log = log::get("gateway");

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);  // reload the contracts
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  // Each agent holds a connection: use every file descriptor the hard limit allows.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }

  FileLock pid_lock;  // gateway.pid_file, for `outpost-gateway reload`
  if (!config->pid_file.empty()) {
    auto locked = FileLock::acquire(config->pid_file, "the pid file " + config->pid_file);
    if (!locked) {
      log->critical("{}", locked.error().describe());
      return exit_code_for(locked.error());
    }
    pid_lock = std::move(*locked);
  }

  SystemClock clock;
  auto validation = ValidationStage::start(config->gateway_id, config->contracts, clock);
  if (!validation) {
    log->critical("{}", validation.error().describe());
    return exit_code_for(validation.error());
  }
  log->info("contracts: {}", (*validation)->describe());
  std::unique_ptr<Sink> sink;
  FileSink* file_sink = nullptr;  // for a reload of its rotation
  if (config->sink == "kafka") {
    auto kafka = KafkaSink::start(config->kafka_sink, clock);
    if (!kafka) {
      log->critical("cannot use the Kafka sink: {}", kafka.error().describe());
      return exit_code_for(kafka.error());
    }
    sink = std::move(*kafka);
    log->info("Kafka sink: {} as {}", config->kafka_sink.brokers,
              config->kafka_sink.transactional_id);
  } else {
    auto file = FileSink::open(config->file_sink, clock);
    if (!file) {
      log->critical("cannot open the file sink: {}", file.error().describe());
      return exit_code_for(file.error());
    }
    file_sink = file->get();
    sink = std::move(*file);
  }
  uplink::ServerMetrics metrics("outpost_gateway");
  uplink::ServerOptions server_options;
  server_options.listen_address = config->listen_address;
  server_options.listen_port = config->listen_port;
  server_options.http_address = config->http_address;
  server_options.http_port = config->http_port;
  server_options.threads = config->threads;
  server_options.ca_file = config->ca_file;
  server_options.cert_file = config->cert_file;
  server_options.key_file = config->key_file;
  server_options.crl_file = config->crl_file;
  server_options.tls_reload_interval_ns = config->tls_reload_interval_ns;
  server_options.identity_from_uri_san = config->identity_from_uri_san;
  server_options.limits = config->limits;
  ValidationStage& stage = **validation;  // contracts, sensitive fields, provenance
  server_options.prepare = [&stage](uplink::SinkBatch& b) { stage.apply(b); };
  server_options.append_metrics = [&stage](std::string& out) { stage.append_metrics(out); };
  auto server = uplink::Server::start(std::move(server_options), *sink, metrics, clock);
  if (!server) {
    log->critical("{}", server.error().describe());
    return kExitUsage;  // a port that cannot be bound, an unusable certificate
  }
  // Tests and scripts read the bound ports from this line (port 0 picks free ones).
  std::cout << "outpost-gateway ready port=" << (*server)->port()
            << " http_port=" << (*server)->http_port() << std::endl;

  int sig = 0;
  while (sig != SIGINT && sig != SIGTERM) {
    sig = sigwaitinfo(&stop_signals, nullptr);
    if (sig != SIGHUP) continue;
    // docs/configuration.md, "Reload": the configuration, the contracts and the TLS files.
    log->info("reload: reading {} again", config_path);
    if (auto next = read_config(config_path, overrides); !next) {
      log->error("reload refused, the running configuration stays: {}", next.error().describe());
    } else {
      GatewayReload plan = plan_gateway_reload(started_settings, running, last_settings,
                                               next->settings, next->config);
      last_settings = std::move(next->settings);
      for (const std::string& key : plan.restart_only) {
        log->warn("reload: {} changed: it takes a restart; the running value stays", key);
      }
      if (plan.config.log_level != running.log_level) {
        (void)log::init(plan.config.log_level);
        log->info("reload: gateway.log_level {}", plan.config.log_level);
      }
      if (!(plan.config.limits == running.limits)) {
        (*server)->set_limits(plan.config.limits);
        log->info(
            "reload: [limits] in use: per device {} events/s (burst {}); for new sessions, "
            "max_in_flight_batches {}, max_events_per_batch {}",
            plan.config.limits.device_events_per_second, plan.config.limits.device_burst_events,
            plan.config.limits.max_in_flight_batches, plan.config.limits.max_events_per_batch);
      }
      if (file_sink != nullptr &&
          (plan.config.file_sink.rotate_bytes != running.file_sink.rotate_bytes ||
           plan.config.file_sink.rotate_age_ns != running.file_sink.rotate_age_ns)) {
        file_sink->set_rotation(plan.config.file_sink.rotate_bytes,
                                plan.config.file_sink.rotate_age_ns);
        log->info("reload: file sink rotates at {} bytes or {} s",
                  plan.config.file_sink.rotate_bytes,
                  plan.config.file_sink.rotate_age_ns / 1'000'000'000);
      }
      running = std::move(plan.config);
      log->info("reload: done; {} changed: {}", plan.changed.size(),
                plan.changed.empty() ? std::string("nothing")
                                     : fmt::format("{}", fmt::join(plan.changed, ", ")));
    }
    if (auto r = (*validation)->reload(); r) {
      log->info("reload: contracts: {}", *r);
    } else {
      log->error("reload refused, the contracts in use stay: {}", r.error().describe());
    }
    (void)(*server)->reload_tls();  // logs what it read or why it refused
  }
  log->info("stopping on signal {}: finishing in-flight batches (grace {}s)", sig,
            config->shutdown_grace_ns / 1'000'000'000);
  size_t cut = (*server)->shutdown(std::chrono::nanoseconds(config->shutdown_grace_ns));
  if (cut > 0) log->warn("{} sessions were cut off at the end of the grace period", cut);
  server->reset();
  sink.reset();  // finishes queued batches: fsyncs the files / commits to Kafka
  log->info("stopped");
  return kExitOk;
}
