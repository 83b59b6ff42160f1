#include "data/BatchPipeline.hpp"

#include <cstring>

#include "data/Sampling.hpp"

namespace hpctrain {

BatchPipeline::BatchPipeline(const ShardedDataset& data, const DataConfig& config, std::uint64_t seed,
                             std::int64_t batch_rows, bool pinned, bool inputs)
    : data_(data), config_(config), seed_(seed), batch_rows_(batch_rows), inputs_(inputs) {
  std::vector<std::int64_t> shape{batch_rows};
  const auto& s = data.meta().sample_shape;
  if (inputs) {
    shape.insert(shape.end(), s.begin(), s.end());
  } else {
    shape.push_back(0);
  }
  // Page-locked buffers let a GPU copy them asynchronously (DMA without a staging copy).
  for (auto& b : buffers_) b = torch::empty(shape, torch::TensorOptions(torch::kFloat).pinned_memory(pinned));
  for (std::size_t c = 0; c < data.mean().size(); ++c) {
    scale_.push_back(static_cast<float>(1.0 / data.stddev()[c]));
    shift_.push_back(static_cast<float>(-data.mean()[c] / data.stddev()[c]));
  }
  worker_ = std::thread([this] { worker_loop(); });
}

BatchPipeline::~BatchPipeline() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void BatchPipeline::start_epoch(Samples rows, std::vector<std::int64_t> indices, std::int64_t epoch, std::int64_t steps,
                                std::int64_t first_step) {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return requested_ < 0; });  // the worker is idle
  rows_ = std::move(rows);
  rows_.targets = data_.to_target(rows_.targets);
  indices_ = std::move(indices);
  epoch_ = epoch;
  steps_ = steps;
  next_step_ = first_step;
  ready_ = first_step - 1;
  if (first_step < steps_) requested_ = first_step;
  cv_.notify_all();
}

Batch BatchPipeline::next() {
  const std::int64_t step = next_step_++;
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return ready_ >= step || error_; });
  if (error_) std::rethrow_exception(error_);
  // The other buffer held the previous step, which is finished: prepare the next into it.
  if (step + 1 < steps_) {
    requested_ = step + 1;
    cv_.notify_all();
  }
  Batch b;
  b.input = buffers_[step % 2];
  b.targets = rows_.targets.narrow(0, step * batch_rows_, batch_rows_);
  return b;
}

void BatchPipeline::worker_loop() {
  while (true) {
    std::int64_t step = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || requested_ >= 0; });
      if (stop_) return;
      step = requested_;
    }
    try {
      prepare(step, static_cast<int>(step % 2));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_ = step;
      requested_ = -1;
    }
    cv_.notify_all();
  }
}

void BatchPipeline::prepare(std::int64_t step, int buffer) {
  if (!inputs_) return;
  if (data_.meta().float_inputs()) {
    // Tables [F] and series windows [V, T]: normalization per feature or variable (the
    // first sample dimension) only; augmentation is for images.
    const std::int64_t f = data_.meta().sample_elements();
    const std::int64_t run = f / data_.meta().sample_shape.front();  // values per feature or variable
    const float* src = rows_.inputs.data_ptr<float>() + step * batch_rows_ * f;
    float* dst = buffers_[buffer].data_ptr<float>();
    const auto channels = static_cast<std::size_t>(data_.meta().sample_shape.front());
    for (std::int64_t i = 0; i < batch_rows_; ++i) {
      for (std::size_t ch = 0; ch < channels; ++ch) {
        const float a = scale_[ch], b = shift_[ch];
        const std::int64_t off = i * f + static_cast<std::int64_t>(ch) * run;
        for (std::int64_t k = 0; k < run; ++k) dst[off + k] = src[off + k] * a + b;
      }
    }
    return;
  }
  const auto& shape = data_.meta().sample_shape;
  const std::int64_t c = shape[0], h = shape[1], w = shape[2], plane = h * w, sample = c * plane;
  const std::int64_t pad = config_.augment_crop_padding;
  const auto* src_all = rows_.inputs.data_ptr<std::uint8_t>() + step * batch_rows_ * sample;
  float* dst_all = buffers_[buffer].data_ptr<float>();
  for (std::int64_t i = 0; i < batch_rows_; ++i) {
    const std::uint8_t* src = src_all + i * sample;
    float* dst = dst_all + i * sample;
    bool flip = false;
    std::int64_t dy = 0, dx = 0;
    if (config_.augment_flip || pad > 0) {
      // The draw depends on (seed, epoch, sample) only: identical for any rank count.
      const auto index = static_cast<std::uint64_t>(indices_[static_cast<std::size_t>(step * batch_rows_ + i)]);
      SplitMix64 g(stream_seed(seed_, Stream::Augment, static_cast<std::uint64_t>(epoch_) * 0x100000000ULL + index));
      flip = config_.augment_flip && (g.next() & 1);
      if (pad > 0) {
        dy = static_cast<std::int64_t>(g.below(static_cast<std::uint64_t>(2 * pad + 1))) - pad;
        dx = static_cast<std::int64_t>(g.below(static_cast<std::uint64_t>(2 * pad + 1))) - pad;
      }
    }
    for (std::int64_t ch = 0; ch < c; ++ch) {
      const float a = scale_[static_cast<std::size_t>(ch)], b = shift_[static_cast<std::size_t>(ch)];
      const std::uint8_t* sp = src + ch * plane;
      float* dp = dst + ch * plane;
      if (!flip && dx == 0 && dy == 0) {
        for (std::int64_t k = 0; k < plane; ++k) dp[k] = static_cast<float>(sp[k]) * a + b;
        continue;
      }
      for (std::int64_t y = 0; y < h; ++y) {
        const std::int64_t sy = y + dy;
        for (std::int64_t x = 0; x < w; ++x) {
          // Crop shifts the window; flip mirrors the cropped image.
          const std::int64_t sx = (flip ? w - 1 - x : x) + dx;
          const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
          dp[y * w + x] = (inside ? static_cast<float>(sp[sy * w + sx]) : 0.0f) * a + b;
        }
      }
    }
  }
}

}  // namespace hpctrain
