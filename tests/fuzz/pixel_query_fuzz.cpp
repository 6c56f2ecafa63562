// Fuzz target for the pixel's query-string parser (GET /p.gif?...). Whatever comes in, the
// parameters are bounded and every key and value is valid UTF-8, so that the PixelHit parses
// back. Built as a libFuzzer target with clang (-DOUTPOST_FUZZ=ON); under ctest,
// fuzz_corpus_main.cpp replays the seed corpus.
#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/sources/http/http_source.hpp"
#include "outpost/v1/event.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view query(reinterpret_cast<const char*>(data), size);
  auto parsed = outpost::agent::parse_pixel_query(query, 20, 64, "site");
  if (parsed.params.size() > 20) __builtin_trap();
  outpost::v1::PixelHit hit;
  hit.set_site_id(parsed.site_id);
  for (auto& [k, v] : parsed.params) {
    if (k.size() > 64 * 1 || v.size() > 64) __builtin_trap();
    (*hit.mutable_query())[k] = v;
  }
  outpost::v1::PixelHit back;
  if (!back.ParseFromString(hit.SerializeAsString())) __builtin_trap();  // invalid UTF-8
  return 0;
}
