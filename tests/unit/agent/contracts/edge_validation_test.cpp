// Edge validation (agent/contracts/edge_validation.hpp) in front of a fake buffer: what a
// source hands over is stored or quarantined, and when the quarantine cannot keep a bad event
// the whole append is refused, so that nothing the source accepts is lost uncounted.
#include "agent/contracts/edge_validation.hpp"

#include <doctest/doctest.h>

#include "outpost/v1/event.pb.h"
#include "proto/event_view.hpp"
#include "tests/support/stub_buffer.hpp"

using namespace outpost;
using namespace outpost::agent;

namespace {

// Keeps what it is given; its quarantine fails while `full`.
class FakeBuffer final : public test::StubBuffer {
 public:
  bool full = false;
  std::vector<NewEvent> stored;
  std::vector<QuarantineEntry> quarantined;

  void append(std::vector<NewEvent> events, AppendCallback done, Commit, Acceptance) override {
    AppendResult r;
    r.first_seq = stored.size() + 1;
    for (NewEvent& e : events) stored.push_back(std::move(e));
    r.last_seq = stored.size();
    done(r);
  }
  Result<void> quarantine(QuarantineEntry entry) override {
    if (full) return make_error(buffer_errc::disk_full, "the disk is full");
    quarantined.push_back(std::move(entry));
    return {};
  }
};

NewEvent order(const std::string& json) {
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_JSON);
  e.set_schema("order.v1");
  e.set_json(json);
  NewEvent n;
  n.body = e.SerializeAsString();
  return n;
}

std::shared_ptr<const proto::Validator> validator() {
  auto registry = proto::ContractRegistry::load(OUTPOST_DESCRIPTOR_SET);
  REQUIRE(registry);
  proto::ValidatorOptions o;
  o.hash_key = "k";
  auto v = proto::Validator::make(*registry, o);
  REQUIRE(v);
  return *v;
}

Result<AppendResult> append(Buffer& b, std::vector<NewEvent> events) {
  std::optional<Result<AppendResult>> out;
  b.append(std::move(events), [&](const Result<AppendResult>& r) { out = r; });
  REQUIRE(out);
  return *out;
}

std::vector<NewEvent> mixed() {
  std::vector<NewEvent> v;
  v.push_back(order(R"({"order_id":"a","customer_email":"ann@example.com"})"));
  v.push_back(order(R"({"order_id":"b","amount_cents":"lots"})"));
  v.push_back(order(R"({"order_id":"c"})"));
  return v;
}

}  // namespace

TEST_CASE("good events stored with their sensitive fields applied, bad ones quarantined") {
  FakeBuffer inner;
  EdgeValidatingBuffer edge(inner, validator());
  auto r = append(edge, mixed());
  REQUIRE(r);
  CHECK(inner.stored.size() == 2);
  REQUIRE(inner.quarantined.size() == 1);
  CHECK(inner.quarantined[0].reason.find("wrong_type: order.v1: $.amount_cents") == 0);
  CHECK(inner.stored[0].body.find("ann@example.com") == std::string::npos);
  std::string metrics;
  edge.append_metrics(metrics);
  CHECK(
      metrics.find(
          R"(outpost_agent_contract_quarantined_total{schema="order.v1",reason="wrong_type"} 1)") !=
      std::string::npos);
  CHECK(metrics.find("outpost_agent_contract_valid_total 2") != std::string::npos);
}

TEST_CASE("a bad event the quarantine cannot keep: the whole append is refused, nothing stored") {
  FakeBuffer inner;
  inner.full = true;
  EdgeValidatingBuffer edge(inner, validator());
  auto r = append(edge, mixed());
  REQUIRE(!r);
  CHECK(r.error().code == buffer_errc::disk_full);
  CHECK(inner.stored.empty());  // the source refuses all three: none is lost uncounted
  std::string metrics;
  edge.append_metrics(metrics);
  CHECK(metrics.find("outpost_agent_contract_quarantined_total{") == std::string::npos);
}
