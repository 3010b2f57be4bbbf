// RMS normalisation (mx.fast.rms_norm) of every block's input, for prompts and batched decode steps on a CPU.
//
// MLX's CPU rms_norm runs on one thread with scalar loops: 0.5 ms for a 512-token prompt's 576-wide rows, 30 ms of
// SmolLM2-135M's prefill over its 61 norms. Here each row is one vectorised pass for its mean square and one for
// the scaled output, rows split over the kernels' threads.

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include <nanobind/nanobind.h>

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

mx::array rms_norm_op(const mx::array& x, const mx::array& weight, float eps) {
  if (x.dtype() != mx::float32 || weight.dtype() != mx::float32 || x.ndim() < 1 || weight.ndim() != 1 ||
      weight.shape(0) != x.shape(-1) || x.shape(-1) == 0) {
    throw std::invalid_argument("rms_norm: x must be float32 (..., D) and weight float32 (D,).");
  }
  auto s = mx::default_stream(mx::Device::cpu);
  return mx::array(x.shape(), mx::float32, std::make_shared<RMSNorm>(s, eps),
                   {mx::contiguous(x, false, s), mx::contiguous(weight, false, s)});
}

}  // namespace

void register_rms_norm(nb::module_& m) {
  m.def("rms_norm", &rms_norm_op, nb::arg("x"), nb::arg("weight"), nb::arg("eps"),
        "mx.fast.rms_norm(x, weight, eps) for float32 x (..., D) and weight (D,). No vjp of its own "
        "(locomlx/models/cpu_kernels.py gives it mx.fast.rms_norm's).");
}
