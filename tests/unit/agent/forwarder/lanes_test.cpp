// The forwarder's two lanes as a session accounts for them (agent/forwarder/lanes.hpp): what
// goes in the live lane, the share, and up to where the buffer may delete.
#include "agent/forwarder/lanes.hpp"

#include <doctest/doctest.h>

using namespace outpost;
using namespace outpost::agent;

TEST_CASE("the live lane takes the chosen kinds and priorities, off by default") {
  LiveLaneOptions o;
  CHECK_FALSE(o.enabled());
  o.kinds[kind_index(EventKind::sensor)] = true;
  CHECK(o.enabled());
  CHECK(o.takes(EventKind::sensor, 0));
  CHECK_FALSE(o.takes(EventKind::pixel, 7));
  o.min_priority = 5;
  CHECK(o.takes(EventKind::pixel, 7));
  CHECK(o.takes(EventKind::json, 5));
  CHECK_FALSE(o.takes(EventKind::json, 4));
}

TEST_CASE("the buffer deletes only up to where both lanes are acknowledged") {
  LaneBook book(20, 100);
  CHECK(book.first_choice() == kLiveLane);
  CHECK(book.next_first(kBulkLane) == 101);
  // Bulk sends 101..300 (live events among them are passed over), live sends 150 and 250.
  book.sent(kBulkLane, 300, 300, 1000, 1);
  book.sent(kLiveLane, 250, 260, 100, 2);
  CHECK(book.next_first(kLiveLane) == 251);
  CHECK(book.next_first(kBulkLane) == 301);
  // The live batch is acknowledged first: nothing below the bulk batch in flight may go.
  CHECK(book.acked(250) == kLiveLane);
  CHECK_FALSE(book.deletable());
  // Then the bulk batch: up to 260, where the live lane has looked (not 300: a live event
  // in 261..300 may not be sent yet).
  CHECK(book.acked(300) == kBulkLane);
  CHECK(book.deletable() == 260u);
  // The live lane looks further and finds nothing: up to the bulk lane's end.
  book.found_nothing(kLiveLane, 320);
  CHECK(book.deletable() == 300u);
  CHECK_FALSE(book.acked(999));
}

TEST_CASE("the live lane goes first while within its share; a retry-later sends again") {
  LaneBook book(20, 0);
  book.sent(kLiveLane, 10, 10, 300, 1);  // 100 % live so far: the bulk lane's turn
  CHECK(book.first_choice() == kBulkLane);
  book.sent(kBulkLane, 500, 500, 1200, 1);  // live 300 of 1500 = 20 %: live again
  CHECK(book.first_choice() == kLiveLane);
  CHECK(book.oldest_collected_ns(kLiveLane) == 1);
  // A lane with nothing to send starts the share over.
  book.found_nothing(kLiveLane, 600);
  CHECK(book.first_choice() == kLiveLane);
  CHECK(book.oldest_collected_ns(kLiveLane) == 1);  // its batch is still in flight
  book.abandon();
  CHECK(book.next_first(kLiveLane) == 1);
  CHECK(book.next_first(kBulkLane) == 1);
  CHECK(book.scanned(kBulkLane) == 0);
  CHECK(book.oldest_collected_ns(kBulkLane) == 1);  // not idle: it has events to send again
  CHECK_FALSE(book.deletable());
}
