// RMS normalisation (mx.fast.rms_norm) of every block's input, for prompts and batched decode steps on a CPU.
//
// MLX's CPU rms_norm runs on one thread with scalar loops: 0.5 ms for a 512-token prompt's 576-wide rows, 30 ms of
// SmolLM2-135M's prefill over its 61 norms. Here each row is one vectorised pass for its mean square and one for
// the scaled output, rows split over the kernels' threads. Its gradient too: MLX's took 137 ms of a LoRA training
// step's backward (61 norms of 4 x 256 rows), 3.5 times their forward; here it is two passes a row.

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/vector.h>

#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"

#include "pool.h"
#include "primitive.h"
#include "simd.h"

namespace mx = mlx::core;
namespace nb = nanobind;
using locomlx_kernels::over_ranges;
using locomlx_kernels::prepared_encoder;
#ifdef LOCOMLX_AVX2
using locomlx_kernels::hsum;
#endif

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // below this many elements one thread is faster than waking others

void norm_row(const float* x, const float* w, float* out, int64_t n, float eps) {
  float squares = 0.0f;
  int64_t j = 0;
#ifdef LOCOMLX_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_loadu_ps(x + j);
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  squares = hsum(acc);
#endif
  for (; j < n; ++j) squares += x[j] * x[j];
  const float r = 1.0f / std::sqrt(squares / static_cast<float>(n) + eps);
  j = 0;
#ifdef LOCOMLX_AVX2
  const __m256 rv = _mm256_set1_ps(r);
  for (; j + 8 <= n; j += 8) {
    _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j), rv), _mm256_loadu_ps(w + j)));
  }
#endif
  for (; j < n; ++j) out[j] = x[j] * r * w[j];
}

void rms_norm(const float* x, const float* w, float* out, int64_t rows, int64_t n, float eps) {
  auto task = [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) norm_row(x + row * n, w, out + row * n, n, eps);
  };
  over_ranges(rows, rows * n >= kParallelMin && rows > 1, task);
}

// y = x r w with r = 1 / sqrt(mean(x^2) + eps): given the cotangent g, dx = r (w g) - x r^3 mean(x w g), and dw
// sums g x r over the rows (each part of the rows into its own partial sum, added up at the end).
void rms_norm_grad(const float* x, const float* w, const float* g, float* dx, float* dw, int64_t rows, int64_t n,
                   float eps) {
  const bool parallel = rows * n >= kParallelMin && rows > 1;
  const int parts = locomlx_kernels::parts_for(parallel);
  std::vector<float> partial(static_cast<size_t>(parts) * n, 0.0f);
  locomlx_kernels::over_parts(rows, parts, [&](int part, int64_t lo, int64_t hi) {
    float* dw_part = partial.data() + static_cast<size_t>(part) * n;
    for (int64_t row = lo; row < hi; ++row) {
      const float* xr = x + row * n;
      const float* gr = g + row * n;
      float squares = 0.0f, dot = 0.0f;
      int64_t j = 0;
#ifdef LOCOMLX_AVX2
      __m256 sq = _mm256_setzero_ps(), dt = _mm256_setzero_ps();
      for (; j + 8 <= n; j += 8) {
        const __m256 v = _mm256_loadu_ps(xr + j);
        sq = _mm256_fmadd_ps(v, v, sq);
        dt = _mm256_fmadd_ps(_mm256_mul_ps(v, _mm256_loadu_ps(w + j)), _mm256_loadu_ps(gr + j), dt);
      }
      squares = hsum(sq);
      dot = hsum(dt);
#endif
      for (; j < n; ++j) {
        squares += xr[j] * xr[j];
        dot += xr[j] * w[j] * gr[j];
      }
      const float r = 1.0f / std::sqrt(squares / static_cast<float>(n) + eps);
      const float c = r * r * r * dot / static_cast<float>(n);
      float* dxr = dx + row * n;
      for (j = 0; j < n; ++j) {  // vectorised by the compiler
        dxr[j] = r * w[j] * gr[j] - xr[j] * c;
        dw_part[j] += gr[j] * xr[j] * r;
      }
    }
  });
  for (int64_t j = 0; j < n; ++j) {
    float total = 0.0f;
    for (int part = 0; part < parts; ++part) total += partial[static_cast<size_t>(part) * n + j];
    dw[j] = total;
  }
}

class RMSNorm : public mx::UnaryPrimitive {
 public:
  RMSNorm(mx::Stream stream, float eps) : mx::UnaryPrimitive(stream), eps_(eps) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    auto& encoder = prepared_encoder(stream(), inputs, out);
    const int64_t n = out.shape(-1);
    encoder.dispatch([x = inputs[0].data<float>(), w = inputs[1].data<float>(), o = out.data<float>(),
                      rows = static_cast<int64_t>(out.size()) / n, n, eps = eps_]() { rms_norm(x, w, o, rows, n, eps); });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("this rms_norm runs on the CPU only; on a GPU use mx.fast.rms_norm.");
  }

  const char* name() const override { return "LocomlxRMSNorm"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    return eps_ == static_cast<const RMSNorm&>(other).eps_;
  }

 private:
  float eps_;
};

class RMSNormGrad : public mx::Primitive {
 public:
  RMSNormGrad(mx::Stream stream, float eps) : mx::Primitive(stream), eps_(eps) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    auto& encoder = prepared_encoder(stream(), inputs, outputs);
    const int64_t n = inputs[0].shape(-1);
    encoder.dispatch([x = inputs[0].data<float>(), w = inputs[1].data<float>(), g = inputs[2].data<float>(),
                      dx = outputs[0].data<float>(), dw = outputs[1].data<float>(),
                      rows = static_cast<int64_t>(inputs[0].size()) / n, n,
                      eps = eps_]() { rms_norm_grad(x, w, g, dx, dw, rows, n, eps); });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("this rms_norm gradient runs on the CPU only.");
  }

  const char* name() const override { return "LocomlxRMSNormGrad"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    return eps_ == static_cast<const RMSNormGrad&>(other).eps_;
  }

 private:
  float eps_;
};

void check(const mx::array& x, const mx::array& weight) {
  if (x.dtype() != mx::float32 || weight.dtype() != mx::float32 || x.ndim() < 1 || weight.ndim() != 1 ||
      weight.shape(0) != x.shape(-1) || x.shape(-1) == 0) {
    throw std::invalid_argument("rms_norm: x must be float32 (..., D) and weight float32 (D,).");
  }
}

std::vector<mx::array> rms_norm_grad_op(const mx::array& x, const mx::array& weight, const mx::array& cotangent,
                                        float eps) {
  check(x, weight);
  if (cotangent.dtype() != mx::float32 || cotangent.shape() != x.shape()) {
    throw std::invalid_argument("rms_norm_grad: the cotangent must be float32 of x's shape.");
  }
  auto s = mx::default_stream(mx::Device::cpu);
  return mx::array::make_arrays({x.shape(), weight.shape()}, {mx::float32, mx::float32},
                                std::make_shared<RMSNormGrad>(s, eps),
                                {mx::contiguous(x, false, s), mx::contiguous(weight, false, s),
                                 mx::contiguous(cotangent, false, s)});
}

mx::array rms_norm_op(const mx::array& x, const mx::array& weight, float eps) {
  check(x, weight);
  auto s = mx::default_stream(mx::Device::cpu);
  return mx::array(x.shape(), mx::float32, std::make_shared<RMSNorm>(s, eps),
                   {mx::contiguous(x, false, s), mx::contiguous(weight, false, s)});
}

}  // namespace

void register_rms_norm(nb::module_& m) {
  m.def("rms_norm", &rms_norm_op, nb::arg("x"), nb::arg("weight"), nb::arg("eps"),
        "mx.fast.rms_norm(x, weight, eps) for float32 x (..., D) and weight (D,). No vjp of its own "
        "(locomlx/models/cpu_kernels.py gives it rms_norm_grad).");
  m.def("rms_norm_grad", &rms_norm_grad_op, nb::arg("x"), nb::arg("weight"), nb::arg("cotangent"), nb::arg("eps"),
        "The gradients (of x, of weight) of rms_norm(x, weight, eps) given the cotangent of its output.");
}
