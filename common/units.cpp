#include "common/units.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>

namespace outpost {
namespace {

// Reads a run of digits from `text` at `pos`; nullopt when there is none or it overflows.
std::optional<uint64_t> read_number(std::string_view text, size_t& pos) {
  size_t start = pos;
  uint64_t value = 0;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
    uint64_t digit = static_cast<uint64_t>(text[pos] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
    ++pos;
  }
  if (pos == start) return std::nullopt;
  return value;
}

std::string_view read_unit(std::string_view text, size_t& pos) {
  size_t start = pos;
  while (pos < text.size() && std::isalpha(static_cast<unsigned char>(text[pos]))) ++pos;
  return text.substr(start, pos - start);
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t limit) { return b != 0 && a > limit / b; }

}  // namespace

std::optional<int64_t> parse_duration_ns(std::string_view text) {
  struct Unit {
    std::string_view name;
    uint64_t ns;
  };
  static constexpr Unit kUnits[] = {{"ns", 1},
                                    {"us", 1'000},
                                    {"ms", 1'000'000},
                                    {"s", 1'000'000'000},
                                    {"m", 60'000'000'000},
                                    {"h", 3'600'000'000'000},
                                    {"d", 86'400'000'000'000}};
  constexpr uint64_t kLimit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (text.empty()) return std::nullopt;
  size_t pos = 0;
  uint64_t total = 0;
  while (pos < text.size()) {
    auto number = read_number(text, pos);
    if (!number) return std::nullopt;
    std::string_view unit = read_unit(text, pos);
    const Unit* found = nullptr;
    for (const Unit& u : kUnits) {
      if (u.name == unit) found = &u;
    }
    if (found == nullptr || mul_overflows(*number, found->ns, kLimit)) return std::nullopt;
    uint64_t part = *number * found->ns;
    if (part > kLimit - total) return std::nullopt;
    total += part;
  }
  return static_cast<int64_t>(total);
}

std::optional<uint64_t> parse_bytes(std::string_view text) {
  struct Unit {
    std::string_view name;
    uint64_t factor;
  };
  static constexpr Unit kUnits[] = {{"", 1},
                                    {"B", 1},
                                    {"KB", 1000ULL},
                                    {"MB", 1000ULL * 1000},
                                    {"GB", 1000000000ULL},
                                    {"TB", 1000000000000ULL},
                                    {"KiB", 1ULL << 10},
                                    {"MiB", 1ULL << 20},
                                    {"GiB", 1ULL << 30},
                                    {"TiB", 1ULL << 40}};
  size_t pos = 0;
  auto number = read_number(text, pos);
  if (!number) return std::nullopt;
  while (pos < text.size() && text[pos] == ' ') ++pos;
  std::string_view unit = read_unit(text, pos);
  if (pos != text.size()) return std::nullopt;
  for (const Unit& u : kUnits) {
    if (u.name == unit) {
      if (mul_overflows(*number, u.factor, std::numeric_limits<uint64_t>::max())) {
        return std::nullopt;
      }
      return *number * u.factor;
    }
  }
  return std::nullopt;
}

std::string format_duration_ns(int64_t ns) {
  if (ns < 0) return "-" + format_duration_ns(-ns);
  if (ns < 1'000'000'000) {
    char buf[32];
    if (ns % 1'000'000 == 0) {
      std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ns / 1'000'000));
    } else if (ns % 1'000 == 0) {
      std::snprintf(buf, sizeof buf, "%lldus", static_cast<long long>(ns / 1'000));
    } else {
      std::snprintf(buf, sizeof buf, "%lldns", static_cast<long long>(ns));
    }
    return buf;
  }
  int64_t s = ns / 1'000'000'000;
  std::string out;
  const int64_t d = s / 86400, h = (s / 3600) % 24, m = (s / 60) % 60, sec = s % 60;
  if (d) out += std::to_string(d) + "d";
  if (h) out += std::to_string(h) + "h";
  if (m) out += std::to_string(m) + "m";
  if (sec || out.empty()) out += std::to_string(sec) + "s";
  return out;
}

std::string format_bytes(uint64_t bytes) {
  static constexpr const char* kNames[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 4) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  if (unit == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kNames[unit]);
  }
  return buf;
}

std::string format_time_ns(int64_t ns, bool compact) {
  std::time_t t = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char date[32];
  std::strftime(date, sizeof date, compact ? "%Y%m%dT%H%M%SZ" : "%Y-%m-%dT%H:%M:%S", &tm);
  if (compact) return date;
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03lldZ", date,
                static_cast<long long>((ns % 1'000'000'000) / 1'000'000));
  return out;
}

}  // namespace outpost
