#pragma once
// The payload contracts, loaded at run time from a descriptor set (protoc --include_imports
// --descriptor_set_out), so that adding a schema needs no rebuild of Outpost
// (docs/contracts.md, "Payload contracts"). A message is the contract of the envelope's
// `schema` string that its `(outpost.v1.schema)` option names; nothing is guessed from names.
//
// load() refuses, with an error that names the file and the problem: a file that is not a
// descriptor set, a set whose files do not build (a missing import, a type defined twice),
// and a schema named by two messages.
//
// Thread-safety: immutable after load(); find() from any thread. The registry owns the
// descriptors it hands out.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace google::protobuf {
class Descriptor;
}

namespace outpost::proto {

class ContractRegistry {
 public:
  static Result<std::shared_ptr<const ContractRegistry>> load(const std::string& path);
  ~ContractRegistry();

  // The message type of a schema ("order.v1"), or nullptr when the set has none.
  const google::protobuf::Descriptor* find(const std::string& schema) const;
  // Every schema, in name order, with its message's full name.
  std::map<std::string, std::string> schemas() const;
  const std::string& path() const { return path_; }
  // SHA-256 of the descriptor set's bytes, hex: which contracts an event was checked against.
  const std::string& fingerprint() const { return fingerprint_; }

  struct Impl;

 private:
  ContractRegistry();
  std::unique_ptr<Impl> impl_;
  std::string path_;
  std::string fingerprint_;
};

}  // namespace outpost::proto
