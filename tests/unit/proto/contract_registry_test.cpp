// The payload contracts loaded at run time (proto/contract_registry.hpp) from the descriptor
// set the build makes, and the sets it must refuse at start.
#include "proto/contract_registry.hpp"

#include <doctest/doctest.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <fstream>

#include "outpost/v1/contract_options.pb.h"
#include "proto/compat.hpp"
#include "tests/support/temp_dir.hpp"

using namespace outpost;
namespace pb = google::protobuf;

namespace {

pb::FileDescriptorSet built_set() {
  pb::FileDescriptorSet set;
  auto r = proto::load_descriptor_set(OUTPOST_DESCRIPTOR_SET, &set);
  REQUIRE(r);
  return set;
}

std::string write(const test::TempDir& dir, const std::string& name,
                  const pb::FileDescriptorSet& set) {
  const std::string path = dir.path() + "/" + name;
  std::ofstream(path, std::ios::binary) << set.SerializeAsString();
  return path;
}

pb::FileDescriptorProto* file(pb::FileDescriptorSet& set, const std::string& name) {
  for (auto& f : *set.mutable_file()) {
    if (f.name() == name) return &f;
  }
  FAIL("no file " << name);
  return nullptr;
}

}  // namespace

TEST_CASE("the build's descriptor set maps each schema to its message by the option") {
  auto registry = proto::ContractRegistry::load(OUTPOST_DESCRIPTOR_SET);
  REQUIRE_MESSAGE(registry, registry.error().describe());
  auto schemas = (*registry)->schemas();
  CHECK(schemas == std::map<std::string, std::string>{
                       {"order.v1", "outpost.contracts.v1.Order"},
                       {"pixel.v1", "outpost.v1.PixelHit"},
                       {"sensor.reading.v1", "outpost.v1.SensorReading"},
                   });
  const pb::Descriptor* order = (*registry)->find("order.v1");
  REQUIRE(order != nullptr);
  CHECK(order->FindFieldByName("amount_cents") != nullptr);
  CHECK((*registry)->find("Order") == nullptr);  // not guessed from names
  CHECK((*registry)->find("order.v2") == nullptr);
  CHECK((*registry)->fingerprint().size() == 64);
}

TEST_CASE("a schema added to the set is there after a load, with no rebuild") {
  test::TempDir dir;
  pb::FileDescriptorSet set = built_set();
  auto* order_file = file(set, "outpost/contracts/v1/order.proto");
  auto* refund = order_file->add_message_type();
  refund->set_name("Refund");
  refund->mutable_options()->SetExtension(v1::schema, "refund.v1");
  auto* id = refund->add_field();
  id->set_name("order_id");
  id->set_number(1);
  id->set_type(pb::FieldDescriptorProto::TYPE_STRING);
  id->set_label(pb::FieldDescriptorProto::LABEL_OPTIONAL);
  auto registry = proto::ContractRegistry::load(write(dir, "more.desc", set));
  REQUIRE_MESSAGE(registry, registry.error().describe());
  REQUIRE((*registry)->find("refund.v1") != nullptr);
  CHECK((*registry)->find("refund.v1")->full_name() == "outpost.contracts.v1.Refund");
  auto before = proto::ContractRegistry::load(OUTPOST_DESCRIPTOR_SET);
  REQUIRE(before);
  CHECK((*registry)->fingerprint() != (*before)->fingerprint());
}

TEST_CASE("sets that cannot be used are refused with the file and the reason") {
  test::TempDir dir;
  SUBCASE("a schema named twice") {
    pb::FileDescriptorSet set = built_set();
    auto* copy = file(set, "outpost/contracts/v1/order.proto")->add_message_type();
    copy->set_name("OrderCopy");
    copy->mutable_options()->SetExtension(v1::schema, "order.v1");
    auto r = proto::ContractRegistry::load(write(dir, "twice.desc", set));
    REQUIRE_FALSE(r);
    CHECK(r.error().describe().find("schema \"order.v1\" is named by both "
                                    "outpost.contracts.v1.Order and "
                                    "outpost.contracts.v1.OrderCopy") != std::string::npos);
  }
  SUBCASE("an import missing from the set") {
    pb::FileDescriptorSet set = built_set();
    pb::FileDescriptorSet without;
    for (const auto& f : set.file()) {
      if (f.name() != "outpost/v1/contract_options.proto") *without.add_file() = f;
    }
    const std::string path = write(dir, "partial.desc", without);
    auto r = proto::ContractRegistry::load(path);
    REQUIRE_FALSE(r);
    CHECK(r.error().describe().find(path + ": does not build") != std::string::npos);
    CHECK(r.error().describe().find("--include_imports") != std::string::npos);
  }
  SUBCASE("not a descriptor set") {
    const std::string path = dir.path() + "/junk.desc";
    std::ofstream(path) << "junk";
    auto r = proto::ContractRegistry::load(path);
    REQUIRE_FALSE(r);
    CHECK(r.error().describe().find("is not a descriptor set") != std::string::npos);
  }
}
