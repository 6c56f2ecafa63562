// Fuzz target for what the gateway does with a batch's payload before a sink sees it: the
// payload split into its events (wire::decode_payload) and the validation stage
// (gateway/pipeline/validation.hpp) over them, with the build's contracts and a hash key:
// each event checked against its contract, sensitive fields applied, provenance stamped, bad
// ones given a dead-letter record. Whatever the bytes, a batch that decodes comes out with
// one verdict per event, every good event still an Event protobuf's parser accepts, and every
// dead letter a JSON object. The first input byte is the event count the batch claims.
// Built as a libFuzzer target with clang (the `fuzz` preset); under ctest,
// fuzz_corpus_main.cpp replays the seed corpus.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "common/clock.hpp"
#include "gateway/pipeline/validation.hpp"
#include "outpost/v1/event.pb.h"
#include "proto/event_view.hpp"
#include "uplink/frame.hpp"

namespace {

outpost::gateway::ValidationStage& stage() {
  static outpost::SystemClock clock;
  static std::unique_ptr<outpost::gateway::ValidationStage> s = [] {
    char key_file[] = "/tmp/outpost-fuzz-key-XXXXXX";
    int fd = ::mkstemp(key_file);
    if (fd < 0 || ::write(fd, "fuzz-key", 8) != 8) __builtin_trap();
    ::close(fd);
    outpost::gateway::ValidationConfig c;
    c.descriptor_set = OUTPOST_DESCRIPTOR_SET;
    c.hash_key_file = key_file;
    auto made = outpost::gateway::ValidationStage::start("fuzz-gateway", c, clock);
    ::unlink(key_file);
    if (!made) __builtin_trap();
    return std::move(*made);
  }();
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace outpost;
  if (size == 0) return 0;
  const uint32_t count = data[0] % 16;
  auto events = wire::decode_payload(std::string(reinterpret_cast<const char*>(data + 1), size - 1),
                                     count, 1, 1'000'000);
  if (!events) return 0;
  gateway::SinkBatch batch;
  batch.agent_id = "dev-1";
  batch.first_seq = 1;
  batch.last_seq = 1'000'000;
  batch.events = std::move(*events);
  stage().apply(batch);
  size_t n = 0;
  for (const wire::EventView& e : batch.events) {
    if (batch.bad(e.index)) {
      const std::string& letter = batch.dead_letters[e.index];
      if (letter.front() != '{' || letter.back() != '}') __builtin_trap();
    } else {
      v1::Event parsed;
      if (!parsed.ParseFromString(std::string(e.bytes))) __builtin_trap();
    }
    ++n;
  }
  if (n != count) __builtin_trap();
  if (!batch.dead_letters.empty() && batch.dead_letters.size() != n) __builtin_trap();
  return 0;
}
