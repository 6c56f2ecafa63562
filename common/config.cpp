#include "common/config.hpp"

#include <algorithm>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "common/errc.hpp"
#include "common/error_category.hpp"
#include "common/units.hpp"

namespace outpost {

struct ConfigDoc::Impl {
  toml::table root;
  std::string source;
  std::set<std::string, std::less<>> known;       // keys some getter asked for
  std::set<std::string, std::less<>> overridden;  // keys given by --set

  // Where the value of `key` came from, for an error about it: "--set KEY" or
  // "config FILE, line N" (just "config FILE" for a default).
  std::string where(std::string_view key, const toml::node* node) const {
    for (const std::string& o : overridden) {
      // The key itself, or a table above it replaced by the override.
      if (key == o ||
          (key.size() > o.size() && key.substr(0, o.size()) == o && key[o.size()] == '.')) {
        return "--set " + o;
      }
    }
    std::string w = "config " + source;
    if (node != nullptr && node->source().begin.line != 0) {
      w += ", line " + std::to_string(node->source().begin.line);
    }
    return w;
  }
};

namespace {

std::string show(const toml::node& node) {
  std::ostringstream os;
  node.visit([&](const auto& v) {
    if constexpr (toml::is_string<decltype(v)>) {
      os << '"' << v.get() << '"';
    } else {
      os << v;
    }
  });
  return os.str();
}

std::vector<std::string> split_path(std::string_view key) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    parts.emplace_back(key.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

// A value of the document with its dotted name (a quoted key's dots included as written).
struct Leaf {
  std::string path;
  const toml::node* node;
};

void collect_leaves(const toml::table& table, const std::string& prefix, std::vector<Leaf>& out) {
  for (const auto& [k, v] : table) {
    std::string path = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const toml::table* sub = v.as_table()) {
      collect_leaves(*sub, path, out);
    } else {
      out.push_back({std::move(path), &v});
    }
  }
}

}  // namespace

ConfigDoc::ConfigDoc(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ConfigDoc::ConfigDoc(ConfigDoc&&) noexcept = default;
ConfigDoc& ConfigDoc::operator=(ConfigDoc&&) noexcept = default;
ConfigDoc::~ConfigDoc() = default;

Result<ConfigDoc> ConfigDoc::parse_file(const std::string& path) {
  try {
    auto impl = std::make_unique<Impl>();
    impl->root = toml::parse_file(path);
    impl->source = path;
    return ConfigDoc(std::move(impl));
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << "config " << path << ": " << e.description();
    if (e.source().begin.line != 0) {
      os << " (line " << e.source().begin.line << ", column " << e.source().begin.column << ")";
    }
    return make_error(common_errc::config_unreadable, os.str());
  }
}

Result<ConfigDoc> ConfigDoc::parse_string(std::string_view text, std::string source_name) {
  try {
    auto impl = std::make_unique<Impl>();
    impl->root = toml::parse(text, source_name);
    impl->source = std::move(source_name);
    return ConfigDoc(std::move(impl));
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << "config " << source_name << ": " << e.description() << " (line " << e.source().begin.line
       << ")";
    return make_error(common_errc::config_unreadable, os.str());
  }
}

ConfigDoc ConfigDoc::empty(std::string source_name) {
  auto impl = std::make_unique<Impl>();
  impl->source = std::move(source_name);
  return ConfigDoc(std::move(impl));
}

const std::string& ConfigDoc::source_name() const { return impl_->source; }

std::string ConfigDoc::where(std::string_view key) const {
  return impl_->where(key, impl_->root.at_path(key).node());
}

Result<void> ConfigDoc::set_override(std::string_view assignment) {
  size_t eq = assignment.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return make_error(common_errc::config_invalid, "--set " + std::string(assignment) +
                                                       ": expected KEY=VALUE, e.g. " +
                                                       "buffer.max_bytes=1GiB");
  }
  std::string key(assignment.substr(0, eq));
  std::string text(assignment.substr(eq + 1));
  toml::table parsed;
  try {
    parsed = toml::parse("v = " + text);
  } catch (const toml::parse_error&) {
    parsed.insert_or_assign("v", text);  // not a TOML value: take it as a string
  }
  std::vector<std::string> parts = split_path(key);
  toml::table* table = &impl_->root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    toml::node* next = table->get(parts[i]);
    if (next == nullptr) {
      table->insert_or_assign(parts[i], toml::table{});
      next = table->get(parts[i]);
    }
    if (!next->is_table()) {
      return make_error(common_errc::config_invalid,
                        "--set " + key + ": " + parts[i] + " is a value, not a table");
    }
    table = next->as_table();
  }
  table->insert_or_assign(parts.back(), *parsed.get("v"));
  impl_->overridden.insert(key);
  return {};
}

namespace {
Error invalid(const std::string& where, std::string_view key, const std::string& value,
              std::string_view allowed) {
  return make_error(common_errc::config_invalid, where + ": " + std::string(key) + " = " + value +
                                                     " is not allowed: expected " +
                                                     std::string(allowed));
}
}  // namespace

Result<std::string> ConfigDoc::string(std::string_view key, std::string_view fallback) {
  impl_->known.emplace(key);
  auto node = impl_->root.at_path(key);
  if (!node) return std::string(fallback);
  if (auto v = node.value<std::string>(); v && node.is_string()) return *v;
  return invalid(impl_->where(key, node.node()), key, show(*node.node()),
                 "a string in double quotes");
}

Result<int64_t> ConfigDoc::integer(std::string_view key, int64_t fallback, int64_t min,
                                   int64_t max) {
  impl_->known.emplace(key);
  auto node = impl_->root.at_path(key);
  const std::string range = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  if (!node) return fallback;
  if (!node.is_integer())
    return invalid(impl_->where(key, node.node()), key, show(*node.node()), range);
  int64_t v = *node.value<int64_t>();
  if (v < min || v > max)
    return invalid(impl_->where(key, node.node()), key, std::to_string(v), range);
  return v;
}

Result<bool> ConfigDoc::boolean(std::string_view key, bool fallback) {
  impl_->known.emplace(key);
  auto node = impl_->root.at_path(key);
  if (!node) return fallback;
  if (!node.is_boolean())
    return invalid(impl_->where(key, node.node()), key, show(*node.node()), "true or false");
  return *node.value<bool>();
}

Result<int64_t> ConfigDoc::duration_ns(std::string_view key, std::string_view fallback,
                                       int64_t min_ns, int64_t max_ns) {
  impl_->known.emplace(key);
  auto node = impl_->root.at_path(key);
  const std::string allowed = "a duration from " + format_duration_ns(min_ns) + " to " +
                              format_duration_ns(max_ns) +
                              " written with a unit, like \"250ms\", \"30s\", \"1h30m\", \"7d\"";
  std::string text(fallback);
  std::string shown = '"' + text + '"';
  if (node) {
    if (!node.is_string())
      return invalid(impl_->where(key, node.node()), key, show(*node.node()), allowed);
    text = *node.value<std::string>();
    shown = show(*node.node());
  }
  auto ns = parse_duration_ns(text);
  if (!ns || *ns < min_ns || *ns > max_ns)
    return invalid(impl_->where(key, node.node()), key, shown, allowed);
  return *ns;
}

Result<uint64_t> ConfigDoc::bytes(std::string_view key, std::string_view fallback, uint64_t min,
                                  uint64_t max) {
  impl_->known.emplace(key);
  auto node = impl_->root.at_path(key);
  const std::string allowed = "a size from " + format_bytes(min) + " to " + format_bytes(max) +
                              ", like \"512MiB\" or \"2GB\" or a number of bytes";
  std::optional<uint64_t> value;
  std::string shown = '"' + std::string(fallback) + '"';
  if (!node) {
    value = parse_bytes(fallback);
  } else if (node.is_integer()) {
    shown = show(*node.node());
    if (*node.value<int64_t>() >= 0) value = static_cast<uint64_t>(*node.value<int64_t>());
  } else if (node.is_string()) {
    shown = show(*node.node());
    value = parse_bytes(*node.value<std::string>());
  } else {
    shown = show(*node.node());
  }
  if (!value || *value < min || *value > max)
    return invalid(impl_->where(key, node.node()), key, shown, allowed);
  return *value;
}

Result<std::pair<std::string, uint16_t>> ConfigDoc::host_port(std::string_view key,
                                                              std::string_view fallback,
                                                              bool allow_empty) {
  std::string value;
  OUTPOST_TRY_ASSIGN(value, string(key, fallback));
  if (value.empty() && allow_empty) return std::make_pair(std::string(), uint16_t{0});
  auto colon = value.rfind(':');
  int port = -1;
  if (colon != std::string::npos && colon != 0 && colon + 1 < value.size() &&
      value.size() - colon <= 6 &&
      value.find_first_not_of("0123456789", colon + 1) == std::string::npos) {
    port = std::stoi(value.substr(colon + 1));
  }
  if (port < 0 || port > 65535) {
    return make_error(common_errc::config_invalid,
                      impl_->where(key, impl_->root.at_path(key).node()) + ": " + std::string(key) +
                          " = \"" + value +
                          "\" is not allowed: expected HOST:PORT, e.g. 127.0.0.1:9090 (port 0 "
                          "picks a free port" +
                          (allow_empty ? std::string(", \"\" turns it off)") : std::string(")")));
  }
  std::string host = value.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::make_pair(host, static_cast<uint16_t>(port));
}

Result<std::string> ConfigDoc::choice(std::string_view key, std::string_view fallback,
                                      std::initializer_list<std::string_view> allowed) {
  std::string list;
  for (std::string_view a : allowed) list += (list.empty() ? "one of " : ", ") + std::string(a);
  auto value = string(key, fallback);
  const toml::node* node = impl_->root.at_path(key).node();
  if (!value) return invalid(impl_->where(key, node), key, show(*node), list);
  for (std::string_view a : allowed) {
    if (a == *value) return value;
  }
  return invalid(impl_->where(key, node), key, '"' + *value + '"', list);
}

std::vector<std::string> ConfigDoc::table_keys(std::string_view key) const {
  std::vector<std::string> out;
  impl_->known.emplace(key);
  if (const toml::table* t = impl_->root.at_path(key).as_table()) {
    for (const auto& [k, v] : *t) out.emplace_back(k.str());
  }
  return out;
}

std::map<std::string, std::string> ConfigDoc::settings() const {
  std::vector<Leaf> leaves;
  collect_leaves(impl_->root, "", leaves);
  std::map<std::string, std::string> out;
  for (const Leaf& leaf : leaves) out[leaf.path] = show(*leaf.node);
  return out;
}

std::vector<std::string> changed_settings(const ConfigSettings& a, const ConfigSettings& b,
                                          const std::vector<std::string>& scopes) {
  auto in_scope = [&](const std::string& key) {
    if (scopes.empty()) return true;
    for (const std::string& s : scopes) {
      if (key == s ||
          (key.size() > s.size() && key.compare(0, s.size(), s) == 0 && key[s.size()] == '.')) {
        return true;
      }
    }
    return false;
  };
  std::vector<std::string> out;
  for (const auto& [key, value] : a) {
    auto other = b.find(key);
    if (in_scope(key) && (other == b.end() || other->second != value)) out.push_back(key);
  }
  for (const auto& [key, value] : b) {
    if (in_scope(key) && a.find(key) == a.end()) out.push_back(key);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> ConfigDoc::passthrough(
    std::string_view key) const {
  std::vector<std::pair<std::string, std::string>> out;
  const toml::table* t = impl_->root.at_path(key).as_table();
  if (t == nullptr) return out;
  std::vector<Leaf> leaves;
  collect_leaves(*t, "", leaves);
  for (const auto& [leaf, node] : leaves) {
    const std::string full = std::string(key) + "." + leaf;
    impl_->known.emplace(full);
    std::string text;
    if (auto s = node->value<std::string>(); s && node->is_string()) {
      text = *s;
    } else if (node->is_integer()) {
      text = std::to_string(*node->value<int64_t>());
    } else if (node->is_boolean()) {
      text = *node->value<bool>() ? "true" : "false";
    } else if (node->is_floating_point()) {
      text = std::to_string(*node->value<double>());
    } else {
      return make_error(common_errc::config_invalid,
                        impl_->where(full, node) + ": " + full +
                            " must be a string, number or boolean (it is passed on as text)");
    }
    out.emplace_back(leaf, text);
  }
  return out;
}

Result<void> ConfigDoc::check_no_unknown_keys() const {
  std::vector<Leaf> leaves;
  collect_leaves(impl_->root, "", leaves);
  for (const auto& [leaf, node] : leaves) {
    if (impl_->known.count(leaf) == 0) {
      return make_error(common_errc::config_unknown_key,
                        impl_->where(leaf, node) + ": unknown key " + leaf +
                            " (a typo? see docs/configuration.md for the keys)");
    }
  }
  return {};
}

namespace {
const char* describe(common_errc e) {
  switch (e) {
    case common_errc::config_unreadable:
      return "configuration file unreadable";
    case common_errc::config_invalid:
      return "configuration value not allowed";
    case common_errc::config_unknown_key:
      return "unknown configuration key";
    case common_errc::bad_input:
      return "input does not parse";
    case common_errc::in_use:
      return "in use by another process";
    case common_errc::not_running:
      return "not running";
  }
  return nullptr;
}
}  // namespace

const std::error_category& common_category() {
  static const EnumCategory<common_errc> category("outpost.common", describe);
  return category;
}

}  // namespace outpost
