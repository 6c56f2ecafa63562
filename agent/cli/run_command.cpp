// `outpost-agent run`: load and validate the configuration, open the buffer, start the
// sources, the forwarder and the status endpoints, and wait for SIGINT/SIGTERM.
#include <fmt/ranges.h>

#include <atomic>
#include <csignal>
#include <ctime>
#include <iostream>
#include <memory>

#include "agent/buffer/sqlite_buffer.hpp"
#include "agent/cli/agent_sources.hpp"
#include "agent/cli/cli.hpp"
#include "agent/cli/commands.hpp"
#include "agent/config.hpp"
#include "agent/contracts/edge_validation.hpp"
#include "agent/forwarder/forwarder.hpp"
#include "agent/relay/relay_sink.hpp"
#include "agent/status/status_server.hpp"
#include "common/file_lock.hpp"
#include "common/log.hpp"
#include "common/tls/certificate.hpp"
#include "common/units.hpp"
#include "uplink/gateway_protocol.hpp"
#include "uplink/server/server.hpp"

namespace outpost::agent::cli {

namespace {

struct ReadConfig {
  ConfigSettings settings;
  AgentConfig config;
};

// The configuration file with the command line's overrides, validated: at start, and again on
// each reload.
Result<ReadConfig> read_config(const RunOptions& o) {
  auto doc = ConfigDoc::parse_file(o.config_path);
  if (!doc) return doc.error();
  std::vector<std::string> overrides = o.overrides;
  if (o.buffer_path) overrides.push_back("buffer.path=\"" + *o.buffer_path + "\"");
  if (o.log_level) overrides.push_back("agent.log_level=" + *o.log_level);
  if (o.agent_id) overrides.push_back("agent.id=\"" + *o.agent_id + "\"");
  for (const std::string& set : overrides) {
    if (auto r = doc->set_override(set); !r) return r.error();
  }
  auto config = load_agent_config(*doc);
  if (!config) return config.error();
  return ReadConfig{doc->settings(), std::move(*config)};
}

}  // namespace

int reload_agent(const std::string& config_path) {
  // The running agent checks the file again and refuses it the same way; checking here first
  // tells the operator at once, and signals nothing.
  RunOptions check;
  check.config_path = config_path;
  auto read = read_config(check);
  if (!read) {
    std::cerr << "outpost-agent reload: " << read.error().describe()
              << "\nnothing was sent: the running agent keeps its configuration\n";
    return kExitUsage;
  }
  const std::string& path = read->config.buffer.path;
  auto pid = FileLock::signal_holder(SqliteBuffer::lock_path(path), SIGHUP);
  if (!pid) {
    std::cerr << "outpost-agent reload: no outpost-agent is running on buffer " << path << " ("
              << pid.error().message << ")\n";
    return kExitError;
  }
  std::cout << "outpost-agent reload: SIGHUP sent to pid " << *pid << " (buffer " << path
            << "); its log says what it read\n";
  return kExitOk;
}

int run_agent(const RunOptions& o) {
  auto read = read_config(o);
  if (!read) {
    std::cerr << "outpost-agent: " << read.error().describe() << "\n";
    return kExitUsage;
  }
  const ConfigSettings started_settings = read->settings;
  ConfigSettings last_settings = read->settings;  // what the next reload compares with
  AgentConfig running = std::move(read->config);
  AgentConfig* config = &running;
  (void)log::init(config->log_level);
  auto log = log::get("agent");

  // Block the stop and reload signals before any thread starts, so that only sigtimedwait()
  // sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  SystemClock clock;
  config->buffer.exclusive = true;  // one agent per buffer file (a second is refused)
  auto buffer = SqliteBuffer::open(config->buffer, clock);
  if (!buffer) {
    log->critical("cannot open the buffer: {}", buffer.error().describe());
    // A file from a newer version, or sealed with a key not given: the configuration's to mend.
    return buffer.error().code == buffer_errc::newer_schema ||
                   buffer.error().code == buffer_errc::key_missing
               ? kExitUsage
               : kExitError;
  }
  log->info("agent {} started; buffer {} (cap {})", config->agent_id, config->buffer.path,
            format_bytes(config->buffer.max_bytes));

  // What the sources append to: the buffer, or edge validation in front of it.
  Buffer* sources_buffer = buffer->get();
  std::unique_ptr<EdgeValidatingBuffer> edge;
  if (config->validate_at_edge) {
    auto validator = proto::load_validator(config->contracts);
    if (!validator) {
      log->critical("{}", validator.error().describe());
      return kExitUsage;
    }
    edge = std::make_unique<EdgeValidatingBuffer>(**buffer, *validator);
    sources_buffer = edge.get();
    log->info("contracts: edge validation against {} (sha256 {})", (*validator)->registry().path(),
              (*validator)->registry().fingerprint().substr(0, 16));
  }

  AgentSources sources(*sources_buffer, clock);
  if (auto started = sources.start(SourcesConfig::of(*config)); !started) {
    log->critical("{}", started.error().describe());
    return kExitUsage;
  }

  // Relay mode: the site's devices' uplinks, into this agent's buffer (docs/install.md,
  // "Site gateways").
  std::unique_ptr<RelaySink> relay_sink;
  std::unique_ptr<uplink::ServerMetrics> relay_metrics;
  std::unique_ptr<uplink::Server> relay;
  if (config->relay.enabled) {
    auto sink = RelaySink::open(**buffer, {config->buffer.path, config->relay.device_max_bytes});
    if (!sink) {
      log->critical("relay: {}", sink.error().describe());
      return kExitError;
    }
    relay_sink = std::move(*sink);
    relay_metrics = std::make_unique<uplink::ServerMetrics>("outpost_agent_relay");
    uplink::ServerOptions server = config->relay.server;
    const std::string site = config->relay.site;
    const std::string site_uri = std::string(uplink::kSiteUri) + site;
    RelaySink* keep = relay_sink.get();
    // Only the site's own devices: the gateway takes their events from this relay only.
    server.admit_peer = [keep, site, site_uri](
                            const std::string& identity,
                            const tls::PeerCertificate& peer) -> std::optional<std::string> {
      if (std::find(peer.uri_sans.begin(), peer.uri_sans.end(), site_uri) == peer.uri_sans.end()) {
        return "the certificate of " + identity + " has no URI SAN " + site_uri +
               ": not a device of site " + site;
      }
      keep->remember_certificate(identity, peer.der);
      return std::nullopt;
    };
    server.on_session = [keep](const std::string& identity, bool open) {
      keep->connection(identity, open);
    };
    auto started = uplink::Server::start(std::move(server), *relay_sink, *relay_metrics, clock);
    if (!started) {
      log->critical("relay: {}", started.error().describe());
      return kExitUsage;
    }
    relay = std::move(*started);
    config->uplink.forwarder.device_certificate = [keep](const std::string& device) {
      return keep->certificate(device);
    };
    config->uplink.forwarder.on_relayed_ack = [keep](const std::string& device, uint64_t events,
                                                     uint64_t bytes) {
      keep->forwarded(device, events, bytes);
    };
    log->info("relay for the devices of site {} on port {}", site, relay->port());
  }

  std::unique_ptr<Forwarder> forwarder;
  if (config->uplink.enabled) {
    forwarder = std::make_unique<Forwarder>(config->uplink.forwarder, **buffer, clock);
    forwarder->start();
    log->info("uplink to {}", fmt::join(config->uplink.forwarder.endpoints, ", "));
  } else {
    log->warn("no uplink.endpoints configured: events stay in the buffer");
  }

  // The device certificate's expiry on /metrics: the forwarder's, which follows a renewed
  // certificate (and warns in the log when it is near); the file's until it has read one.
  int64_t cert_at_start = 0;
  if (config->uplink.enabled) {
    if (auto t = tls::certificate_not_after(config->uplink.forwarder.cert_file); t) {
      cert_at_start = *t;
    }
  }
  std::atomic<int> warn_days{config->uplink.certificate_warn_days};
  auto more_metrics = [e = edge.get(), &sources, rm = relay_metrics.get(), rs = relay_sink.get(),
                       fw = forwarder.get(), cert_at_start, &clock, &warn_days](std::string& out) {
    if (e != nullptr) e->append_metrics(out);
    sources.append_metrics(out);
    if (rm != nullptr) out += rm->render_prometheus();
    if (rs != nullptr) rs->append_metrics(out);
    int64_t cert_not_after = cert_at_start;
    if (fw != nullptr) {
      const ForwarderStatus st = fw->status();
      if (st.certificate_not_after != 0) cert_not_after = st.certificate_not_after;
      out +=
          "# HELP outpost_agent_tls_reloads_total Changes of the uplink's TLS files read while "
          "running, by result: ok (used from the next handshake) or refused (the files in use "
          "stay).\n# TYPE outpost_agent_tls_reloads_total counter\n"
          "outpost_agent_tls_reloads_total{result=\"ok\"} " +
          std::to_string(st.tls_reloads_ok) +
          "\noutpost_agent_tls_reloads_total{result=\"refused\"} " +
          std::to_string(st.tls_reloads_refused) + "\n";
    }
    if (cert_not_after != 0) {
      out +=
          "# HELP outpost_agent_certificate_expiry_timestamp_seconds When the device "
          "certificate expires (notAfter, Unix time).\n# TYPE "
          "outpost_agent_certificate_expiry_timestamp_seconds gauge\n"
          "outpost_agent_certificate_expiry_timestamp_seconds " +
          std::to_string(cert_not_after) + "\n";
      // Prometheus wants seconds; dashboards divide by 86400 for days left.
      const int64_t seconds_left = cert_not_after - clock.now_ns() / 1'000'000'000;
      out +=
          "# HELP outpost_agent_certificate_remaining_seconds Time until the device certificate "
          "expires (negative: expired).\n# TYPE outpost_agent_certificate_remaining_seconds "
          "gauge\noutpost_agent_certificate_remaining_seconds " +
          std::to_string(seconds_left) +
          "\n# HELP outpost_agent_certificate_expiring 1 when the device certificate expires "
          "within uplink.certificate_warn_days days (renew it).\n# TYPE "
          "outpost_agent_certificate_expiring gauge\noutpost_agent_certificate_expiring " +
          std::string(seconds_left < int64_t{warn_days.load()} * 86'400 ? "1" : "0") + "\n";
    }
  };
  std::unique_ptr<StatusServer> status;
  if (config->http_enabled) {
    auto started = StatusServer::start(config->http_host, config->http_port, **buffer,
                                       forwarder.get(), clock, more_metrics);
    if (started) {
      status = std::move(*started);
      log->info("/healthz and /metrics on http://{}:{}", config->http_host, status->port());
    } else {
      // Collecting events matters more than being scraped: go on without the endpoints.
      log->error("{}; continuing without /healthz and /metrics", started.error().describe());
    }
  }

  int exit_code = kExitOk;
  const timespec tick{0, 100'000'000};
  while (true) {
    int sig = sigtimedwait(&stop_signals, nullptr, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      log->info("stopping on signal {}", sig);
      break;
    }
    if (sig == SIGHUP) {
      log->info("reload: reading {} again", o.config_path);
      if (auto next = read_config(o); !next) {
        log->error("reload refused, the running configuration stays: {}", next.error().describe());
      } else {
        AgentReload plan = plan_agent_reload(started_settings, running, last_settings,
                                             next->settings, std::move(next->config));
        last_settings = std::move(next->settings);
        for (const std::string& key : plan.restart_only) {
          log->warn("reload: {} changed: it takes a restart; the running value stays", key);
        }
        if (plan.config.log_level != running.log_level) {
          (void)log::init(plan.config.log_level);
          log->info("reload: agent.log_level {}", plan.config.log_level);
        }
        AgentSources::Applied applied = sources.apply(SourcesConfig::of(plan.config));
        for (const std::string& c : applied.changes) log->info("reload: {}", c);
        for (const Error& e : applied.refused) log->error("reload: {}", e.describe());
        plan.config.generator = sources.in_use().generator;
        plan.config.http = sources.in_use().http;
        plan.config.mqtt = sources.in_use().mqtt;
        plan.config.spool = sources.in_use().spool;
        if (forwarder) forwarder->reconfigure(plan.config.uplink.forwarder);
        warn_days = plan.config.uplink.certificate_warn_days;
        running = std::move(plan.config);
        log->info("reload: done; {} changed: {}", plan.changed.size(),
                  plan.changed.empty() ? std::string("nothing")
                                       : fmt::format("{}", fmt::join(plan.changed, ", ")));
      }
      // The TLS files are read again too, changed or not.
      if (forwarder) forwarder->reload_tls();
      if (relay) (void)relay->reload_tls();
    }
    if (!(*buffer)->healthy()) {
      log->critical("the buffer became unusable; exiting so that a restart recovers it");
      exit_code = kExitRestart;
      break;
    }
    if (sources.generator_done() && config->generator.stop_when_done) break;
  }
  sources.stop();
  if (relay) {
    // The devices' batches in flight are answered before the buffer closes.
    const size_t cut = relay->shutdown(std::chrono::seconds(5));
    if (cut > 0) log->warn("relay: {} device sessions were cut off", cut);
  }
  status.reset();
  forwarder.reset();
  relay.reset();
  relay_sink.reset();
  buffer->reset();  // finishes queued appends
  log->info("stopped");
  return exit_code;
}

}  // namespace outpost::agent::cli
