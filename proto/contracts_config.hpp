#pragma once
// The [contracts] table, read the same way by the gateway and by the agent with edge
// validation (docs/configuration.md, "[contracts]"), and the validator it makes.
//
// Thread-safety: pure functions (load_validator reads files).

#include <map>
#include <memory>
#include <string>

#include "common/config.hpp"
#include "common/result.hpp"
#include "proto/validator.hpp"

namespace outpost::proto {

struct ContractsConfig {
  std::string descriptor_set;  // "" : no contracts
  bool unknown_schema_pass = false;
  bool keep_unknown_fields = false;
  std::map<std::string, bool> keep_unknown_fields_by_schema;
  std::string hash_key_file;
};

// contracts.{descriptor_set, unknown_schema, unknown_fields, unknown_fields_by_schema,
// hash_key_file}.
Result<ContractsConfig> read_contracts_config(ConfigDoc& doc);

// The descriptor set and the key file read, the validator made; nullptr when no descriptor
// set is configured. Errors name the file or the schema (config_invalid).
Result<std::shared_ptr<const Validator>> load_validator(const ContractsConfig& config);

}  // namespace outpost::proto
