#include "config/Resume.hpp"

#include <boost/json.hpp>

#include <map>

#include "config/Schema.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

OnResume rule_of(const std::string& path) {
  static const std::map<std::string, OnResume> rules = [] {
    std::map<std::string, OnResume> out;
    for (const auto& s : config_schema()) out[s.path] = s.on_resume;
    return out;
  }();
  const auto it = rules.find(path);
  // A key this version does not know (written by another one) counts as part of the result.
  return it == rules.end() ? OnResume::Fixed : it->second;
}

// Removes `path` from the nested object, and the sections it leaves empty.
void erase_path(json::object& node, const std::string& path) {
  const auto dot = path.find('.');
  if (dot == std::string::npos) {
    node.erase(path);
    return;
  }
  const std::string head = path.substr(0, dot);
  auto* child = node.if_contains(head);
  if (child == nullptr || !child->is_object()) return;
  erase_path(child->get_object(), path.substr(dot + 1));
  if (child->get_object().empty()) node.erase(head);
}

}  // namespace

std::vector<std::string> resume_config_changes(const std::string& old_json, const std::string& new_json) {
  std::map<std::string, std::string> old_values;
  for (auto& [key, value] : flatten_config(old_json)) old_values[key] = value;
  std::vector<std::string> changes;
  for (const auto& [key, value] : flatten_config(new_json)) {
    if (rule_of(key) != OnResume::Fixed) continue;
    const auto it = old_values.find(key);
    const std::string old = it == old_values.end() ? "(absent)" : it->second;
    if (old != value) changes.push_back(key + ": " + old + " -> " + value);
  }
  return changes;
}

std::string task_identity(const std::string& resolved_json) {
  json::object config = parse_json_or_throw(resolved_json, "config").as_object();
  for (const auto& s : config_schema()) {
    if (s.on_resume == OnResume::Free) erase_path(config, s.path);
  }
  return pretty_json(config);
}

}  // namespace hpctrain
