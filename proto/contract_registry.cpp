#include "proto/contract_registry.hpp"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include "common/errc.hpp"
#include "common/tls/digest.hpp"
#include "outpost/v1/contract_options.pb.h"
#include "proto/compat.hpp"

namespace outpost::proto {
namespace {

namespace pb = google::protobuf;

Error bad(const std::string& path, const std::string& what) {
  return make_error(common_errc::config_invalid, "contracts " + path + ": " + what);
}

// Collects what the pool refuses while it builds a file, for one error message.
class Collector final : public pb::DescriptorPool::ErrorCollector {
 public:
  void AddError(const std::string& filename, const std::string& element_name, const pb::Message*,
                ErrorLocation, const std::string& message) override {
    if (!errors.empty()) errors += "; ";
    errors += filename + (element_name.empty() ? "" : " (" + element_name + ")") + ": " + message;
  }
  std::string errors;
};

void collect(const pb::Descriptor* m, std::map<std::string, const pb::Descriptor*>& out,
             std::string& duplicate) {
  const std::string& schema = m->options().GetExtension(v1::schema);
  if (!schema.empty()) {
    auto [it, inserted] = out.emplace(schema, m);
    if (!inserted && duplicate.empty()) {
      duplicate = "schema \"" + schema + "\" is named by both " + it->second->full_name() +
                  " and " + m->full_name() + ": one message per schema";
    }
  }
  for (int i = 0; i < m->nested_type_count(); ++i) collect(m->nested_type(i), out, duplicate);
}

}  // namespace

struct ContractRegistry::Impl {
  pb::DescriptorPool pool;
  std::map<std::string, const pb::Descriptor*> by_schema;
};

ContractRegistry::ContractRegistry() : impl_(std::make_unique<Impl>()) {}
ContractRegistry::~ContractRegistry() = default;

Result<std::shared_ptr<const ContractRegistry>> ContractRegistry::load(const std::string& path) {
  pb::FileDescriptorSet set;
  std::string bytes;
  if (auto r = load_descriptor_set(path, &set, &bytes); !r) {
    return make_error(common_errc::config_invalid, "contracts: " + r.error().describe());
  }
  std::shared_ptr<ContractRegistry> registry(new ContractRegistry());
  registry->path_ = path;
  registry->fingerprint_ = tls::sha256_hex(bytes);
  // Files in dependency order, as protoc --include_imports writes them; a file whose import
  // is not in the set does not build.
  for (const auto& file : set.file()) {
    Collector errors;
    if (registry->impl_->pool.BuildFileCollectingErrors(file, &errors) == nullptr) {
      return bad(path, "does not build: " + (errors.errors.empty() ? file.name() : errors.errors) +
                           " (make the set with protoc --include_imports)");
    }
  }
  std::string duplicate;
  for (const auto& file : set.file()) {
    const pb::FileDescriptor* f = registry->impl_->pool.FindFileByName(file.name());
    for (int i = 0; f != nullptr && i < f->message_type_count(); ++i) {
      collect(f->message_type(i), registry->impl_->by_schema, duplicate);
    }
  }
  if (!duplicate.empty()) return bad(path, duplicate);
  return std::shared_ptr<const ContractRegistry>(std::move(registry));
}

const pb::Descriptor* ContractRegistry::find(const std::string& schema) const {
  auto it = impl_->by_schema.find(schema);
  return it == impl_->by_schema.end() ? nullptr : it->second;
}

std::map<std::string, std::string> ContractRegistry::schemas() const {
  std::map<std::string, std::string> out;
  for (const auto& [schema, m] : impl_->by_schema) out[schema] = m->full_name();
  return out;
}

}  // namespace outpost::proto
