#include "proto/contracts_config.hpp"

#include <fstream>
#include <sstream>

#include "common/errc.hpp"

namespace outpost::proto {

Result<ContractsConfig> read_contracts_config(ConfigDoc& doc) {
  ContractsConfig v;
  OUTPOST_TRY_ASSIGN(v.descriptor_set, doc.string("contracts.descriptor_set", ""));
  std::string policy;
  OUTPOST_TRY_ASSIGN(policy, doc.choice("contracts.unknown_schema", "reject", {"reject", "pass"}));
  v.unknown_schema_pass = policy == "pass";
  OUTPOST_TRY_ASSIGN(policy, doc.choice("contracts.unknown_fields", "reject", {"reject", "keep"}));
  v.keep_unknown_fields = policy == "keep";
  auto by_schema = doc.passthrough("contracts.unknown_fields_by_schema");
  if (!by_schema) return by_schema.error();
  for (const auto& [schema, value] : *by_schema) {
    if (value != "reject" && value != "keep") {
      return make_error(common_errc::config_invalid, "contracts.unknown_fields_by_schema.\"" +
                                                         schema + "\" = \"" + value +
                                                         "\": must be \"reject\" or \"keep\"");
    }
    v.keep_unknown_fields_by_schema[schema] = value == "keep";
  }
  OUTPOST_TRY_ASSIGN(v.hash_key_file, doc.string("contracts.hash_key_file", ""));
  return v;
}

Result<std::shared_ptr<const Validator>> load_validator(const ContractsConfig& config) {
  if (config.descriptor_set.empty()) return std::shared_ptr<const Validator>();
  auto registry = ContractRegistry::load(config.descriptor_set);
  if (!registry) return registry.error();
  ValidatorOptions o;
  o.unknown_schema_pass = config.unknown_schema_pass;
  o.keep_unknown_fields = config.keep_unknown_fields;
  o.keep_unknown_fields_by_schema = config.keep_unknown_fields_by_schema;
  if (!config.hash_key_file.empty()) {
    std::ifstream in(config.hash_key_file, std::ios::binary);
    std::stringstream key;
    key << in.rdbuf();
    if (!in || key.str().empty()) {
      return make_error(
          common_errc::config_invalid,
          "contracts.hash_key_file " + config.hash_key_file + " cannot be read or is empty");
    }
    o.hash_key = key.str();
  }
  return Validator::make(std::move(*registry), std::move(o));
}

}  // namespace outpost::proto
