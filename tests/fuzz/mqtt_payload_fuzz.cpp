// Fuzz target for the MQTT source's reader of a message (agent/sources/mqtt): the topic
// against the pattern, the payload in any of its forms (a number, JSON with value/ts/unit,
// binary kept or refused), each timestamp unit. Whatever comes in, a reading it makes is a valid
// outpost.v1.Event (strings UTF-8, so it parses back) and a refusal says why. The first input
// byte picks the options, the bytes up to the first 0 are the topic, the rest the payload.
// Built as a libFuzzer target with clang (the `fuzz` preset); under ctest,
// fuzz_corpus_main.cpp replays the seed corpus.
#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/sources/mqtt/mqtt_source.hpp"
#include "outpost/v1/event.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace outpost::agent;
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  const size_t zero = rest.find('\0');
  const std::string topic(rest.substr(0, zero));
  const std::string_view payload = zero == std::string_view::npos ? "" : rest.substr(zero + 1);
  MqttMapping m;
  m.pattern = flags & 1 ? "sensors/{device}/{metric}" : "{device}/site/{metric}";
  m.keep_binary = (flags & 2) != 0;
  m.ts_unit = static_cast<MqttMapping::TsUnit>((flags >> 2) % 5);
  m.max_payload_bytes = 256;
  std::string why;
  auto event = map_reading(topic, payload, m, 1'700'000'000'000'000'000, &why);
  if (!event) {
    if (why.empty()) __builtin_trap();  // a refusal names its reason
    return 0;
  }
  outpost::v1::Event back;
  if (!back.ParseFromString(event->body)) __builtin_trap();  // invalid UTF-8 or bytes
  if (back.kind() != outpost::v1::EVENT_KIND_SENSOR) __builtin_trap();
  return 0;
}
