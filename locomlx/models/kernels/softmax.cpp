// The attention softmax of a training step, causal mask included, and its gradient, one pass each.
//
// A LoRA training step keeps the unfused attention (its backward reuses the forward's weights), and MLX
// computes its softmax as a mask, a select and four passes over (batch x heads x queries x keys) floats on
// one thread, and the gradient as as many again. Here the forward reads each score row once and writes its
// weights, with the keys a causal mask hides written as zeros without computing them; the backward reads
// the weights and the cotangent once. Rows are split over the kernels' thread pool, exp vectorised by AVX2.

#include <algorithm>
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
using locomlx_kernels::Pool;
using locomlx_kernels::pool;
using locomlx_kernels::prepared_encoder;
#ifdef LOCOMLX_AVX2
using locomlx_kernels::hsum;
#endif
using locomlx_kernels::exp_shifted_sum;
using locomlx_kernels::row_max;

namespace {

struct Rows {
  int64_t count;  // batch x heads x queries
  int queries, keys;
  bool causal;  // the queries are the last `queries` of the `keys` positions; later keys are hidden
  int allowed(int64_t row) const { return causal ? keys - queries + static_cast<int>(row % queries) + 1 : keys; }
};

template <typename Body>
void over_rows(const Rows& rows, Body body) {
  Pool& p = pool();
  const int parts = rows.count * rows.keys >= (1 << 15) ? p.parts() : 1;
  auto task = [&](int part) {
    // Rows dealt round-robin, so every thread gets short and long causal rows alike.
    for (int64_t row = part; row < rows.count; row += parts) body(row);
  };
  if (parts == 1) {
    task(0);
  } else {
    p.run(parts, [&](int part) { task(part); });
  }
}

void forward(const float* scores, float* weights, const Rows& rows) {
  over_rows(rows, [&](int64_t row) {
    const float* x = scores + row * rows.keys;
    float* w = weights + row * rows.keys;
    const int n = rows.allowed(row);
    const float total = exp_shifted_sum(x, w, n, row_max(x, n));
    const float inv = 1.0f / total;
    int j = 0;
#ifdef LOCOMLX_AVX2
    const __m256 iv = _mm256_set1_ps(inv);
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(w + j, _mm256_mul_ps(_mm256_loadu_ps(w + j), iv));
#endif
    for (; j < n; ++j) w[j] *= inv;
    std::fill(w + n, w + rows.keys, 0.0f);
  });
}

// d scores = w * (c - sum(c * w)); zero where the weights are (the hidden keys).
void backward(const float* weights, const float* cot, float* d_scores, const Rows& rows) {
  over_rows(rows, [&](int64_t row) {
    const float* w = weights + row * rows.keys;
    const float* c = cot + row * rows.keys;
    float* d = d_scores + row * rows.keys;
    const int n = rows.allowed(row);
    float dot = 0.0f;
    int j = 0;
#ifdef LOCOMLX_AVX2
    __m256 acc = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(c + j), acc);
    dot = hsum(acc);
#endif
    for (; j < n; ++j) dot += w[j] * c[j];
    j = 0;
#ifdef LOCOMLX_AVX2
    const __m256 db = _mm256_set1_ps(dot);
    for (; j + 8 <= n; j += 8) {
      __m256 wv = _mm256_loadu_ps(w + j);
      _mm256_storeu_ps(d + j, _mm256_mul_ps(wv, _mm256_sub_ps(_mm256_loadu_ps(c + j), db)));
    }
#endif
    for (; j < n; ++j) d[j] = w[j] * (c[j] - dot);
    std::fill(d + n, d + rows.keys, 0.0f);
  });
}

Rows rows_of(const mx::array& a, bool causal) {
  return Rows{static_cast<int64_t>(a.size() / a.shape(-1)), a.shape(-2), a.shape(-1), causal};
}

class SoftmaxGrad : public mx::UnaryPrimitive {
 public:
  SoftmaxGrad(mx::Stream stream, bool causal) : mx::UnaryPrimitive(stream), causal_(causal) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    auto& encoder = prepared_encoder(stream(), inputs, out);
    encoder.dispatch([w = inputs[0].data<float>(), c = inputs[1].data<float>(), d = out.data<float>(),
                      rows = rows_of(out, causal_)]() { backward(w, c, d, rows); });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("this softmax runs on the CPU only.");
  }
  const char* name() const override { return "LocomlxSoftmaxGrad"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return causal_ == static_cast<const SoftmaxGrad&>(other).causal_;
  }

 private:
  bool causal_;
};

class Softmax : public mx::UnaryPrimitive {
 public:
  Softmax(mx::Stream stream, bool causal) : mx::UnaryPrimitive(stream), causal_(causal) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    auto& encoder = prepared_encoder(stream(), inputs, out);
    encoder.dispatch([x = inputs[0].data<float>(), w = out.data<float>(), rows = rows_of(out, causal_)]() {
      forward(x, w, rows);
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("this softmax runs on the CPU only.");
  }

  std::vector<mx::array> vjp(const std::vector<mx::array>&, const std::vector<mx::array>& cotangents,
                             const std::vector<int>&, const std::vector<mx::array>& outputs) override {
    auto s = stream();
    return {mx::array(outputs[0].shape(), mx::float32, std::make_shared<SoftmaxGrad>(s, causal_),
                      {outputs[0], mx::contiguous(cotangents[0], false, s)})};
  }

  const char* name() const override { return "LocomlxSoftmax"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return causal_ == static_cast<const Softmax&>(other).causal_;
  }

 private:
  bool causal_;
};

mx::array softmax(const mx::array& scores, bool causal) {
  if (scores.dtype() != mx::float32 || scores.ndim() < 2 || (causal && scores.shape(-2) > scores.shape(-1))) {
    throw std::invalid_argument("softmax: scores must be float32 (..., L, S), with L <= S when causal.");
  }
  auto s = mx::default_stream(mx::Device::cpu);
  return mx::array(scores.shape(), mx::float32, std::make_shared<Softmax>(s, causal),
                   {mx::contiguous(scores, false, s)});
}

}  // namespace

void register_softmax(nb::module_& m) {
  m.def("softmax", &softmax, nb::arg("scores"), nb::arg("causal") = false,
        "Softmax over the last axis of float32 (..., L, S) scores; `causal` gives the keys after each query's "
        "position (the queries being the last L of the S) weight 0. Its gradient is its vjp.");
}
