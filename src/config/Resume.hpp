#pragma once
// What a resume may change, from each key's OnResume rule in the schema: the one place both
// a checkpoint's resume (train) and a requeued experiment's task journal (experiment) ask.
#include <string>
#include <vector>

namespace hpctrain {

// Changes from the config a checkpoint was written with (`old_json`) to the one resuming it
// that a resume may not make: each `fixed` key whose value differs, as "key: old -> new"
// ("(absent)" for a key the old config lacks). Empty when the resume may go on.
std::vector<std::string> resume_config_changes(const std::string& old_json, const std::string& new_json);

// What identifies the finished tasks of a cross-validation or search: the resolved config
// without its `free` keys (sections left empty go too), pretty-printed. Two configs whose
// identities are equal compute the same tasks.
std::string task_identity(const std::string& resolved_json);

}  // namespace hpctrain
