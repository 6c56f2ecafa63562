// Payloads against their contracts (proto/validator.hpp), with the build's descriptor set:
// each reason code, the unknown-field and unknown-schema policies, and each sensitive-field
// action on JSON and on protobuf payloads.
#include "proto/validator.hpp"

#include <doctest/doctest.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/util/json_util.h>

#include <random>

#include "common/tls/digest.hpp"
#include "outpost/v1/event.pb.h"
#include "proto/event_view.hpp"

using namespace outpost;

namespace {

constexpr const char* kKey = "test-key-0123456789";

std::shared_ptr<const proto::Validator> validator(proto::ValidatorOptions o = {}) {
  auto registry = proto::ContractRegistry::load(OUTPOST_DESCRIPTOR_SET);
  REQUIRE(registry);
  if (o.hash_key.empty()) o.hash_key = kKey;
  auto v = proto::Validator::make(*registry, std::move(o));
  REQUIRE_MESSAGE(v, v.error().describe());
  return *v;
}

std::string json_event(const std::string& schema, const std::string& json) {
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_JSON);
  e.set_schema(schema);
  e.set_json(json);
  return e.SerializeAsString();
}

proto::Verdict check(const proto::Validator& v, const std::string& schema,
                     const std::string& json) {
  return v.check(json_event(schema, json), schema);
}

std::string reason(const proto::Verdict& v) { return std::string(v.bad ? v.bad->code : "good"); }

}  // namespace

TEST_CASE("a good order.v1 passes, named with its contract and fingerprint") {
  auto v = validator();
  auto r =
      check(*v, "order.v1",
            R"({"order_id":"o-1","amountCents":"4250","currency":"EUR",)"
            R"("items":[{"sku":"a","quantity":3,"unit_price_cents":1416}],"schema":"order.v1"})");
  CHECK_MESSAGE(!r.bad, (r.bad ? r.bad->message : ""));
  CHECK(r.contract == "order.v1");
  CHECK(r.fingerprint.size() == 16);
  CHECK(r.payload_field == 0);  // no sensitive field in it: written as it came
  // Integers as protobuf reads them: 1.0 and 1e2 are integers, strings of digits too.
  CHECK(reason(check(*v, "order.v1", R"({"amount_cents":1e2,"items":[{"quantity":"7"}]})")) ==
        "good");
  CHECK(reason(check(*v, "order.v1", R"({"order_id":null,"items":null})")) == "good");
  CHECK(reason(check(*v, "order.v1", " {}\n")) == "good");
}

TEST_CASE("each way a payload breaks its contract has its reason code and a field path") {
  auto v = validator();
  struct Case {
    const char* json;
    const char* code;
    const char* in_message;
  };
  const Case cases[] = {
      {R"({"order_id":5})", "wrong_type", "$.order_id: expected a string, got a number"},
      {R"({"amount_cents":"ten"})", "wrong_type", "$.amount_cents"},
      {R"({"amount_cents":true})", "wrong_type", "got a boolean"},
      {R"({"items":{"sku":"a"}})", "wrong_type", "$.items: expected an array"},
      {R"({"items":[{"quantity":-1}]})", "out_of_range", "$.items[0].quantity"},
      {R"({"items":[{"sku":"a"},{"quantity":4294967296}]})", "out_of_range", "$.items[1].quantity"},
      {R"({"amount_cents":1.5})", "out_of_range", "$.amount_cents"},
      {R"({"amount_cents":99999999999999999999})", "out_of_range", "$.amount_cents"},
      {R"({"order_id":"a","shipping":"fast"})", "unknown_field", "no field \"shipping\""},
      {R"({"items":[{"colour":"red"}]})", "unknown_field", "$.items[0].colour"},
      {R"({"order_id":"a")", "not_json", ""},
      {R"([{"order_id":"a"}])", "not_json", "not a JSON object"},
      {R"({"order_id":"a"} x)", "not_json", "text after"},
      {"{\"order_id\":\"\xff\"}", "not_json", "UTF-8"},
      {R"({"items":[null]})", "wrong_type", "null in an array"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.json);
    auto r = check(*v, "order.v1", c.json);
    REQUIRE(r.bad);
    CHECK(r.bad->code == c.code);
    CHECK(r.bad->message.find("order.v1: ") == 0);
    CHECK_MESSAGE(r.bad->message.find(c.in_message) != std::string::npos, r.bad->message);
  }
}

TEST_CASE("unknown fields: rejected by default, kept by the schema's policy") {
  proto::ValidatorOptions keep;
  keep.keep_unknown_fields_by_schema["order.v1"] = true;
  auto v = validator(keep);
  auto r = check(*v, "order.v1", R"({"order_id":"a","shipping":{"speed":[1,2,{"x":null}]}})");
  CHECK(!r.bad);
  // Even kept, it must be JSON; and nesting is bounded.
  CHECK(reason(check(*v, "order.v1", R"({"shipping":[1,}"})")) == "not_json");
  std::string deep = R"({"shipping":)" + std::string(70, '[') + std::string(70, ']') + "}";
  CHECK(reason(check(*v, "order.v1", deep)) == "too_deep");
  // A schema named in the policy that the set has not is a configuration error.
  auto registry = proto::ContractRegistry::load(OUTPOST_DESCRIPTOR_SET);
  proto::ValidatorOptions typo;
  typo.hash_key = kKey;
  typo.keep_unknown_fields_by_schema["ordr.v1"] = true;
  auto bad = proto::Validator::make(*registry, typo);
  REQUIRE(!bad);
  CHECK(bad.error().message.find("ordr.v1") != std::string::npos);
}

TEST_CASE("an unknown schema is bad unless the policy passes it") {
  auto strict = validator();
  auto r = check(*strict, "refund.v1", R"({"a":1})");
  REQUIRE(r.bad);
  CHECK(r.bad->code == "unknown_schema");
  CHECK(!strict->knows("refund.v1"));
  proto::ValidatorOptions pass;
  pass.unknown_schema_pass = true;
  auto lenient = validator(pass);
  auto p = check(*lenient, "refund.v1", R"(not even json)");
  CHECK(!p.bad);
  CHECK(p.contract.empty());  // written unvalidated, and its provenance says so
}

TEST_CASE("a payload of the wrong kind for its contract, and none at all") {
  auto v = validator();
  v1::Event pixel;
  pixel.set_kind(v1::EVENT_KIND_PIXEL);
  pixel.set_schema("order.v1");
  pixel.mutable_pixel()->set_site_id("s");
  auto r = v->check(pixel.SerializeAsString(), "order.v1");
  REQUIRE(r.bad);
  CHECK(r.bad->code == "wrong_payload");
  v1::Event empty;
  empty.set_schema("order.v1");
  CHECK(reason(v->check(empty.SerializeAsString(), "order.v1")) == "missing_payload");
  // A pixel hit under its own contract is good.
  pixel.set_schema("pixel.v1");
  CHECK(reason(v->check(pixel.SerializeAsString(), "pixel.v1")) == "good");
}

TEST_CASE("protobuf payloads: wire types and unknown fields against the contract") {
  auto v = validator();
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_SENSOR);
  e.set_schema("sensor.reading.v1");
  e.mutable_sensor()->set_metric("temp");
  e.mutable_sensor()->set_number(21.5);
  CHECK(reason(v->check(e.SerializeAsString(), "sensor.reading.v1")) == "good");
  // "number" (field 3, a double) sent as a varint, as a string-valued reading would arrive
  // from a device that wrote its own encoder.
  std::string sensor = "\x12\x04temp\x18\x05";  // metric = "temp", field 3 varint 5
  std::string bytes = std::string("\x18\x02\x32\x11sensor.reading.v1\x5a") +
                      static_cast<char>(sensor.size()) + sensor;
  auto r = v->check(bytes, "sensor.reading.v1");
  REQUIRE(r.bad);
  CHECK(r.bad->code == "wrong_type");
  CHECK(r.bad->message.find("$.number") != std::string::npos);
  // An unknown field number in the payload.
  std::string extra = "\x12\x04temp\xa0\x06\x01";  // field 100, varint
  bytes = std::string("\x18\x02\x32\x11sensor.reading.v1\x5a") + static_cast<char>(extra.size()) +
          extra;
  auto u = v->check(bytes, "sensor.reading.v1");
  REQUIRE(u.bad);
  CHECK(u.bad->code == "unknown_field");
}

TEST_CASE("sensitive fields: HASH, REDACT, DROP and TRUNCATE_IP never leave raw") {
  auto v = validator();
  auto r = check(*v, "order.v1",
                 R"({"order_id":"o-9","customer_email":"ann@example.com",)"
                 R"("payment_card":"4111111111111111","internal_note":"call her",)"
                 R"("clientIp":"198.51.100.23","currency":"EUR"})");
  REQUIRE_MESSAGE(!r.bad, r.bad->message);
  REQUIRE(r.payload_field == 12);
  const std::string& out = r.payload;
  CAPTURE(out);
  CHECK(out.find("ann@example.com") == std::string::npos);
  CHECK(out.find("4111") == std::string::npos);
  CHECK(out.find("call her") == std::string::npos);
  CHECK(out.find("internal_note") == std::string::npos);
  CHECK(out.find("198.51.100.23") == std::string::npos);
  const std::string token = tls::hmac_sha256_hex(kKey, "ann@example.com");
  CHECK(out == R"({"order_id":"o-9","customer_email":")" + token +
                   R"(","payment_card":"[REDACTED]","clientIp":"198.51.100.0","currency":"EUR"})");
  // The same value gives the same token (joins still work), another key another token.
  auto again = check(*v, "order.v1", R"({"customer_email":"ann@example.com"})");
  CHECK(again.payload.find(token) != std::string::npos);
  CHECK(proto::apply_sensitivity("hash", "ann@example.com", "other-key") != token);
  CHECK(proto::apply_sensitivity("truncate_ip", "2001:db8:1:2:3:4:5:6", "") == "2001:db8:1::");
  CHECK(proto::apply_sensitivity("truncate_ip", "not an ip", "") == "[REDACTED]");
  // The rewritten payload is still a good order.v1, and checking it again changes nothing:
  // an event validated at the edge and again at the gateway is hashed once.
  auto twice = check(*v, "order.v1", out);
  CHECK(reason(twice) == "good");
  CHECK(twice.payload == out);

  // A pixel hit's client_ip (TRUNCATE_IP) in its protobuf bytes.
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_PIXEL);
  e.set_schema("pixel.v1");
  e.mutable_pixel()->set_client_ip("203.0.113.77");
  e.mutable_pixel()->set_site_id("shop");
  auto p = v->check(e.SerializeAsString(), "pixel.v1");
  REQUIRE(!p.bad);
  REQUIRE(p.payload_field == 10);
  v1::PixelHit hit;
  REQUIRE(hit.ParseFromString(p.payload));
  CHECK(hit.client_ip() == "203.0.113.0");
  CHECK(hit.site_id() == "shop");
  // One the source truncated already is left as it came: no rewrite, no copy.
  e.mutable_pixel()->set_client_ip("203.0.113.0");
  auto same = v->check(e.SerializeAsString(), "pixel.v1");
  REQUIRE(!same.bad);
  CHECK(same.payload_field == 0);
  for (const auto& [in, want] :
       std::vector<std::pair<std::string, std::string>>{{"10.0.0.255", "10.0.0.0"},
                                                        {"0.0.0.0", "0.0.0.0"},
                                                        {"255.255.255.255", "255.255.255.0"},
                                                        {"256.1.1.1", "[REDACTED]"},
                                                        {"1.2.3", "[REDACTED]"},
                                                        {"1.2.3.4.5", "[REDACTED]"},
                                                        {"", "[REDACTED]"},
                                                        {"::ffff:1.2.3.4", "::"}}) {
    CAPTURE(in);
    CHECK(proto::apply_sensitivity("truncate_ip", in, "") == want);
  }
}

TEST_CASE("a contract with a HASH field needs the key: refused without it") {
  auto registry = proto::ContractRegistry::load(OUTPOST_DESCRIPTOR_SET);
  REQUIRE(registry);
  auto v = proto::Validator::make(*registry, {});
  REQUIRE(!v);
  CHECK(v.error().message.find("order.v1 has a HASH field") != std::string::npos);
  CHECK(v.error().message.find("contracts.hash_key_file") != std::string::npos);
}

TEST_CASE("the written event: payload replaced, the agent's provenance replaced by ours") {
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_JSON);
  e.set_schema("order.v1");
  e.set_json(R"({"customer_email":"x"})");
  e.mutable_provenance()->set_gateway_id("forged");
  const std::string bytes = e.SerializeAsString();
  proto::ProvenanceFields p;
  p.gateway_id = "gw-1";
  p.received_at = 1234;
  p.contract = "order.v1";
  p.contract_fingerprint = "abcd";
  p.payload_sha256 = "ff";
  std::string out = "prefix";
  auto schema = proto::append_with_provenance(out, bytes, 12, R"({"customer_email":"h"})", p);
  const std::string written = out.substr(6);
  CHECK(written.substr(schema.first, schema.second) == "order.v1");
  v1::Event back;
  REQUIRE(back.ParseFromString(written));
  CHECK(back.json() == R"({"customer_email":"h"})");
  CHECK(back.provenance().gateway_id() == "gw-1");
  CHECK(back.provenance().received_at() == 1234);
  CHECK(back.provenance().contract() == "order.v1");
  auto read = proto::read_provenance(written);
  CHECK(read.gateway_id == "gw-1");
  CHECK(read.payload_sha256 == "ff");
  std::string rendered;
  proto::append_event_json(rendered, written);
  CHECK(rendered.find(R"("provenance":{"gateway_id":"gw-1","received_at":"1234")") !=
        std::string::npos);
  CHECK(rendered.find("forged") == std::string::npos);
}

TEST_CASE("differential: the validator agrees with protobuf's JSON parser on random order.v1s") {
  namespace pb = google::protobuf;
  auto v = validator();
  const pb::Descriptor* d = v->registry().find("order.v1");
  pb::DynamicMessageFactory factory;
  std::mt19937_64 rng(20261207);
  auto pick = [&](std::initializer_list<const char*> xs) {
    return std::string(*(xs.begin() + static_cast<long>(rng() % xs.size())));
  };
  auto scalar = [&] {
    return pick({"0",
                 "-1",
                 "7",
                 "1.0",
                 "1.5",
                 "1e2",
                 "-0",
                 "4294967296",
                 "2147483648",
                 "-2147483649",
                 "9223372036854775807",
                 "9223372036854775808",
                 "1e400",
                 "\"12\"",
                 "\"12.0\"",
                 "\"1e3\"",
                 "\"-5\"",
                 "\"x\"",
                 "\"\"",
                 "true",
                 "false",
                 "null",
                 "[]",
                 "{}",
                 "\"\\u00e9\"",
                 "\"a\\\"b\"",
                 "0.5e1",
                 "\"NaN\"",
                 "\"Infinity\""});
  };
  auto item = [&] {
    std::string s = "{";
    int n = static_cast<int>(rng() % 4);
    for (int i = 0; i < n; ++i) {
      if (i > 0) s += ",";
      s += "\"" + pick({"sku", "quantity", "unit_price_cents", "unitPriceCents", "colour"}) +
           "\":" + scalar();
    }
    return s + "}";
  };
  int agree_good = 0, agree_bad = 0;
  for (int round = 0; round < 20'000; ++round) {
    std::string s = "{";
    int n = static_cast<int>(rng() % 5);
    for (int i = 0; i < n; ++i) {
      if (i > 0) s += ",";
      const std::string key = pick({"order_id", "orderId", "amount_cents", "amountCents",
                                    "currency", "items", "customer_email", "client_ip", "nope"});
      std::string value = scalar();
      if (key == "items" && rng() % 3 != 0) {
        value = "[";
        int k = static_cast<int>(rng() % 3);
        for (int j = 0; j < k; ++j) value += (j > 0 ? "," : "") + (rng() % 5 ? item() : scalar());
        value += "]";
      }
      s += "\"" + key + "\":" + value;
    }
    s += "}";
    CAPTURE(s);
    std::unique_ptr<pb::Message> m(factory.GetPrototype(d)->New());
    const bool protobuf_ok = pb::util::JsonStringToMessage(s, m.get()).ok();
    const bool ours = !check(*v, "order.v1", s).bad;
    // Where protobuf 3.21 is laxer than its own mapping, the validator keeps to the mapping:
    // an object, arrays inside the array, or null elements where a repeated field is expected.
    const bool lax = s.find("\"items\":{") != std::string::npos ||
                     s.find("[[") != std::string::npos || s.find(",[]") != std::string::npos ||
                     s.find("[null") != std::string::npos ||
                     s.find(",null]") != std::string::npos || s.find(",null,") != std::string::npos;
    if (lax && protobuf_ok && !ours) continue;
    CHECK(ours == protobuf_ok);
    (ours ? agree_good : agree_bad) += ours == protobuf_ok;
  }
  MESSAGE(agree_good << " good and " << agree_bad << " bad inputs judged alike");
}
