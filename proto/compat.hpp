#pragma once
// The contracts' evolution rules (docs/contracts.md, "Evolution rules") checked between two
// descriptor sets (`protoc --include_imports --descriptor_set_out`): what
// `outpost-gateway contracts check --old OLD --new NEW` runs, and what the test command runs
// against proto/baseline/ so that a breaking change to a contract fails CI.
//
// A problem names the message (its full name: the schema's type), the field or enum value,
// and the rule it breaks:
//   removed-not-reserved  a field (or enum value) is gone and its number or name is not
//                         reserved
//   changed-number        a field (or enum value) of the same name has another number
//   changed-type          the same number has another type, message or enum type, or
//                         cardinality (singular, repeated, map)
//   reused-number         the same number now carries another name, or a reserved number
//                         is used again
//   reused-name           a reserved name is used again
//   made-required         a field became `required`, or a new field is `required`
//   removed-message       a message (or enum) of the old set is gone
// Adding fields, values, messages and enums with new numbers is allowed.
//
// Thread-safety: pure functions.

#include <string>
#include <vector>

#include "common/result.hpp"

namespace google::protobuf {
class FileDescriptorSet;
}

namespace outpost::proto {

struct CompatProblem {
  std::string schema;        // the message's or enum's full name, e.g. outpost.v1.Event
  std::string field;         // the field or enum value ("" for a removed message)
  std::string rule;          // one of the rules above
  std::string detail;        // what changed, for a person
  std::string line() const;  // "outpost.v1.Event.seq: changed-type (uint64 -> string)"
};

struct CompatReport {
  std::vector<CompatProblem> problems;
  size_t types_checked = 0;  // messages and enums of the old set
  size_t fields_checked = 0;
};

CompatReport check_compatibility(const google::protobuf::FileDescriptorSet& old_set,
                                 const google::protobuf::FileDescriptorSet& new_set);

// A descriptor set from a file: binary (protoc's --descriptor_set_out) or, for a name ending
// in .txtpb, protobuf text format (how the checked-in baseline is kept reviewable).
// `bytes`, when given, receives the file's bytes as read.
Result<void> load_descriptor_set(const std::string& path, google::protobuf::FileDescriptorSet* out,
                                 std::string* bytes = nullptr);

}  // namespace outpost::proto
