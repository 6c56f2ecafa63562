#include "common/log.hpp"

#include <cstdlib>
#include <mutex>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "common/errc.hpp"

namespace outpost::log {
namespace {

// "<N>" syslog priorities for journald (sd-daemon(3)).
class SyslogPriorityFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr const char* kPrio[] = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>", "<6>"};
    std::string_view p = kPrio[static_cast<int>(msg.level)];
    dest.append(p.data(), p.data() + p.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPriorityFlag>();
  }
};

std::mutex g_mutex;
std::shared_ptr<spdlog::sinks::stderr_sink_mt> g_sink;
spdlog::level::level_enum g_level = spdlog::level::info;

std::shared_ptr<spdlog::sinks::stderr_sink_mt> sink() {
  if (!g_sink) {
    g_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    if (std::getenv("JOURNAL_STREAM") != nullptr) {
      formatter->add_flag<SyslogPriorityFlag>('*').set_pattern("%*%n: %v");
    } else {
      formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %n: %v");
    }
    g_sink->set_formatter(std::move(formatter));
  }
  return g_sink;
}

}  // namespace

Result<void> init(std::string_view level) {
  auto parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    return make_error(common_errc::config_invalid,
                      "log level \"" + std::string(level) +
                          "\" is not allowed: expected one of trace, debug, info, warn, error, "
                          "critical, off");
  }
  std::lock_guard lock(g_mutex);
  g_level = parsed;
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) { l->set_level(parsed); });
  return {};
}

std::shared_ptr<spdlog::logger> get(std::string_view component) {
  std::lock_guard lock(g_mutex);
  std::string name(component);
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = std::make_shared<spdlog::logger>(name, sink());
  logger->set_level(g_level);
  spdlog::register_logger(logger);
  return logger;
}

}  // namespace outpost::log
