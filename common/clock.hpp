#pragma once
// Clock: the one seam through which Outpost logic learns the time (STYLE.md rule 4), so tests
// can use ManualClock and never sleep. Times are nanoseconds since the Unix epoch (wall clock),
// the unit of Event.event_time and Event.collected_at.
//
// Thread-safety: every Clock may be called from any thread. A Clock must outlive the components
// it is passed to.

#include <atomic>
#include <chrono>
#include <cstdint>

namespace outpost {

class Clock {
 public:
  virtual ~Clock() = default;
  // Nanoseconds since the Unix epoch.
  virtual int64_t now_ns() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t now_ns() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// A clock that moves only when told to. For tests.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ns = 1'700'000'000'000'000'000) : now_(start_ns) {}
  int64_t now_ns() const override { return now_.load(); }
  void advance_ns(int64_t delta) { now_ += delta; }
  void set_ns(int64_t t) { now_ = t; }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace outpost
