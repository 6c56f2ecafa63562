// `outpost-gateway contracts check` as a user runs it: descriptor sets made by protoc from
// .proto files, the exit code, and one line per problem. And the check the test command
// exists for: the contracts of this tree against proto/baseline/. And the gateway loading its
// contracts at start (contracts.descriptor_set).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/e2e/uplink_support.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace outpost::test;

namespace {

const std::string kGateway = OUTPOST_GATEWAY_BIN;

// Writes `proto` as DIR/NAME.proto and makes DIR/NAME.desc with protoc.
std::string descriptor_set(const TempDir& dir, const std::string& name, const std::string& proto) {
  std::ofstream(dir.path() + "/" + name + ".proto") << proto;
  const std::string desc = dir.path() + "/" + name + ".desc";
  auto r = run({"/bin/sh", "-c",
                "protoc --include_imports --descriptor_set_out=" + desc + " -I " + dir.path() +
                    " " + dir.path() + "/" + name + ".proto"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return desc;
}

const char* kOrderV1 = R"(syntax = "proto3";
package shop.v1;
message Order {
  string order_id = 1;
  int64 amount_cents = 2;
  string customer_email = 3;
  repeated string items = 4;
}
)";

}  // namespace

TEST_CASE("the contracts of this tree keep every rule against proto/baseline") {
  auto r = run({kGateway, "contracts", "check", "--old",
                std::string(OUTPOST_SOURCE_DIR) + "/proto/baseline/outpost-v1.txtpb", "--new",
                OUTPOST_DESCRIPTOR_SET});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.out.find("compatible: ") == 0);
}

TEST_CASE("an additive change passes; each breaking change is named and refused with exit 4") {
  TempDir dir;
  const std::string old_desc = descriptor_set(dir, "old", kOrderV1);

  const std::string additive = descriptor_set(dir, "additive", R"(syntax = "proto3";
package shop.v1;
message Order {
  reserved 3;
  reserved "customer_email";
  string order_id = 1;
  int64 amount_cents = 2;
  repeated string items = 4;
  string currency = 5;
}
message Refund { string order_id = 1; }
)");
  auto ok = run({kGateway, "contracts", "check", "--old", old_desc, "--new", additive});
  CHECK_MESSAGE(ok.exit_code == 0, ok.err);
  CHECK(ok.out.find("compatible: 1 messages and enums, 4 fields") == 0);

  const std::string breaking = descriptor_set(dir, "breaking", R"(syntax = "proto3";
package shop.v1;
message Order {
  string order_id = 1;
  string amount_cents = 2;
  string email = 3;
  string items = 4;
}
)");
  auto bad = run({kGateway, "contracts", "check", "--old", old_desc, "--new", breaking});
  CHECK(bad.exit_code == 4);
  CHECK(bad.out.empty());
  CHECK(bad.err.find("shop.v1.Order.amount_cents: changed-type (int64 -> string)\n") !=
        std::string::npos);
  CHECK(bad.err.find("shop.v1.Order.customer_email: reused-number (number 3 now carries "
                     "'email')\n") != std::string::npos);
  CHECK(bad.err.find("shop.v1.Order.items: changed-type (repeated string -> string)\n") !=
        std::string::npos);
  CHECK(bad.err.find("3 breaking change(s)") != std::string::npos);

  const std::string removed = descriptor_set(dir, "removed", R"(syntax = "proto3";
package shop.v1;
message Order {
  string order_id = 1;
  int64 amount_cents = 2;
  repeated string items = 4;
}
)");
  auto gone = run({kGateway, "contracts", "check", "--old", old_desc, "--new", removed});
  CHECK(gone.exit_code == 4);
  CHECK(gone.err.find("shop.v1.Order.customer_email: removed-not-reserved (removed, but neither "
                      "number 3 nor name 'customer_email' is reserved)") != std::string::npos);
}

TEST_CASE("files that are not descriptor sets, and bad flags, get clear errors") {
  TempDir dir;
  std::ofstream(dir.path() + "/junk.desc") << "not a descriptor set";
  auto junk = run({kGateway, "contracts", "check", "--old", dir.path() + "/junk.desc", "--new",
                   OUTPOST_DESCRIPTOR_SET});
  CHECK(junk.exit_code == 1);
  CHECK(junk.err.find("junk.desc is not a descriptor set") != std::string::npos);
  auto missing = run({kGateway, "contracts", "check", "--old", dir.path() + "/nope.desc", "--new",
                      OUTPOST_DESCRIPTOR_SET});
  CHECK(missing.exit_code == 1);
  CHECK(missing.err.find("cannot read") != std::string::npos);
  auto flags = run({kGateway, "contracts", "check", "--old", OUTPOST_DESCRIPTOR_SET});
  CHECK(flags.exit_code == 2);
  CHECK(flags.err.find("--new is required") != std::string::npos);
}

TEST_CASE("the gateway loads its contracts at start, and refuses a set it cannot use") {
  Pki pki;
  TempDir dir;
  const uint16_t port = free_port();
  std::filesystem::create_directories(dir.file("good"));
  write_file(dir.file("hash.key"), "a-test-key");  // order.v1 has a HASH field
  {
    GatewayProc gateway(pki, dir.file("good"), port,
                        "[contracts]\ndescriptor_set = \"" + std::string(OUTPOST_DESCRIPTOR_SET) +
                            "\"\nhash_key_file = \"" + dir.file("hash.key") + "\"\n");
    gateway.start();
    CHECK_MESSAGE(gateway.log().find("contracts: 3 schemas from " +
                                     std::string(OUTPOST_DESCRIPTOR_SET)) != std::string::npos,
                  gateway.log());
    CHECK(gateway.log().find("order.v1 (outpost.contracts.v1.Order)") != std::string::npos);
  }
  std::ofstream(dir.file("junk.desc")) << "junk";
  std::filesystem::create_directories(dir.file("bad"));
  write_file(dir.file("bad/gateway.toml"),
             "[tls]\nca_file = \"" + pki.main + "/ca.crt\"\ncert_file = \"" + pki.main +
                 "/gateway.crt\"\nkey_file = \"" + pki.main +
                 "/gateway.key\"\n[sink.file]\ndir = \"" + dir.file("bad/sink") +
                 "\"\n[contracts]\ndescriptor_set = \"" + dir.file("junk.desc") + "\"\n");
  auto bad = run({kGateway, "-c", dir.file("bad/gateway.toml")});
  CHECK(bad.exit_code == 2);
  CHECK_MESSAGE(bad.err.find("contracts: " + dir.file("junk.desc") + " is not a descriptor set") !=
                    std::string::npos,
                bad.err);
  CHECK_FALSE(std::filesystem::exists(dir.file("bad/sink")));  // refused before the sink opened
}
