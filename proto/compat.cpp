#include "proto/compat.hpp"

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/text_format.h>

#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "common/errc.hpp"

namespace outpost::proto {
namespace {

namespace pb = google::protobuf;

// A message or an enum, by full name, as one of the two sets declares it.
struct Types {
  std::map<std::string, const pb::DescriptorProto*> messages;
  std::map<std::string, const pb::EnumDescriptorProto*> enums;
};

void collect(const std::string& scope, const pb::DescriptorProto& m, Types& t) {
  const std::string name = scope + "." + m.name();
  t.messages[name] = &m;
  for (const auto& nested : m.nested_type()) collect(name, nested, t);
  for (const auto& e : m.enum_type()) t.enums[name + "." + e.name()] = &e;
}

Types collect(const pb::FileDescriptorSet& set) {
  Types t;
  for (const auto& file : set.file()) {
    const std::string scope = file.package().empty() ? "" : "." + file.package();
    for (const auto& m : file.message_type()) collect(scope, m, t);
    for (const auto& e : file.enum_type()) t.enums[scope + "." + e.name()] = &e;
  }
  return t;
}

std::string type_of(const pb::FieldDescriptorProto& f) {
  std::string type = pb::FieldDescriptorProto::Type_Name(f.type());
  if (type.rfind("TYPE_", 0) == 0) type = type.substr(5);
  for (char& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!f.type_name().empty()) type += " " + f.type_name().substr(f.type_name()[0] == '.');
  if (f.label() == pb::FieldDescriptorProto::LABEL_REPEATED) type = "repeated " + type;
  return type;
}

bool reserved_number(const pb::DescriptorProto& m, int n) {
  for (const auto& r : m.reserved_range()) {
    if (n >= r.start() && n < r.end()) return true;  // end exclusive for messages
  }
  return false;
}
bool reserved_number(const pb::EnumDescriptorProto& e, int n) {
  for (const auto& r : e.reserved_range()) {
    if (n >= r.start() && n <= r.end()) return true;  // end inclusive for enums
  }
  return false;
}
template <typename Proto>
bool reserved_name(const Proto& p, const std::string& name) {
  for (const auto& r : p.reserved_name()) {
    if (r == name) return true;
  }
  return false;
}

// A message's fields or an enum's values, by number and by name.
struct Numbered {
  std::map<int, std::string> by_number;  // an aliased enum number keeps its first name
  std::map<std::string, int> by_name;
  template <typename Items>
  explicit Numbered(const Items& items) {
    for (const auto& item : items) {
      by_number.emplace(item.number(), item.name());
      by_name[item.name()] = item.number();
    }
  }
};

// The rules shared by fields and enum values: what became of an old (number, name) in the
// new type.
template <typename New, typename Problem>
void check_numbered(const New& new_type, const Numbered& now, int number, const std::string& name,
                    Problem&& problem) {
  const auto& new_by_number = now.by_number;
  const auto& new_by_name = now.by_name;
  if (auto same = new_by_number.find(number); same != new_by_number.end()) {
    if (same->second != name) {
      problem(name, "reused-number",
              "number " + std::to_string(number) + " now carries '" + same->second + "'");
    }
    return;
  }
  if (auto moved = new_by_name.find(name); moved != new_by_name.end()) {
    problem(name, "changed-number",
            std::to_string(number) + " -> " + std::to_string(moved->second));
    return;
  }
  const bool number_ok = reserved_number(new_type, number);
  const bool name_ok = reserved_name(new_type, name);
  if (number_ok && name_ok) return;
  std::string what = !number_ok && !name_ok ? "neither number " + std::to_string(number) +
                                                  " nor name '" + name + "' is reserved"
                     : !number_ok ? "number " + std::to_string(number) + " is not reserved"
                                  : "name '" + name + "' is not reserved";
  problem(name, "removed-not-reserved", "removed, but " + what);
}

}  // namespace

std::string CompatProblem::line() const {
  std::string s = schema;
  if (!field.empty()) s += "." + field;
  return s + ": " + rule + " (" + detail + ")";
}

CompatReport check_compatibility(const pb::FileDescriptorSet& old_set,
                                 const pb::FileDescriptorSet& new_set) {
  CompatReport report;
  const Types before = collect(old_set);
  const Types after = collect(new_set);
  auto add = [&](const std::string& schema, const std::string& field, const std::string& rule,
                 const std::string& detail) {
    report.problems.push_back({schema.substr(schema[0] == '.'), field, rule, detail});
  };

  for (const auto& message : before.messages) {
    const std::string& name = message.first;  // named, not bound: clang 14's lambdas cannot
    const auto& old_m = message.second;       // capture a structured binding
    ++report.types_checked;
    auto it = after.messages.find(name);
    if (it == after.messages.end()) {
      add(name, "", "removed-message", "the message is gone; keep it, or make a new package");
      continue;
    }
    const pb::DescriptorProto& new_m = *it->second;
    const Numbered now(new_m.field());
    std::map<int, const pb::FieldDescriptorProto*> new_fields;
    for (const auto& f : new_m.field()) new_fields[f.number()] = &f;
    std::set<int> old_numbers;
    std::set<std::string> old_names;
    for (const auto& f : old_m->field()) {
      ++report.fields_checked;
      old_numbers.insert(f.number());
      old_names.insert(f.name());
      check_numbered(new_m, now, f.number(), f.name(),
                     [&](const std::string& field, const char* rule, const std::string& detail) {
                       add(name, field, rule, detail);
                     });
      auto nf = new_fields.find(f.number());
      if (nf == new_fields.end() || nf->second->name() != f.name()) continue;
      const pb::FieldDescriptorProto& g = *nf->second;
      if (g.label() == pb::FieldDescriptorProto::LABEL_REQUIRED &&
          f.label() != pb::FieldDescriptorProto::LABEL_REQUIRED) {
        add(name, f.name(), "made-required", "optional -> required");
      } else if (type_of(f) != type_of(g)) {
        add(name, f.name(), "changed-type", type_of(f) + " -> " + type_of(g));
      }
    }
    for (const auto& g : new_m.field()) {
      if (old_numbers.count(g.number()) > 0) continue;  // judged above
      if (g.label() == pb::FieldDescriptorProto::LABEL_REQUIRED) {
        add(name, g.name(), "made-required", "a new field is required");
      }
      if (reserved_number(*old_m, g.number())) {
        add(name, g.name(), "reused-number",
            "number " + std::to_string(g.number()) + " was reserved");
      } else if (reserved_name(*old_m, g.name()) && old_names.count(g.name()) == 0) {
        add(name, g.name(), "reused-name", "name '" + g.name() + "' was reserved");
      }
    }
  }

  for (const auto& enumeration : before.enums) {
    const std::string& name = enumeration.first;
    const auto& old_e = enumeration.second;
    ++report.types_checked;
    auto it = after.enums.find(name);
    if (it == after.enums.end()) {
      add(name, "", "removed-message", "the enum is gone; keep it, or make a new package");
      continue;
    }
    const pb::EnumDescriptorProto& new_e = *it->second;
    const Numbered now(new_e.value());
    for (const auto& v : old_e->value()) {
      ++report.fields_checked;
      check_numbered(new_e, now, v.number(), v.name(),
                     [&](const std::string& field, const char* rule, const std::string& detail) {
                       add(name, field, rule, detail);
                     });
    }
  }
  return report;
}

Result<void> load_descriptor_set(const std::string& path, pb::FileDescriptorSet* out,
                                 std::string* bytes_out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(common_errc::bad_input, "cannot read " + path);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  std::string data = bytes.str();
  const bool text = path.size() >= 6 && path.compare(path.size() - 6, 6, ".txtpb") == 0;
  const bool ok = text ? pb::TextFormat::ParseFromString(data, out)
                       : out->ParseFromString(data) && out->IsInitialized();
  if (!ok || out->file_size() == 0) {
    return make_error(common_errc::bad_input,
                      path +
                          " is not a descriptor set (make one with protoc --include_imports "
                          "--descriptor_set_out=FILE" +
                          (text ? "; .txtpb: protobuf text format of FileDescriptorSet)" : ")"));
  }
  if (bytes_out != nullptr) *bytes_out = std::move(data);
  return {};
}

}  // namespace outpost::proto
