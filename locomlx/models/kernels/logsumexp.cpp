// log(sum(exp(x))) over each row's last axis: how mlx-lm normalises a generation step's logits.
//
// mlx-lm's generators take every step's log-probabilities as logits - logsumexp(logits) over the whole
// vocabulary, and MLX computes logsumexp on one thread with a scalar exp per element: 10 ms of a 16-row step of
// SmolLM2-135M (16 x 49,152 logits), whose forward takes ~118 ms. Here
// each row is one max pass and one AVX2 exp-and-sum pass, rows split over the kernels' thread pool.

#include <cmath>
#include <cstdint>
#include <limits>
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
using locomlx_kernels::exp_shifted_sum;
using locomlx_kernels::over_ranges;
using locomlx_kernels::prepared_encoder;
using locomlx_kernels::row_max;

namespace {

constexpr int64_t kParallelMin = 1 << 16;  // elements below which splitting costs more than it saves

// Whether x[0, n) holds a NaN (which the vectorised max passes over and exp's clamp would turn into a number).
bool has_nan(const float* x, int n) {
  int j = 0;
#ifdef LOCOMLX_AVX2
  __m256 unordered = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  if (_mm256_movemask_ps(unordered)) return true;
#endif
  for (; j < n; ++j) {
    if (std::isnan(x[j])) return true;
  }
  return false;
}

void logsumexp_rows(const float* x, float* out, int64_t rows, int n) {
  over_ranges(rows, rows * n >= kParallelMin, [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch(n);
    for (int64_t row = lo; row < hi; ++row) {
      const float* in = x + row * n;
      const float m = row_max(in, n);
      // As MLX: a row of -inf (every token masked) has no mass, -inf; a +inf gives +inf, a NaN NaN.
      if (has_nan(in, n)) {
        out[row] = std::numeric_limits<float>::quiet_NaN();
      } else {
        out[row] = std::isfinite(m) ? m + std::log(exp_shifted_sum(in, scratch.data(), n, m)) : m;
      }
    }
  });
}

class LogSumExp : public mx::UnaryPrimitive {
 public:
  explicit LogSumExp(mx::Stream stream) : mx::UnaryPrimitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    auto& encoder = prepared_encoder(stream(), inputs, out);
    const int n = x.shape(-1);
    encoder.dispatch([xs = x.data<float>(), o = out.data<float>(), rows = static_cast<int64_t>(out.size()), n]() {
      logsumexp_rows(xs, o, rows, n);
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("this logsumexp runs on the CPU only; on a GPU use mx.logsumexp.");
  }
  const char* name() const override { return "LocomlxLogSumExp"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

mx::array logsumexp(const mx::array& x) {
  if (x.dtype() != mx::float32 || x.ndim() == 0 || x.shape(-1) == 0) {
    throw std::invalid_argument("logsumexp: x must be float32 with a non-empty last axis.");
  }
  auto s = mx::default_stream(mx::Device::cpu);
  auto shape = x.shape();
  shape.pop_back();
  return mx::array(shape, mx::float32, std::make_shared<LogSumExp>(s), {mx::contiguous(x, false, s)});
}

}  // namespace

void register_logsumexp(nb::module_& m) {
  m.def("logsumexp", &logsumexp, nb::arg("x"),
        "log(sum(exp(x))) over the last axis of a float32 array (which is dropped), in float32.");
}
