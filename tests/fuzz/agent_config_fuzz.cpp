// Fuzz target for the agent's configuration reader: any text as agent.toml, through the TOML
// parser and every check of load_agent_config() (agent/config.cpp). Whatever it is, the answer
// is a configuration or an error that names what is wrong; never a crash. Built as a
// libFuzzer target with clang (the `fuzz` preset); under ctest, fuzz_corpus_main.cpp replays
// the seed corpus.
#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/config.hpp"
#include "common/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace outpost;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto doc = ConfigDoc::parse_string(text, "fuzz.toml");
  if (!doc) {
    if (doc.error().message.empty()) __builtin_trap();
    return 0;
  }
  auto config = agent::load_agent_config(*doc);
  if (!config && config.error().message.empty()) __builtin_trap();
  return 0;
}
