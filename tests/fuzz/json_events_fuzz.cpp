// Fuzz target for the HTTP source's JSON parser: POST /v1/events bodies (one object or an
// array of objects) and the schema member. Whatever is accepted must be valid JSON objects
// that the stored-event JSON form shows inline. Built as a libFuzzer target with clang
// (-DOUTPOST_FUZZ=ON); under ctest, fuzz_corpus_main.cpp replays the seed corpus.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/json/json_reader.hpp"
#include "outpost/v1/event.pb.h"
#include "proto/event_codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  auto objects = outpost::json::split_json_events(body, 100);
  if (!objects) return 0;
  if (objects->empty() || objects->size() > 100) __builtin_trap();
  for (std::string_view object : *objects) {
    if (object.empty() || object.front() != '{' || object.back() != '}') __builtin_trap();
    (void)outpost::json::json_string_member(object, "schema");
    outpost::v1::Event e;
    e.set_kind(outpost::v1::EVENT_KIND_JSON);
    e.set_json(std::string(object));
    auto line = outpost::proto::event_to_json(e.SerializeAsString());
    // An accepted object is valid JSON, so it must be shown inline, not as base64.
    if (!line || line->find("\"json\":{") == std::string::npos) __builtin_trap();
  }
  return 0;
}
