#pragma once
// Clock: the one seam through which Outpost logic learns the time (STYLE.md rule 4), so tests
// can use ManualClock and never sleep. Two times: now_ns(), nanoseconds since the Unix epoch
// (wall clock), the unit of Event.event_time and Event.collected_at; and mono_ns(), a
// monotonic count of nanoseconds from an arbitrary origin, which deadlines, timeouts, backoff
// and rates are measured in (the wall clock may jump). wait_until() is how a thread sleeps
// until a monotonic deadline: on ManualClock the deadline is in its virtual time.
//
// Thread-safety: every Clock may be called from any thread. A Clock must outlive the components
// it is passed to.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace outpost {

class Clock {
 public:
  virtual ~Clock() = default;
  // Nanoseconds since the Unix epoch.
  virtual int64_t now_ns() const = 0;
  // Monotonic nanoseconds (arbitrary origin).
  virtual int64_t mono_ns() const = 0;
  // Blocks on `cv` (whose mutex `lock` holds) until mono_ns() reaches `mono_deadline_ns` or
  // the cv is notified. It may return early: callers check their condition and the time again.
  virtual void wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                          int64_t mono_deadline_ns) const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t now_ns() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  int64_t mono_ns() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                  int64_t mono_deadline_ns) const override {
    const int64_t left = mono_deadline_ns - mono_ns();
    if (left > 0) cv.wait_for(lock, std::chrono::nanoseconds(left));
  }
};

// A clock that moves only when told to; both of its times move together. For tests.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ns = 1'700'000'000'000'000'000) : now_(start_ns) {}
  int64_t now_ns() const override { return now_.load(); }
  int64_t mono_ns() const override { return mono_.load(); }
  // Waits a real millisecond at most, so that a waiter sees the test's advance_ns() soon
  // without the clock having to know every condition variable.
  void wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                  int64_t mono_deadline_ns) const override {
    if (mono_deadline_ns > mono_ns()) cv.wait_for(lock, std::chrono::milliseconds(1));
  }
  void advance_ns(int64_t delta) {
    now_ += delta;
    mono_ += delta;
  }
  // Sets the wall clock only (a jump); the monotonic time does not go back.
  void set_ns(int64_t t) { now_ = t; }

 private:
  std::atomic<int64_t> now_;
  std::atomic<int64_t> mono_{1'000'000'000};
};

}  // namespace outpost
