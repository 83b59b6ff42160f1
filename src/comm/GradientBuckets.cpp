#include "comm/GradientBuckets.hpp"

#include <cmath>

#include "util/Error.hpp"

namespace hpctrain {

GradientBuckets::GradientBuckets(std::vector<torch::Tensor> parameters, double bucket_mb) {
  const auto limit = static_cast<std::int64_t>(bucket_mb * 1024.0 * 1024.0);
  std::vector<std::vector<torch::Tensor>> groups;
  std::int64_t bytes = 0;
  for (auto it = parameters.rbegin(); it != parameters.rend(); ++it) {
    const auto& p = *it;
    if (!p.requires_grad()) continue;
    if (p.scalar_type() != torch::kFloat) throw RuntimeFailure("gradient buckets hold float32 parameters only");
    const std::int64_t pbytes = p.numel() * static_cast<std::int64_t>(sizeof(float));
    if (groups.empty() || (bytes + pbytes > limit && bytes > 0)) {
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().push_back(p);
    bytes += pbytes;
  }
  for (const auto& group : groups) {
    std::int64_t n = 0;
    for (const auto& p : group) n += p.numel();
    auto flat = torch::zeros({n}, group.front().options().requires_grad(false));
    std::int64_t off = 0;
    for (const auto& p : group) {
      auto view = flat.narrow(0, off, p.numel()).view(p.sizes());
      p.mutable_grad() = view;
      slots_.push_back(Slot{p, view});
      off += p.numel();
    }
    buckets_.push_back(flat);
  }
}

void GradientBuckets::ensure_views() {
  for (auto& s : slots_) {
    const auto& g = s.parameter.grad();
    if (!g.defined()) {
      s.view.zero_();
      s.parameter.mutable_grad() = s.view;
    } else if (g.data_ptr() != s.view.data_ptr()) {
      s.view.copy_(g);
      s.parameter.mutable_grad() = s.view;
    }
  }
}

void GradientBuckets::zero() {
  for (auto& b : buckets_) b.zero_();
  ensure_views();
}

void GradientBuckets::allreduce_sum(const Communicator& comm) {
  ensure_views();
  if (comm.size() == 1) return;
  for (auto& b : buckets_) comm.allreduce_sum(b.data_ptr<float>(), static_cast<std::size_t>(b.numel()));
}

double GradientBuckets::global_norm() const {
  double sq = 0.0;
  for (const auto& b : buckets_) {
    const double n = b.norm().item<double>();
    sq += n * n;
  }
  return std::sqrt(sq);
}

void GradientBuckets::scale(double factor) {
  for (auto& b : buckets_) b.mul_(factor);
}

std::int64_t GradientBuckets::element_count() const {
  std::int64_t n = 0;
  for (const auto& b : buckets_) n += b.numel();
  return n;
}

void broadcast_module_state(torch::nn::Module& module, const Communicator& comm, int root) {
  if (comm.size() == 1) return;
  std::vector<torch::Tensor> tensors;
  for (auto& p : module.parameters()) tensors.push_back(p);
  for (auto& b : module.buffers()) tensors.push_back(b);
  torch::NoGradGuard no_grad;
  // Fuse float tensors into one buffer; other dtypes (BatchNorm's counter) go one by one.
  std::int64_t n = 0;
  for (const auto& t : tensors) {
    if (t.scalar_type() == torch::kFloat) n += t.numel();
  }
  auto flat = torch::empty({n}, torch::kFloat);
  std::int64_t off = 0;
  for (const auto& t : tensors) {
    if (t.scalar_type() != torch::kFloat) continue;
    flat.narrow(0, off, t.numel()).copy_(t.reshape({-1}));
    off += t.numel();
  }
  comm.broadcast(flat.data_ptr<float>(), static_cast<std::size_t>(n) * sizeof(float), root);
  off = 0;
  for (auto& t : tensors) {
    if (t.scalar_type() == torch::kFloat) {
      t.copy_(flat.narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    } else {
      auto c = t.contiguous();
      comm.broadcast(c.data_ptr(), static_cast<std::size_t>(c.numel() * c.element_size()), root);
      t.copy_(c);
    }
  }
}

}  // namespace hpctrain
