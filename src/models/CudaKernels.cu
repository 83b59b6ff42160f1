// The CUDA kernels of models/CudaKernels.hpp. Each row of the residual add + LayerNorm is one
// block of 256 threads: the forward writes h while summing it, then reads its own elements
// back (from L1/L2) for the squared deviations and for y, so the row is read from memory once
// per input and written once per output, against ATen's add (read x, r; write h) and
// layer_norm (read h twice; write y). The backward reads dy, h (and dh_in) once per row for
// both sums and again for the gradient; the weights' gradients are column sums over rows in
// fixed chunks, then over chunks, in a fixed order (bitwise reproducible, no atomics). The
// softmax cross-entropy keeps one log-sum-exp per row; its backward forms each probability in
// a register from the logit and that value and writes the gradient, so no [rows, classes]
// tensor of probabilities or log-probabilities exists at any time.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "models/CudaKernels.hpp"

namespace hpctrain::cuda_kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kColumns = 32;  // columns per block of the weights' gradient
constexpr int kRowLanes = 8;  // rows in flight per column there

__device__ __forceinline__ float to_float(float v) {
  return v;
}
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
__device__ __forceinline__ float to_float(__half v) {
  return __half2float(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

// The sums of a and b over the block, in every thread (a fixed order: reproducible).
__device__ float2 block_sums(float a, float b) {
  __shared__ float2 warp_sums[kWarps];
  for (int o = 16; o > 0; o >>= 1) {
    a += __shfl_xor_sync(0xffffffffu, a, o);
    b += __shfl_xor_sync(0xffffffffu, b, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = make_float2(a, b);
  __syncthreads();
  if (warp == 0) {
    float2 t = lane < kWarps ? warp_sums[lane] : make_float2(0.f, 0.f);
    for (int o = kWarps / 2; o > 0; o >>= 1) {
      t.x += __shfl_xor_sync(0xffffffffu, t.x, o);
      t.y += __shfl_xor_sync(0xffffffffu, t.y, o);
    }
    if (lane == 0) warp_sums[0] = t;
  }
  __syncthreads();
  const float2 total = warp_sums[0];
  __syncthreads();  // the next call may overwrite warp_sums
  return total;
}

template <typename TH, typename TR, typename TY>
__global__ void __launch_bounds__(kThreads)
    add_norm_forward_rows(const TH* __restrict__ x, const TR* __restrict__ r, const float* __restrict__ gamma,
                          const float* __restrict__ beta, TH* __restrict__ h, TY* __restrict__ y,
                          float* __restrict__ mean, float* __restrict__ rstd, std::int64_t d, float eps) {
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * d;
  float sum = 0.f;
  for (std::int64_t j = threadIdx.x; j < d; j += kThreads) {
    // Without r (a LayerNorm alone), h is x: read, never written.
    const TH v = r ? from_float<TH>(to_float(x[base + j]) + to_float(r[base + j])) : x[base + j];
    if (r) h[base + j] = v;
    sum += to_float(v);
  }
  const float m = block_sums(sum, 0.f).x / static_cast<float>(d);
  float squares = 0.f;
  for (std::int64_t j = threadIdx.x; j < d; j += kThreads) {
    const float dev = to_float(h[base + j]) - m;
    squares += dev * dev;
  }
  const float s = rsqrtf(block_sums(squares, 0.f).x / static_cast<float>(d) + eps);
  for (std::int64_t j = threadIdx.x; j < d; j += kThreads) {
    float v = (to_float(h[base + j]) - m) * s;
    if (gamma) v = v * gamma[j] + (beta ? beta[j] : 0.f);
    y[base + j] = from_float<TY>(v);
  }
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = m;
    rstd[blockIdx.x] = s;
  }
}

template <typename TH, typename TR, typename TY>
__global__ void __launch_bounds__(kThreads)
    add_norm_backward_rows(const TY* __restrict__ dy, const TH* __restrict__ dh_in, const TH* __restrict__ h,
                           const float* __restrict__ gamma, const float* __restrict__ mean,
                           const float* __restrict__ rstd, TH* __restrict__ dh, TR* __restrict__ dr, std::int64_t d) {
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * d;
  const float m = mean[blockIdx.x], s = rstd[blockIdx.x];
  float sum_g = 0.f, sum_gx = 0.f;
  for (std::int64_t j = threadIdx.x; j < d; j += kThreads) {
    const float g = to_float(dy[base + j]) * (gamma ? gamma[j] : 1.f);
    sum_g += g;
    sum_gx += g * (to_float(h[base + j]) - m) * s;
  }
  const float2 sums = block_sums(sum_g, sum_gx);
  const float mean_g = sums.x / static_cast<float>(d), mean_gx = sums.y / static_cast<float>(d);
  for (std::int64_t j = threadIdx.x; j < d; j += kThreads) {
    const float g = to_float(dy[base + j]) * (gamma ? gamma[j] : 1.f);
    const float xhat = (to_float(h[base + j]) - m) * s;
    float v = s * (g - mean_g - xhat * mean_gx);
    if (dh_in) v += to_float(dh_in[base + j]);
    dh[base + j] = from_float<TH>(v);
    if (dr) dr[base + j] = from_float<TR>(v);
  }
}

// Rows per chunk of the weights' gradient: enough chunks to fill the GPU, each long enough
// that its partial sums cost little to add up.
std::int64_t rows_per_chunk(std::int64_t rows) {
  const std::int64_t per = (rows + 255) / 256;
  return per < 32 ? 32 : per;
}

// partial[chunk][0][col] = Σ dy * xhat, partial[chunk][1][col] = Σ dy over the chunk's rows.
template <typename TH, typename TY>
__global__ void add_norm_weight_partials(const TY* __restrict__ dy, const TH* __restrict__ h,
                                         const float* __restrict__ mean, const float* __restrict__ rstd,
                                         std::int64_t rows, std::int64_t d, std::int64_t per_chunk,
                                         float* __restrict__ partial) {
  __shared__ float sums[2][kRowLanes][kColumns + 1];
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * kColumns + threadIdx.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.y) * per_chunk;
  const std::int64_t end = first + per_chunk < rows ? first + per_chunk : rows;
  float sg = 0.f, sb = 0.f;
  if (col < d) {
    for (std::int64_t row = first + threadIdx.y; row < end; row += kRowLanes) {
      const float g = to_float(dy[row * d + col]);
      sg += g * (to_float(h[row * d + col]) - mean[row]) * rstd[row];
      sb += g;
    }
  }
  sums[0][threadIdx.y][threadIdx.x] = sg;
  sums[1][threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && col < d) {
    float a = 0.f, b = 0.f;
    for (int k = 0; k < kRowLanes; ++k) {
      a += sums[0][k][threadIdx.x];
      b += sums[1][k][threadIdx.x];
    }
    partial[(2 * static_cast<std::int64_t>(blockIdx.y)) * d + col] = a;
    partial[(2 * static_cast<std::int64_t>(blockIdx.y) + 1) * d + col] = b;
  }
}

__global__ void add_norm_weight_sums(const float* __restrict__ partial, std::int64_t chunks, std::int64_t d,
                                     float* __restrict__ dgamma, float* __restrict__ dbeta) {
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= d) return;
  float a = 0.f, b = 0.f;
  for (std::int64_t c = 0; c < chunks; ++c) {
    a += partial[(2 * c) * d + col];
    b += partial[(2 * c + 1) * d + col];
  }
  if (dgamma) dgamma[col] = a;
  if (dbeta) dbeta[col] = b;
}

const char* launched() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

template <typename TH, typename TR, typename TY>
const char* forward_as(const AddNormForward& a, cudaStream_t stream) {
  add_norm_forward_rows<TH, TR, TY><<<static_cast<unsigned>(a.rows), kThreads, 0, stream>>>(
      static_cast<const TH*>(a.x), static_cast<const TR*>(a.r), a.gamma, a.beta, static_cast<TH*>(a.h),
      static_cast<TY*>(a.y), a.mean, a.rstd, a.d, a.eps);
  return launched();
}

template <typename TH, typename TR, typename TY>
const char* backward_as(const AddNormBackward& a, cudaStream_t stream) {
  add_norm_backward_rows<TH, TR, TY><<<static_cast<unsigned>(a.rows), kThreads, 0, stream>>>(
      static_cast<const TY*>(a.dy), static_cast<const TH*>(a.dh_in), static_cast<const TH*>(a.h), a.gamma, a.mean,
      a.rstd, static_cast<TH*>(a.dh), static_cast<TR*>(a.dr), a.d);
  if (const char* error = launched()) return error;
  if (!a.dgamma && !a.dbeta) return nullptr;
  const std::int64_t per = rows_per_chunk(a.rows), chunks = (a.rows + per - 1) / per;
  const dim3 grid(static_cast<unsigned>((a.d + kColumns - 1) / kColumns), static_cast<unsigned>(chunks));
  add_norm_weight_partials<TH, TY><<<grid, dim3(kColumns, kRowLanes), 0, stream>>>(
      static_cast<const TY*>(a.dy), static_cast<const TH*>(a.h), a.mean, a.rstd, a.rows, a.d, per, a.partial);
  if (const char* error = launched()) return error;
  add_norm_weight_sums<<<static_cast<unsigned>((a.d + 255) / 256), 256, 0, stream>>>(a.partial, chunks, a.d, a.dgamma,
                                                                                     a.dbeta);
  return launched();
}

// F<TH, TR, TY>::run for a combination add_norm_supported accepts.
template <template <typename, typename, typename> class F, typename Args>
const char* dispatch(const Args& a, Dtype h, Dtype r, Dtype y, cudaStream_t stream) {
  using BF = __nv_bfloat16;
  if (h == Dtype::Float && y == Dtype::Float) {
    if (r == Dtype::Float) return F<float, float, float>::run(a, stream);
    if (r == Dtype::BFloat16) return F<float, BF, float>::run(a, stream);
    return F<float, __half, float>::run(a, stream);
  }
  if (h == Dtype::Float) {  // y of the branch's type: the input of a matrix product under autocast
    return r == Dtype::BFloat16 ? F<float, BF, BF>::run(a, stream) : F<float, __half, __half>::run(a, stream);
  }
  if (h == Dtype::BFloat16 && r == h) {
    return y == Dtype::Float ? F<BF, BF, float>::run(a, stream) : F<BF, BF, BF>::run(a, stream);
  }
  return y == Dtype::Float ? F<__half, __half, float>::run(a, stream) : F<__half, __half, __half>::run(a, stream);
}

template <typename TH, typename TR, typename TY>
struct Forward {
  static const char* run(const AddNormForward& a, cudaStream_t s) { return forward_as<TH, TR, TY>(a, s); }
};
template <typename TH, typename TR, typename TY>
struct Backward {
  static const char* run(const AddNormBackward& a, cudaStream_t s) { return backward_as<TH, TR, TY>(a, s); }
};

// The maximum of v over the block, in every thread.
__device__ float block_max(float v) {
  __shared__ float warp_max[kWarps];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  float m = warp_max[0];
  for (int w = 1; w < kWarps; ++w) m = fmaxf(m, warp_max[w]);
  __syncthreads();
  return m;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_rows(const T* __restrict__ logits, const std::int64_t* __restrict__ targets, float* __restrict__ lse,
                       float* __restrict__ row_loss, std::int64_t c) {
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * c;
  float m = -INFINITY;
  for (std::int64_t j = threadIdx.x; j < c; j += kThreads) m = fmaxf(m, to_float(logits[base + j]));
  m = block_max(m);
  float sum = 0.f;
  for (std::int64_t j = threadIdx.x; j < c; j += kThreads) sum += expf(to_float(logits[base + j]) - m);
  const float l = m + logf(block_sums(sum, 0.f).x);
  if (threadIdx.x == 0) {
    const std::int64_t t = targets[blockIdx.x];
    lse[blockIdx.x] = l;
    // A target outside [0, c) (the data were checked on import) gives NaN, not a stray read.
    row_loss[blockIdx.x] = t >= 0 && t < c ? l - to_float(logits[base + t]) : NAN;
  }
}

// One block adds the rows' losses in a fixed order.
__global__ void __launch_bounds__(kThreads)
    sum_rows(const float* __restrict__ row_loss, std::int64_t rows, float* __restrict__ out) {
  float sum = 0.f;
  for (std::int64_t i = threadIdx.x; i < rows; i += kThreads) sum += row_loss[i];
  sum = block_sums(sum, 0.f).x;
  if (threadIdx.x == 0) *out = sum;
}

template <typename T>
__global__ void cross_entropy_grad(const T* __restrict__ logits, const std::int64_t* __restrict__ targets,
                                   const float* __restrict__ lse, const float* __restrict__ grad_sum,
                                   T* __restrict__ grad, std::int64_t rows, std::int64_t c) {
  const float g = *grad_sum;
  const std::int64_t n = rows * c;
  for (std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t i = k / c, j = k - i * c;
    const float p = expf(to_float(logits[k]) - lse[i]);
    grad[k] = from_float<T>(g * (p - (j == targets[i] ? 1.f : 0.f)));
  }
}

template <typename T>
const char* cross_entropy_forward_as(const CrossEntropyForward& a, cudaStream_t stream) {
  cross_entropy_rows<T><<<static_cast<unsigned>(a.rows), kThreads, 0, stream>>>(static_cast<const T*>(a.logits),
                                                                                a.targets, a.lse, a.row_loss, a.c);
  if (const char* error = launched()) return error;
  sum_rows<<<1, kThreads, 0, stream>>>(a.row_loss, a.rows, a.loss_sum);
  return launched();
}

template <typename T>
const char* cross_entropy_backward_as(const CrossEntropyBackward& a, cudaStream_t stream) {
  const std::int64_t n = a.rows * a.c, blocks = (n + kThreads - 1) / kThreads;
  cross_entropy_grad<T><<<static_cast<unsigned>(blocks < 65536 ? blocks : 65536), kThreads, 0, stream>>>(
      static_cast<const T*>(a.logits), a.targets, a.lse, a.grad_sum, static_cast<T*>(a.grad), a.rows, a.c);
  return launched();
}

}  // namespace

const char* cross_entropy_forward(const CrossEntropyForward& a, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  if (a.rows > 0x7fffffff) return "cross_entropy_forward: more than 2^31 - 1 rows";
  if (a.rows == 0) {
    const cudaError_t e = cudaMemsetAsync(a.loss_sum, 0, sizeof(float), s);
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
  }
  if (a.type == Dtype::Float) return cross_entropy_forward_as<float>(a, s);
  if (a.type == Dtype::BFloat16) return cross_entropy_forward_as<__nv_bfloat16>(a, s);
  return cross_entropy_forward_as<__half>(a, s);
}

const char* cross_entropy_backward(const CrossEntropyBackward& a, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  if (a.rows == 0) return nullptr;
  if (a.type == Dtype::Float) return cross_entropy_backward_as<float>(a, s);
  if (a.type == Dtype::BFloat16) return cross_entropy_backward_as<__nv_bfloat16>(a, s);
  return cross_entropy_backward_as<__half>(a, s);
}

bool add_norm_supported(Dtype h, Dtype r, Dtype y) {
  if (h == Dtype::Float) return y == Dtype::Float || (r != Dtype::Float && y == r);
  return r == h && (y == h || y == Dtype::Float);
}

std::int64_t add_norm_partial_floats(std::int64_t rows, std::int64_t d) {
  const std::int64_t per = rows_per_chunk(rows);
  return 2 * ((rows + per - 1) / per) * d;
}

const char* add_norm_forward(const AddNormForward& a, void* stream) {
  if (!add_norm_supported(a.h_type, a.r_type, a.y_type)) return "add_norm_forward: unsupported types";
  if (a.rows == 0) return nullptr;
  if (a.rows > 0x7fffffff) return "add_norm_forward: more than 2^31 - 1 rows";
  return dispatch<Forward>(a, a.h_type, a.r_type, a.y_type, static_cast<cudaStream_t>(stream));
}

const char* add_norm_backward(const AddNormBackward& a, void* stream) {
  if (!add_norm_supported(a.h_type, a.r_type, a.y_type)) return "add_norm_backward: unsupported types";
  if (a.rows == 0) return nullptr;
  if (a.rows > 0x7fffffff) return "add_norm_backward: more than 2^31 - 1 rows";
  return dispatch<Backward>(a, a.h_type, a.r_type, a.y_type, static_cast<cudaStream_t>(stream));
}

}  // namespace hpctrain::cuda_kernels
