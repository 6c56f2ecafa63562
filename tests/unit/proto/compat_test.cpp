// The evolution rules (proto/compat.hpp) on the real contracts: each kind of breaking change
// made to a copy of outpost.v1's descriptors is refused with its rule; additive ones pass.
#include "proto/compat.hpp"

#include <doctest/doctest.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <functional>

#include "outpost/v1/event.pb.h"
#include "outpost/v1/wire.pb.h"

using namespace outpost;
namespace pb = google::protobuf;

namespace {

pb::FileDescriptorSet contracts() {
  pb::FileDescriptorSet set;
  v1::Event::descriptor()->file()->CopyTo(set.add_file());
  v1::Frame::descriptor()->file()->CopyTo(set.add_file());
  return set;
}

pb::DescriptorProto* message(pb::FileDescriptorSet& set, const std::string& name) {
  for (auto& f : *set.mutable_file()) {
    for (auto& m : *f.mutable_message_type()) {
      if (m.name() == name) return &m;
    }
  }
  FAIL("no message " << name);
  return nullptr;
}

pb::FieldDescriptorProto* field(pb::DescriptorProto* m, const std::string& name) {
  for (auto& f : *m->mutable_field()) {
    if (f.name() == name) return &f;
  }
  FAIL("no field " << name);
  return nullptr;
}

void remove_field(pb::DescriptorProto* m, const std::string& name) {
  auto* fields = m->mutable_field();
  for (int i = 0; i < fields->size(); ++i) {
    if (fields->Get(i).name() == name) {
      fields->DeleteSubrange(i, 1);
      return;
    }
  }
  FAIL("no field " << name);
}

// The one problem a change makes, as its line.
std::string problem_of(const std::function<void(pb::FileDescriptorSet&)>& change) {
  pb::FileDescriptorSet changed = contracts();
  change(changed);
  auto report = proto::check_compatibility(contracts(), changed);
  REQUIRE(report.problems.size() == 1);
  return report.problems[0].line();
}

}  // namespace

TEST_CASE("the contracts are compatible with themselves, and every type is looked at") {
  auto report = proto::check_compatibility(contracts(), contracts());
  CHECK(report.problems.empty());
  CHECK(report.types_checked >= 12);  // Event, PixelHit, SensorReading, Frame and its bodies...
  CHECK(report.fields_checked >= 50);
}

TEST_CASE(
    "additive changes pass: a new field, a new enum value, a new message, a removed "
    "field whose number and name are reserved") {
  pb::FileDescriptorSet changed = contracts();
  auto* event = message(changed, "Event");
  auto* tenant = event->add_field();
  tenant->set_name("tenant");
  tenant->set_number(20);
  tenant->set_type(pb::FieldDescriptorProto::TYPE_STRING);
  tenant->set_label(pb::FieldDescriptorProto::LABEL_OPTIONAL);
  auto* kinds = changed.mutable_file(0)->mutable_enum_type(0);
  auto* log_kind = kinds->add_value();
  log_kind->set_name("EVENT_KIND_LOG");
  log_kind->set_number(4);
  changed.mutable_file(0)->add_message_type()->set_name("OrderV1");
  remove_field(event, "priority");
  auto* range = event->add_reserved_range();
  range->set_start(7);
  range->set_end(8);
  event->add_reserved_name("priority");
  auto report = proto::check_compatibility(contracts(), changed);
  for (const auto& p : report.problems) MESSAGE(p.line());
  CHECK(report.problems.empty());
}

TEST_CASE("each breaking change is refused, naming the schema, the field and the rule") {
  CHECK(problem_of([](auto& s) { remove_field(message(s, "Event"), "priority"); }) ==
        "outpost.v1.Event.priority: removed-not-reserved (removed, but neither number 7 nor "
        "name 'priority' is reserved)");
  CHECK(problem_of([](auto& s) {
          auto* e = message(s, "Event");
          remove_field(e, "priority");
          e->add_reserved_name("priority");
        }) ==
        "outpost.v1.Event.priority: removed-not-reserved (removed, but number 7 is not "
        "reserved)");
  CHECK(problem_of([](auto& s) {
          field(message(s, "Event"), "priority")->set_type(pb::FieldDescriptorProto::TYPE_STRING);
        }) == "outpost.v1.Event.priority: changed-type (int32 -> string)");
  CHECK(
      problem_of([](auto& s) {
        field(message(s, "Event"), "priority")->set_label(pb::FieldDescriptorProto::LABEL_REPEATED);
      }) == "outpost.v1.Event.priority: changed-type (int32 -> repeated int32)");
  CHECK(problem_of([](auto& s) {
          field(message(s, "Event"), "pixel")->set_type_name(".outpost.v1.SensorReading");
        }) ==
        "outpost.v1.Event.pixel: changed-type (message outpost.v1.PixelHit -> message "
        "outpost.v1.SensorReading)");
  CHECK(problem_of([](auto& s) { field(message(s, "Event"), "priority")->set_number(9); }) ==
        "outpost.v1.Event.priority: changed-number (7 -> 9)");
  CHECK(problem_of([](auto& s) { field(message(s, "Event"), "priority")->set_name("urgency"); }) ==
        "outpost.v1.Event.priority: reused-number (number 7 now carries 'urgency')");
  CHECK(
      problem_of([](auto& s) {
        field(message(s, "Event"), "priority")->set_label(pb::FieldDescriptorProto::LABEL_REQUIRED);
      }) == "outpost.v1.Event.priority: made-required (optional -> required)");
  CHECK(problem_of([](auto& s) {
          auto* f = message(s, "Event")->add_field();
          f->set_name("tenant");
          f->set_number(20);
          f->set_type(pb::FieldDescriptorProto::TYPE_STRING);
          f->set_label(pb::FieldDescriptorProto::LABEL_REQUIRED);
        }) == "outpost.v1.Event.tenant: made-required (a new field is required)");
  CHECK(problem_of([](auto& s) {
          auto* kinds = s.mutable_file(0)->mutable_enum_type(0);
          kinds->mutable_value(3)->set_number(5);  // EVENT_KIND_JSON
        }) == "outpost.v1.EventKind.EVENT_KIND_JSON: changed-number (3 -> 5)");
  CHECK(problem_of([](auto& s) {
          auto* messages = s.mutable_file(1)->mutable_message_type();
          for (int i = 0; i < messages->size(); ++i) {
            if (messages->Get(i).name() == "Ping") messages->DeleteSubrange(i, 1);
          }
          // the Frame's ping field goes with it, reserved, so that only the message counts
          auto* frame = message(s, "Frame");
          remove_field(frame, "ping");
          auto* r = frame->add_reserved_range();
          r->set_start(5);
          r->set_end(6);
          frame->add_reserved_name("ping");
        }) ==
        "outpost.v1.Ping: removed-message (the message is gone; keep it, or make a new "
        "package)");
}

TEST_CASE("a reserved number or name used again is refused") {
  pb::FileDescriptorSet old_set = contracts();
  auto* event = message(old_set, "Event");
  auto* range = event->add_reserved_range();
  range->set_start(9);
  range->set_end(10);
  event->add_reserved_name("legacy");
  pb::FileDescriptorSet new_set = old_set;
  auto* f = message(new_set, "Event")->add_field();
  f->set_name("fresh");
  f->set_number(9);
  f->set_type(pb::FieldDescriptorProto::TYPE_STRING);
  auto* g = message(new_set, "Event")->add_field();
  g->set_name("legacy");
  g->set_number(20);
  g->set_type(pb::FieldDescriptorProto::TYPE_STRING);
  auto report = proto::check_compatibility(old_set, new_set);
  REQUIRE(report.problems.size() == 2);
  CHECK(report.problems[0].line() ==
        "outpost.v1.Event.fresh: reused-number (number 9 was reserved)");
  CHECK(report.problems[1].line() ==
        "outpost.v1.Event.legacy: reused-name (name 'legacy' was reserved)");
}
