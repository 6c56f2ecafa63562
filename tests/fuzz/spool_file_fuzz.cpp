// Fuzz target for the spool source's reader of a dropped file (agent/sources/spool): NDJSON,
// CSV with its quoting, or a whole file, with small caps so that long lines and records are
// reached. Whatever the bytes, each event it returns is one valid JSON object, errors name a
// line, and reading it again from any offset it reported gives the same remaining events (what
// a resumed source relies on). The first input byte picks the format, the rest is the file.
// Built as a libFuzzer target with clang (the `fuzz` preset); under ctest,
// fuzz_corpus_main.cpp replays the seed corpus.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "agent/sources/spool/spool_reader.hpp"
#include "common/json/json_reader.hpp"

namespace {

int memory_file(std::string_view bytes) {
  int fd = ::memfd_create("spool", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  if (!bytes.empty() && ::write(fd, bytes.data(), bytes.size()) != ssize_t(bytes.size())) {
    std::abort();
  }
  ::lseek(fd, 0, SEEK_SET);
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace outpost::agent;
  if (size == 0) return 0;
  const SpoolFormat format = static_cast<SpoolFormat>(1 + data[0] % 3);
  const std::string_view file(reinterpret_cast<const char*>(data + 1), size - 1);
  const SpoolLimits limits{64, 512};
  SpoolReader reader(memory_file(file), format, limits);
  std::vector<std::string> events;
  std::vector<std::pair<uint64_t, uint64_t>> positions;  // (offset, line) after each event
  while (true) {
    auto next = reader.next();
    if (!next) {
      if (next.error().message.empty()) std::abort();
      break;
    }
    if (!*next) break;
    if (!outpost::json::valid_json_value(**next) || (**next)[0] != '{') std::abort();
    events.push_back(std::move(**next));
    positions.emplace_back(reader.offset(), reader.line());
  }
  // Resuming after the first event reads what followed it.
  if (events.size() >= 2) {
    SpoolReader again(memory_file(file), format, limits);
    if (!again.resume(positions[0].first, positions[0].second)) std::abort();
    for (size_t i = 1; i < events.size(); ++i) {
      auto next = again.next();
      if (!next || !*next || **next != events[i]) std::abort();
    }
  }
  return 0;
}
