// Fuzz target for the parsers of `outpost-agent buffer import`: NDJSON lines and
// length-delimited protobuf events from stdin. Built as a libFuzzer target with clang
// (-DOUTPOST_FUZZ=ON); under ctest, fuzz_corpus_main.cpp replays the seed corpus.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "proto/event_codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string agent_id;
  auto from_json = outpost::proto::event_from_json(input, &agent_id);
  if (from_json) {
    // Whatever parses must print back and parse again to the same body.
    auto shown = outpost::proto::event_to_json(from_json->body);
    if (!shown) __builtin_trap();
    auto again = outpost::proto::event_from_json(*shown);
    if (!again || again->kind != from_json->kind) __builtin_trap();
  }
  (void)outpost::proto::event_from_bytes(input, &agent_id);
  std::istringstream in{std::string(input)};
  for (int i = 0; i < 64; ++i) {
    auto message = outpost::proto::read_delimited(in, 1 << 16);
    if (!message || !*message) break;
    (void)outpost::proto::event_from_bytes(**message);
  }
  return 0;
}
