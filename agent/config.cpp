#include "agent/config.hpp"

#include <unistd.h>

#include <climits>

#include "common/errc.hpp"

namespace outpost::agent {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1'000 * kMs;
constexpr int64_t kDay = 86'400 * kSecond;

std::string host_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "outpost-agent";
  return buf;
}

// Defaults by kind: browsers cannot be pushed back, so pixel hits make room by dropping the
// oldest; sensors (no PUBACK) and programs (503) can retry, so they are refused instead.
FullPolicy default_policy(EventKind k) {
  return k == EventKind::pixel ? FullPolicy::drop_oldest : FullPolicy::reject;
}

}  // namespace

Result<AgentConfig> load_agent_config(ConfigDoc& doc) {
  AgentConfig c;
  OUTPOST_TRY_ASSIGN(c.agent_id, doc.string("agent.id", host_name()));
  if (c.agent_id.empty() || c.agent_id.size() > 128) {
    return make_error(common_errc::config_invalid,
                      "config " + doc.source_name() + ": agent.id = \"" + c.agent_id +
                          "\" is not allowed: expected 1 to 128 characters");
  }
  OUTPOST_TRY_ASSIGN(c.log_level, doc.choice("agent.log_level", "info",
                                             {"trace", "debug", "info", "warn", "error", "off"}));

  BufferOptions& b = c.buffer;
  b.agent_id = c.agent_id;
  OUTPOST_TRY_ASSIGN(b.path, doc.string("buffer.path", "/var/lib/outpost/buffer.db"));
  OUTPOST_TRY_ASSIGN(b.max_bytes, doc.bytes("buffer.max_bytes", "1GiB", 1ULL << 20, 1ULL << 44));
  OUTPOST_TRY_ASSIGN(b.max_file_bytes, doc.bytes("buffer.max_file_bytes", "0", 0, 1ULL << 44));
  if (b.max_file_bytes != 0 && b.max_file_bytes < b.max_bytes) {
    return make_error(common_errc::config_invalid,
                      "config " + doc.source_name() +
                          ": buffer.max_file_bytes must be 0 (no limit) or at least "
                          "buffer.max_bytes, since the file also holds indexes and free pages");
  }
  OUTPOST_TRY_ASSIGN(b.disk_reserve_bytes, doc.bytes("buffer.disk_reserve", "4MiB", 0, 1ULL << 32));
  std::string sync;
  OUTPOST_TRY_ASSIGN(sync,
                     doc.choice("buffer.synchronous", "full", {"off", "normal", "full", "extra"}));
  b.synchronous = sync == "off"      ? Synchronous::off
                  : sync == "normal" ? Synchronous::normal
                  : sync == "extra"  ? Synchronous::extra
                                     : Synchronous::full;
  int64_t n = 0;
  OUTPOST_TRY_ASSIGN(n, doc.integer("buffer.commit_max_events", 1000, 1, 100'000));
  b.commit_max_events = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(b.commit_interval_ns,
                     doc.duration_ns("buffer.commit_interval", "5ms", 0, 10 * kMs));
  OUTPOST_TRY_ASSIGN(n, doc.integer("buffer.queue_max_events", 100'000, 1'000, 10'000'000));
  b.queue_max_events = static_cast<uint32_t>(n);
  OUTPOST_TRY_ASSIGN(b.expire_interval_ns,
                     doc.duration_ns("buffer.expire_interval", "1s", 10 * kMs, 3600 * kSecond));

  for (const std::string& name : doc.table_keys("buffer.kinds")) {
    if (!kind_from_name(name)) {
      return make_error(common_errc::config_unknown_key,
                        "config " + doc.source_name() + ": buffer.kinds." + name +
                            " is not a kind: expected pixel, sensor or json");
    }
  }
  for (EventKind k : kAllKinds) {
    const std::string prefix = "buffer.kinds." + std::string(kind_name(k)) + ".";
    KindLimits& limits = b.kinds[kind_index(k)];
    std::string policy;
    OUTPOST_TRY_ASSIGN(
        policy, doc.choice(prefix + "policy",
                           default_policy(k) == FullPolicy::reject ? "reject" : "drop_oldest",
                           {"reject", "drop_oldest"}));
    limits.policy = policy == "reject" ? FullPolicy::reject : FullPolicy::drop_oldest;
    OUTPOST_TRY_ASSIGN(limits.max_age_ns,
                       doc.duration_ns(prefix + "max_age", "0s", 0, 3650 * kDay));
  }

  OUTPOST_TRY_ASSIGN(c.generator.enabled, doc.boolean("generator.enabled", false));
  OUTPOST_TRY_ASSIGN(n, doc.integer("generator.events", 0, 0, INT64_MAX));
  c.generator.events = static_cast<uint64_t>(n);
  OUTPOST_TRY_ASSIGN(n, doc.integer("generator.rate", 1000, 1, 10'000'000));
  c.generator.rate = static_cast<uint64_t>(n);
  OUTPOST_TRY_ASSIGN(c.generator.stop_when_done, doc.boolean("generator.stop_when_done", false));

  if (auto r = doc.check_no_unknown_keys(); !r) return r.error();
  return c;
}

}  // namespace outpost::agent
