#include "common/log.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "common/errc.hpp"
#include "common/units.hpp"

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

// The line's UTC time, "1970-01-01T00:00:00.007Z". spdlog's own %Y..%S cache the broken-down
// time per second starting from second 0, so a clock at the epoch (a device whose battery died)
// printed the cache's zero state, "1900-01-00T00:00:00". This one computes it per second too,
// but from no assumed start.
class UtcTimeFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(msg.time.time_since_epoch()).count();
    const int64_t secs = ns >= 0 ? ns / 1'000'000'000 : (ns - 999'999'999) / 1'000'000'000;
    if (!cached_ || secs != cached_secs_) {
      cached_ = true;
      cached_secs_ = secs;
      seconds_text_ = format_time_ns(secs * 1'000'000'000, /*compact=*/false);
      seconds_text_.resize(seconds_text_.size() - 5);  // "…:SS" without ".mmmZ"
    }
    char millis[8];
    std::snprintf(millis, sizeof millis, ".%03dZ",
                  static_cast<int>((ns - secs * 1'000'000'000) / 1'000'000));
    dest.append(seconds_text_.data(), seconds_text_.data() + seconds_text_.size());
    dest.append(millis, millis + 5);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<UtcTimeFlag>();
  }

 private:
  bool cached_ = false;
  int64_t cached_secs_ = 0;
  std::string seconds_text_;
};

std::mutex g_mutex;
std::shared_ptr<spdlog::sinks::stderr_sink_mt> g_sink;
spdlog::level::level_enum g_level = spdlog::level::info;

std::shared_ptr<spdlog::sinks::stderr_sink_mt> sink() {
  if (!g_sink) {
    g_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    g_sink->set_formatter(make_formatter(std::getenv("JOURNAL_STREAM") != nullptr));
  }
  return g_sink;
}

}  // namespace

std::unique_ptr<spdlog::formatter> make_formatter(bool journal) {
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  if (journal) {
    formatter->add_flag<SyslogPriorityFlag>('*').set_pattern("%*%n: %v");
  } else {
    formatter->add_flag<UtcTimeFlag>('&').set_pattern("%& %l %n: %v");
  }
  return formatter;
}

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
