#pragma once
// Tests' and benchmarks' way to put a protobuf event into a wire::EventList: uplink/ takes
// serialized events only, so that its headers need none of the generated event classes.
#include <doctest/doctest.h>

#include "outpost/v1/event.pb.h"
#include "uplink/frame.hpp"

namespace outpost::test {

inline void push_event(wire::EventList& list, const v1::Event& e) {
  const bool ok = list.push_back(e.SerializeAsString());
  REQUIRE_MESSAGE(ok, "not a valid outpost.v1.Event");
}

}  // namespace outpost::test
