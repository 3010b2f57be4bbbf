// SiLU gating, silu(gate) * up, and its gradient, for the MLP of every block on a CPU.
//
// MLX computes these on one thread, and its vector-Jacobian product of the gating takes four passes over
// arrays of (tokens x intermediate) floats; in a LoRA training step on SmolLM2-135M the gating's backward
// took longer than its three linear layers' together (docs/cpu-profile.md). Here the forward is one pass
// and the backward one pass that reads gate, up and the cotangent once and writes both gradients, split
// over the kernels' thread pool, with exp vectorised by AVX2. The forward primitive's vjp is the backward
// primitive, so MLX's autodiff (and a compiled training step) uses both.

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
using locomlx_kernels::exp256;
#endif

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // below this many elements one thread is faster than waking others

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

#ifdef LOCOMLX_AVX2
inline __m256 sigmoid256(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}
#endif

void forward(const float* gate, const float* up, float* out, int64_t n) {
  over_ranges(n, n >= kParallelMin, [=](int64_t lo, int64_t hi) {
    int64_t i = lo;
#ifdef LOCOMLX_AVX2
    for (; i + 8 <= hi; i += 8) {
      __m256 g = _mm256_loadu_ps(gate + i);
      _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(g, sigmoid256(g)), _mm256_loadu_ps(up + i)));
    }
#endif
    for (; i < hi; ++i) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
  }, 8);
}

// d gate = c * up * s * (1 + g * (1 - s)) and d up = c * g * s, where s = sigmoid(g).
void backward(const float* gate, const float* up, const float* cot, float* d_gate, float* d_up, int64_t n) {
  over_ranges(n, n >= kParallelMin, [=](int64_t lo, int64_t hi) {
    int64_t i = lo;
#ifdef LOCOMLX_AVX2
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= hi; i += 8) {
      __m256 g = _mm256_loadu_ps(gate + i);
      __m256 c = _mm256_loadu_ps(cot + i);
      __m256 s = sigmoid256(g);
      __m256 silu = _mm256_mul_ps(g, s);
      __m256 slope = _mm256_mul_ps(s, _mm256_fmadd_ps(g, _mm256_sub_ps(one, s), one));
      _mm256_storeu_ps(d_gate + i, _mm256_mul_ps(_mm256_mul_ps(c, _mm256_loadu_ps(up + i)), slope));
      _mm256_storeu_ps(d_up + i, _mm256_mul_ps(c, silu));
    }
#endif
    for (; i < hi; ++i) {
      float s = sigmoid(gate[i]);
      d_gate[i] = cot[i] * up[i] * s * (1.0f + gate[i] * (1.0f - s));
      d_up[i] = cot[i] * gate[i] * s;
    }
  }, 8);
}

class SwiGLU : public mx::UnaryPrimitive {
 public:
  explicit SwiGLU(mx::Stream stream) : mx::UnaryPrimitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    auto& encoder = prepared_encoder(stream(), inputs, out);
    encoder.dispatch([g = inputs[0].data<float>(), u = inputs[1].data<float>(), o = out.data<float>(),
                      n = static_cast<int64_t>(out.size())]() { forward(g, u, o, n); });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("this SiLU gating runs on the CPU only.");
  }

  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>&) override;

  const char* name() const override { return "LocomlxSwiGLU"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class SwiGLUGrad : public mx::Primitive {
 public:
  explicit SwiGLUGrad(mx::Stream stream) : mx::Primitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    auto& encoder = prepared_encoder(stream(), inputs, outputs);
    encoder.dispatch([g = inputs[0].data<float>(), u = inputs[1].data<float>(), c = inputs[2].data<float>(),
                      dg = outputs[0].data<float>(), du = outputs[1].data<float>(),
                      n = static_cast<int64_t>(outputs[0].size())]() { backward(g, u, c, dg, du, n); });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("this SiLU gating runs on the CPU only.");
  }

  const char* name() const override { return "LocomlxSwiGLUGrad"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

void check(const mx::array& a, const mx::array& b, const char* what) {
  if (a.dtype() != mx::float32 || b.dtype() != mx::float32 || a.shape() != b.shape()) {
    throw std::invalid_argument(std::string("swiglu: ") + what + " must be float32 arrays of one shape.");
  }
}

mx::array swiglu(const mx::array& gate, const mx::array& up) {
  check(gate, up, "gate and up");
  auto s = mx::default_stream(mx::Device::cpu);
  return mx::array(gate.shape(), mx::float32, std::make_shared<SwiGLU>(s),
                   {mx::contiguous(gate, false, s), mx::contiguous(up, false, s)});
}

std::vector<mx::array> swiglu_grad(const mx::array& gate, const mx::array& up, const mx::array& cotangent) {
  check(gate, up, "gate and up");
  check(gate, cotangent, "gate and the cotangent");
  auto s = mx::default_stream(mx::Device::cpu);
  return mx::array::make_arrays({gate.shape(), gate.shape()}, {mx::float32, mx::float32},
                                std::make_shared<SwiGLUGrad>(s),
                                {mx::contiguous(gate, false, s), mx::contiguous(up, false, s),
                                 mx::contiguous(cotangent, false, s)});
}

std::vector<mx::array> SwiGLU::vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                                   const std::vector<int>& argnums, const std::vector<mx::array>&) {
  auto grads = swiglu_grad(primals[0], primals[1], cotangents[0]);
  std::vector<mx::array> wanted;
  for (int arg : argnums) wanted.push_back(grads[arg]);
  return wanted;
}

}  // namespace

void register_swiglu(nb::module_& m) {
  m.def("swiglu", &swiglu, nb::arg("gate"), nb::arg("up"),
        "silu(gate) * up for float32 arrays of one shape, with its gradient (swiglu_grad) as its vjp.");
  m.def("swiglu_grad", &swiglu_grad, nb::arg("gate"), nb::arg("up"), nb::arg("cotangent"),
        "(d gate, d up) of silu(gate) * up for the given cotangent.");
}
