#include "models/GemmEpilogue.hpp"

#if HPCTRAIN_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublasLt.h>
#include <dlfcn.h>

#include <array>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "util/Error.hpp"
#endif

namespace hpctrain {

#if HPCTRAIN_WITH_CUDA
namespace {

// cuBLASLt's entry points, looked up in the libcublasLt that LibTorch loaded (a dependency of
// libtorch_cuda, so in the process's global scope): linking it here could load a second copy of
// another version (the CUDA toolkit's) ahead of the one LibTorch was built with.
struct CublasLt {
  decltype(&::cublasLtGetStatusString) cublasLtGetStatusString = nullptr;
  decltype(&::cublasLtMatmulDescCreate) cublasLtMatmulDescCreate = nullptr;
  decltype(&::cublasLtMatmulDescDestroy) cublasLtMatmulDescDestroy = nullptr;
  decltype(&::cublasLtMatmulDescSetAttribute) cublasLtMatmulDescSetAttribute = nullptr;
  decltype(&::cublasLtMatrixLayoutCreate) cublasLtMatrixLayoutCreate = nullptr;
  decltype(&::cublasLtMatrixLayoutDestroy) cublasLtMatrixLayoutDestroy = nullptr;
  decltype(&::cublasLtMatmulPreferenceCreate) cublasLtMatmulPreferenceCreate = nullptr;
  decltype(&::cublasLtMatmulPreferenceDestroy) cublasLtMatmulPreferenceDestroy = nullptr;
  decltype(&::cublasLtMatmulPreferenceSetAttribute) cublasLtMatmulPreferenceSetAttribute = nullptr;
  decltype(&::cublasLtMatmulAlgoGetHeuristic) cublasLtMatmulAlgoGetHeuristic = nullptr;
  decltype(&::cublasLtMatmul) cublasLtMatmul = nullptr;
  bool found = true;

  template <typename F>
  void find(F& f, const char* name) {
    f = reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
    found = found && f != nullptr;
  }
  CublasLt() {
    find(cublasLtGetStatusString, "cublasLtGetStatusString");
    find(cublasLtMatmulDescCreate, "cublasLtMatmulDescCreate");
    find(cublasLtMatmulDescDestroy, "cublasLtMatmulDescDestroy");
    find(cublasLtMatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute");
    find(cublasLtMatrixLayoutCreate, "cublasLtMatrixLayoutCreate");
    find(cublasLtMatrixLayoutDestroy, "cublasLtMatrixLayoutDestroy");
    find(cublasLtMatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate");
    find(cublasLtMatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy");
    find(cublasLtMatmulPreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute");
    find(cublasLtMatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic");
    find(cublasLtMatmul, "cublasLtMatmul");
  }
};

// Null where the process has no cuBLASLt (the epilogues then decline and ATen runs).
const CublasLt* lt() {
  static const CublasLt table;
  return table.found ? &table : nullptr;
}

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw RuntimeFailure(std::string("cuBLASLt ") + what + ": " + lt()->cublasLtGetStatusString(status));
  }
}

// The descriptors cuBLASLt takes, each destroyed with its scope.
struct MatmulDesc {
  cublasLtMatmulDesc_t desc{};
  MatmulDesc(cublasComputeType_t compute, cudaDataType_t scale) {
    check(lt()->cublasLtMatmulDescCreate(&desc, compute, scale), "matmul descriptor");
  }
  ~MatmulDesc() { lt()->cublasLtMatmulDescDestroy(desc); }
  MatmulDesc(const MatmulDesc&) = delete;
  MatmulDesc& operator=(const MatmulDesc&) = delete;
  template <typename T>
  void set(cublasLtMatmulDescAttributes_t attribute, const T& value) {
    check(lt()->cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof value), "matmul attribute");
  }
};

struct Layout {
  cublasLtMatrixLayout_t layout{};
  Layout(cudaDataType_t type, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
    check(lt()->cublasLtMatrixLayoutCreate(&layout, type, static_cast<std::uint64_t>(rows),
                                           static_cast<std::uint64_t>(cols), ld),
          "matrix layout");
  }
  ~Layout() { lt()->cublasLtMatrixLayoutDestroy(layout); }
  Layout(const Layout&) = delete;
  Layout& operator=(const Layout&) = delete;
};

struct Preference {
  cublasLtMatmulPreference_t pref{};
  Preference() { check(lt()->cublasLtMatmulPreferenceCreate(&pref), "preference"); }
  ~Preference() { lt()->cublasLtMatmulPreferenceDestroy(pref); }
  Preference(const Preference&) = delete;
  Preference& operator=(const Preference&) = delete;
  template <typename T>
  void set(cublasLtMatmulPreferenceAttributes_t attribute, const T& value) {
    check(lt()->cublasLtMatmulPreferenceSetAttribute(pref, attribute, &value, sizeof value), "preference attribute");
  }
};

cudaDataType_t cuda_type(c10::ScalarType t) {
  if (t == torch::kBFloat16) return CUDA_R_16BF;
  if (t == torch::kHalf) return CUDA_R_16F;
  return CUDA_R_32F;
}

// The largest power of two up to 256 that divides the address (cuBLASLt assumes 256 unless told).
std::uint32_t alignment(const void* p) {
  std::uint32_t a = 256;
  while (a > 1 && reinterpret_cast<std::uintptr_t>(p) % a != 0) a /= 2;
  return a;
}

// D [m x n] = op(A) op(B), column-major, with an epilogue; A stored m x k (op N) or k x m (op T),
// B stored k x n (op N) or n x k (op T).
struct Gemm {
  cublasOperation_t ta, tb;
  std::int64_t m, n, k;
  const void* a;
  std::int64_t lda;
  const void* b;
  std::int64_t ldb;
  void* d;
  std::int64_t ldd;
  cublasLtEpilogue_t epilogue;
  const void* bias;  // BIAS: read; BGRAD: written
  const void* aux;   // GELU_AUX: written; DGELU: read
  std::int64_t ldaux;
};

// type, ta, tb, m, n, k, lda, ldb, ldd, epilogue, the alignments of A, B, D, bias and aux,
// the workspace's size, TF32 and the device.
using Key = std::array<std::int64_t, 17>;

// The algorithm of each shape: the heuristic's first, or none where it has none (or cuBLASLt
// refused the one it offered).
struct AlgorithmCache {
  std::mutex mutex;
  std::map<Key, std::optional<cublasLtMatmulAlgo_t>> entries;
};

AlgorithmCache& algorithms() {
  static AlgorithmCache cache;
  return cache;
}

// Once per shape: the speed the user asked for is not there.
void say_declined(const Key& key) {
  const auto e = static_cast<cublasLtEpilogue_t>(key[9]);
  std::fprintf(stderr,
               "hpctrain: cuBLASLt offers no algorithm for its %s epilogue on a %lld x %lld x %lld product of %s; "
               "ATen's operators run in its place\n",
               e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ? "GELU_AUX_BIAS"
               : e == CUBLASLT_EPILOGUE_DGELU_BGRAD ? "DGELU_BGRAD"
                                                    : "BGRADB",
               static_cast<long long>(key[3]), static_cast<long long>(key[4]), static_cast<long long>(key[5]),
               c10::toString(static_cast<c10::ScalarType>(key[0])));
}

std::optional<cublasLtMatmulAlgo_t> cached_algorithm(const Key& key,
                                                     const std::function<bool(cublasLtMatmulAlgo_t&)>& query) {
  auto& cache = algorithms();
  const std::lock_guard<std::mutex> lock(cache.mutex);
  const auto found = cache.entries.find(key);
  if (found != cache.entries.end()) return found->second;
  cublasLtMatmulAlgo_t algo{};
  std::optional<cublasLtMatmulAlgo_t> result;
  if (query(algo)) {
    result = algo;
  } else {
    say_declined(key);
  }
  cache.entries.emplace(key, result);
  return result;
}

void decline(const Key& key) {
  auto& cache = algorithms();
  const std::lock_guard<std::mutex> lock(cache.mutex);
  auto& entry = cache.entries[key];
  if (entry) say_declined(key);
  entry.reset();
}

// TF32 for float32 products where LibTorch allows it for its own (and no NoTF32Guard is active).
bool tf32_allowed() {
  return at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) ==
             at::Float32Precision::TF32 &&
         !at::NoTF32Guard::should_disable_tf32();
}

bool run(const Gemm& g, c10::ScalarType type, const c10::Device& device) {
  if (!lt()) return false;
  const c10::cuda::CUDAGuard guard(device);
  const auto t = cuda_type(type);
  const bool tf32 = type == torch::kFloat && tf32_allowed();
  MatmulDesc desc(tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, static_cast<std::int32_t>(g.ta));
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, static_cast<std::int32_t>(g.tb));
  desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<std::uint32_t>(g.epilogue));
  if (g.bias) desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
  if (g.aux) {
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.aux);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, g.ldaux);
  }
  const bool an = g.ta == CUBLAS_OP_N, bn = g.tb == CUBLAS_OP_N;
  const Layout a(t, an ? g.m : g.k, an ? g.k : g.m, g.lda), b(t, bn ? g.k : g.n, bn ? g.n : g.k, g.ldb),
      d(t, g.m, g.n, g.ldd);
  const auto workspace_bytes = at::cuda::getCUDABlasLtWorkspaceSize();
  const std::uint32_t align_a = alignment(g.a), align_b = alignment(g.b), align_d = alignment(g.d);
  const Key key{static_cast<std::int64_t>(type),
                g.ta,
                g.tb,
                g.m,
                g.n,
                g.k,
                g.lda,
                g.ldb,
                g.ldd,
                static_cast<std::int64_t>(g.epilogue),
                align_a,
                align_b,
                align_d,
                g.bias ? alignment(g.bias) : 0,
                g.aux ? alignment(g.aux) : 0,
                static_cast<std::int64_t>(workspace_bytes),
                (tf32 ? 1 : 0) + 2 * static_cast<std::int64_t>(device.index())};
  const auto handle = at::cuda::getCurrentCUDABlasLtHandle();
  const auto algo = cached_algorithm(key, [&](cublasLtMatmulAlgo_t& out) {
    Preference pref;
    pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<std::uint64_t>(workspace_bytes));
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const auto status = lt()->cublasLtMatmulAlgoGetHeuristic(handle, desc.desc, a.layout, b.layout, d.layout, d.layout,
                                                             pref.pref, 1, &result, &found);
    if (status != CUBLAS_STATUS_SUCCESS || found < 1 || result.state != CUBLAS_STATUS_SUCCESS) return false;
    out = result.algo;
    return true;
  });
  if (!algo) return false;
  const float alpha = 1.f, beta = 0.f;
  const auto status = lt()->cublasLtMatmul(handle, desc.desc, &alpha, g.a, a.layout, g.b, b.layout, &beta, g.d,
                                           d.layout, g.d, d.layout, &*algo, at::cuda::getCUDABlasLtWorkspace(),
                                           workspace_bytes, at::cuda::getCurrentCUDAStream(device.index()).stream());
  // An algorithm the heuristic offered but the call refuses (nothing was queued): ATen's operators.
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) {
    decline(key);
    return false;
  }
  check(status, "matmul");
  return true;
}

// 2-D, contiguous, of one supported type on one GPU.
bool fits(std::initializer_list<const torch::Tensor*> ts) {
  const auto& first = **ts.begin();
  const auto type = first.scalar_type();
  if (type != torch::kFloat && type != torch::kBFloat16 && type != torch::kHalf) return false;
  for (const auto* t : ts) {
    if (!t->defined() || !t->is_cuda() || t->device() != first.device() || t->scalar_type() != type ||
        !t->is_contiguous() || t->numel() == 0) {
      return false;
    }
  }
  return true;
}

}  // namespace

bool gemm_epilogues_available() {
  return lt() != nullptr;
}

bool linear_gelu_lt(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, torch::Tensor& h,
                    torch::Tensor& pre) {
  if (!fits({&x, &w, &b}) || x.dim() != 2 || w.dim() != 2 || w.size(1) != x.size(1) || b.numel() != w.size(0) ||
      w.size(0) % 8 != 0) {
    return false;
  }
  const auto m = x.size(0), n = w.size(0), k = x.size(1);
  auto hh = torch::empty({m, n}, x.options()), pp = torch::empty({m, n}, x.options());
  // Column-major: h^T [n x m] = w [k x n]^T x^T [k x m].
  const Gemm g{CUBLAS_OP_T,
               CUBLAS_OP_N,
               n,
               m,
               k,
               w.data_ptr(),
               k,
               x.data_ptr(),
               k,
               hh.data_ptr(),
               n,
               CUBLASLT_EPILOGUE_GELU_AUX_BIAS,
               b.data_ptr(),
               pp.data_ptr(),
               n};
  if (!run(g, x.scalar_type(), x.device())) return false;
  h = hh;
  pre = pp;
  return true;
}

bool matmul_dgelu_bgrad_lt(const torch::Tensor& dy, const torch::Tensor& w2, const torch::Tensor& pre,
                           torch::Tensor& dpre, torch::Tensor& db) {
  if (!fits({&dy, &w2, &pre}) || dy.dim() != 2 || w2.dim() != 2 || pre.dim() != 2 || w2.size(0) != dy.size(1) ||
      pre.size(0) != dy.size(0) || pre.size(1) != w2.size(1) || pre.size(1) % 8 != 0) {
    return false;
  }
  const auto m = dy.size(0), n = w2.size(1), k = dy.size(1);
  auto out = torch::empty({m, n}, dy.options()), bias_grad = torch::empty({n}, dy.options());
  // Column-major: dpre^T [n x m] = w2^T [n x k] dy^T [k x m], the GELU's gradient at pre applied
  // in the epilogue, the bias gradient its sums over m.
  const Gemm g{CUBLAS_OP_N,
               CUBLAS_OP_N,
               n,
               m,
               k,
               w2.data_ptr(),
               n,
               dy.data_ptr(),
               k,
               out.data_ptr(),
               n,
               CUBLASLT_EPILOGUE_DGELU_BGRAD,
               bias_grad.data_ptr(),
               pre.data_ptr(),
               n};
  if (!run(g, dy.scalar_type(), dy.device())) return false;
  dpre = out;
  db = bias_grad;
  return true;
}

bool weight_grad_bgrad_lt(const torch::Tensor& dy, const torch::Tensor& h, torch::Tensor& dw, torch::Tensor& db) {
  if (!fits({&dy, &h}) || dy.dim() != 2 || h.dim() != 2 || h.size(0) != dy.size(0)) return false;
  const auto m = dy.size(0), n = h.size(1), n2 = dy.size(1);
  auto out = torch::empty({n2, n}, dy.options()), bias_grad = torch::empty({n2}, dy.options());
  // Column-major: dw^T [n x n2] = h^T [n x m] (dy^T [n2 x m])^T; BGRADB sums B = dy over the
  // GEMM's k (the rows m), one value per column of dw^T.
  const Gemm g{CUBLAS_OP_N,
               CUBLAS_OP_T,
               n,
               n2,
               m,
               h.data_ptr(),
               n,
               dy.data_ptr(),
               n2,
               out.data_ptr(),
               n,
               CUBLASLT_EPILOGUE_BGRADB,
               bias_grad.data_ptr(),
               nullptr,
               0};
  if (!run(g, dy.scalar_type(), dy.device())) return false;
  dw = out;
  db = bias_grad;
  return true;
}

#else

bool gemm_epilogues_available() {
  return false;
}
bool linear_gelu_lt(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, torch::Tensor&, torch::Tensor&) {
  return false;
}
bool matmul_dgelu_bgrad_lt(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, torch::Tensor&,
                           torch::Tensor&) {
  return false;
}
bool weight_grad_bgrad_lt(const torch::Tensor&, const torch::Tensor&, torch::Tensor&, torch::Tensor&) {
  return false;
}

#endif

}  // namespace hpctrain
