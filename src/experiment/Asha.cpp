#include "experiment/Asha.hpp"

#include <algorithm>

namespace hpctrain {

std::vector<std::int64_t> asha_rung_epochs(std::int64_t min_epochs, std::int64_t eta, std::int64_t max_epochs) {
  std::vector<std::int64_t> epochs{std::min(min_epochs, max_epochs)};
  while (epochs.back() < max_epochs) epochs.push_back(std::min(epochs.back() * eta, max_epochs));
  return epochs;
}

std::vector<int> asha_promotable(const std::vector<RungScore>& results, bool lower_is_better, std::int64_t eta) {
  std::vector<int> order = rank_rung(results, lower_is_better);
  const auto keep = static_cast<std::size_t>(static_cast<std::int64_t>(results.size()) / eta);
  if (order.size() > keep) order.resize(keep);
  return order;
}

AshaLadder::AshaLadder(std::vector<int> trials, std::vector<std::int64_t> rung_epochs, std::int64_t eta,
                       bool lower_is_better)
    : trials_(std::move(trials)),
      epochs_(std::move(rung_epochs)),
      eta_(eta),
      lower_is_better_(lower_is_better),
      results_(epochs_.size()),
      promoted_(epochs_.size()) {}

std::optional<AshaJob> AshaLadder::next() {
  // The highest rung first: its trials are the furthest along.
  for (std::size_t r = epochs_.size() - 1; r-- > 0;) {
    for (int t : asha_promotable(results_[r], lower_is_better_, eta_)) {
      auto& out = promoted_[r];
      if (std::find(out.begin(), out.end(), t) != out.end()) continue;
      out.push_back(t);
      promotions_.push_back(AshaPromotion{t, static_cast<int>(r + 1), static_cast<int>(results_[r].size())});
      return AshaJob{t, static_cast<int>(r + 1)};
    }
  }
  if (started_ < trials_.size()) return AshaJob{trials_[started_++], 0};
  return std::nullopt;
}

void AshaLadder::report(int rung, const RungScore& score) {
  results_.at(static_cast<std::size_t>(rung)).push_back(score);
}

}  // namespace hpctrain
