#include "agent/generator/synthetic_generator.hpp"

#include <chrono>
#include <deque>
#include <future>

#include "common/log.hpp"
#include "outpost/v1/event.pb.h"

namespace outpost::agent {

NewEvent synthetic_event(uint64_t i, int64_t now_ns) {
  v1::Event e;
  e.set_event_time(now_ns);
  NewEvent out;
  out.event_time_ns = now_ns;
  switch (i % 3) {
    case 0: {
      e.set_kind(v1::EVENT_KIND_PIXEL);
      e.set_schema("pixel.v1");
      auto* hit = e.mutable_pixel();
      hit->set_site_id("site-" + std::to_string(i % 7));
      hit->set_path("/p.gif");
      (*hit->mutable_query())["page"] = "/products/" + std::to_string(i % 1000);
      (*hit->mutable_query())["ref"] = "newsletter";
      hit->set_user_agent("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0");
      hit->set_client_ip("192.0.2.0");
      out.kind = EventKind::pixel;
      break;
    }
    case 1: {
      e.set_kind(v1::EVENT_KIND_SENSOR);
      e.set_schema("sensor.reading.v1");
      auto* reading = e.mutable_sensor();
      reading->set_device("dev-" + std::to_string(i % 50));
      reading->set_metric("temperature");
      reading->set_number(20.0 + static_cast<double>(i % 100) / 10.0);
      reading->set_unit("Cel");
      reading->set_topic("sensors/dev-" + std::to_string(i % 50) + "/temperature");
      (*e.mutable_attributes())["site"] = "plant-a";
      out.kind = EventKind::sensor;
      e.set_priority(1);
      out.priority = 1;
      break;
    }
    default: {
      e.set_kind(v1::EVENT_KIND_JSON);
      e.set_schema("order.v1");
      // An order.v1 (proto/outpost/contracts/v1/order.proto) as a till would post it.
      const std::string n = std::to_string(i);
      e.set_json("{\"order_id\":\"north-17-" + n +
                 "\",\"amount_cents\":" + std::to_string(4250 + i % 100) +
                 ",\"currency\":\"EUR\",\"items\":[{\"sku\":\"sku-" + std::to_string(i % 500) +
                 "\",\"quantity\":3,\"unit_price_cents\":1416}]}");
      out.kind = EventKind::json;
      break;
    }
  }
  out.body = e.SerializeAsString();
  return out;
}

SyntheticGenerator::SyntheticGenerator(Buffer& buffer, const Clock& clock, GeneratorConfig config)
    : buffer_(buffer), clock_(clock), config_(config) {}

SyntheticGenerator::~SyntheticGenerator() { stop(); }

void SyntheticGenerator::start() {
  thread_ = std::thread([this] { run(); });
}

void SyntheticGenerator::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void SyntheticGenerator::run() {
  using steady = std::chrono::steady_clock;
  constexpr uint64_t kBatch = 100;
  constexpr size_t kInFlight = 64;  // appends awaiting durability at once
  const auto start = steady::now();
  std::deque<std::future<Result<AppendResult>>> pending;
  auto settle = [&](std::future<Result<AppendResult>>& f, uint64_t n) {
    Result<AppendResult> r = f.get();
    if (r) {
      accepted_ += n;
    } else {
      refused_ += n;
    }
  };
  std::deque<uint64_t> sizes;
  uint64_t made = 0;
  while (!stop_ && (config_.events == 0 || made < config_.events)) {
    // Pace: the batch starting at `made` is due at made / rate seconds after start.
    auto due = start + std::chrono::nanoseconds(made * 1'000'000'000 / config_.rate);
    if (due > steady::now()) std::this_thread::sleep_until(due);
    uint64_t n = kBatch;
    if (config_.events != 0) n = std::min(n, config_.events - made);
    std::vector<NewEvent> batch;
    batch.reserve(static_cast<size_t>(n));  // at most kBatch
    const int64_t now = clock_.now_ns();
    for (uint64_t i = 0; i < n; ++i) batch.push_back(synthetic_event(made + i, now));
    pending.push_back(buffer_.append(std::move(batch)));
    sizes.push_back(n);
    made += n;
    while (pending.size() > kInFlight) {
      settle(pending.front(), sizes.front());
      pending.pop_front();
      sizes.pop_front();
    }
  }
  while (!pending.empty()) {
    settle(pending.front(), sizes.front());
    pending.pop_front();
    sizes.pop_front();
  }
  log::get("generator")
      ->info("generated {} events: {} durable, {} refused by the buffer", made, accepted_.load(),
             refused_.load());
  done_ = true;
}

}  // namespace outpost::agent
