// Fuzz target for the contract validator (proto/validator.hpp), with the build's descriptor
// set: the input as an order.v1 JSON payload, and as the protobuf bytes of a pixel.v1 and a
// sensor.reading.v1 payload. Whatever it accepts, protobuf's own JSON parser must accept too
// (over the same descriptor), and a rewritten payload (sensitive fields applied) must be good
// and come out of a second check unchanged. Built as a libFuzzer target with clang
// (-DOUTPOST_FUZZ=ON); under ctest, fuzz_corpus_main.cpp replays the seed corpus.
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/util/json_util.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/json/json_reader.hpp"
#include "outpost/v1/event.pb.h"
#include "proto/validator.hpp"

namespace {

const outpost::proto::Validator& validator() {
  static const std::shared_ptr<const outpost::proto::Validator> v = [] {
    auto registry = outpost::proto::ContractRegistry::load(OUTPOST_DESCRIPTOR_SET);
    if (!registry) __builtin_trap();
    outpost::proto::ValidatorOptions o;
    o.hash_key = "fuzz-key";
    auto made = outpost::proto::Validator::make(*registry, o);
    if (!made) __builtin_trap();
    return *made;
  }();
  return *v;
}

std::string event(outpost::v1::EventKind kind, const char* schema, int field, std::string_view p) {
  outpost::v1::Event e;
  e.set_kind(kind);
  e.set_schema(schema);
  if (field == 12) e.set_json(std::string(p));
  std::string bytes = e.SerializeAsString();
  if (field != 12) {  // the payload's bytes as they are, valid or not
    bytes.push_back(static_cast<char>((field << 3) | 2));
    uint64_t n = p.size();
    while (n >= 0x80) {
      bytes.push_back(static_cast<char>((n & 0x7f) | 0x80));
      n >>= 7;
    }
    bytes.push_back(static_cast<char>(n));
    bytes.append(p);
  }
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace pb = google::protobuf;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto& v = validator();
  auto verdict = v.check(event(outpost::v1::EVENT_KIND_JSON, "order.v1", 12, input), "order.v1");
  if (!verdict.bad) {
    // protobuf's JSON parser over the same contract accepts it (the envelope's schema member,
    // which the validator allows, taken out first).
    const pb::Descriptor* d = v.registry().find("order.v1");
    pb::DynamicMessageFactory factory;
    std::unique_ptr<pb::Message> m(factory.GetPrototype(d)->New());
    // (A schema member named twice is not found, but is there: skipped as well.)
    bool one_object = false;
    if (!outpost::json::find_member(input, "schema", &one_object) && one_object) {
      auto status = pb::util::JsonStringToMessage(input, m.get());
      if (!status.ok()) __builtin_trap();
    }
    if (verdict.payload_field == 12) {
      const std::string rewritten =
          event(outpost::v1::EVENT_KIND_JSON, "order.v1", 12, verdict.payload);
      auto again = v.check(rewritten, "order.v1");  // its `original` points into `rewritten`
      // Unchanged by a second check: rewritten to the same bytes, or (nothing sensitive left,
      // e.g. a DROP field gone) not rewritten at all.
      const std::string second =
          again.payload_field != 0 ? again.payload : std::string(again.original);
      if (again.bad || second != verdict.payload) __builtin_trap();
    }
  }
  (void)v.check(event(outpost::v1::EVENT_KIND_PIXEL, "pixel.v1", 10, input), "pixel.v1");
  (void)v.check(event(outpost::v1::EVENT_KIND_SENSOR, "sensor.reading.v1", 11, input),
                "sensor.reading.v1");
  return 0;
}
