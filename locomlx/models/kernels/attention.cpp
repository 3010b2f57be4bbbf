// Attention in one pass over each query row on a CPU: a prompt's causal attention, and a batch's decode step.
//
// On the CPU, MLX computes a prompt's attention as a score matrix, a mask, a softmax and a second product,
// each a full pass over (heads x queries x keys) floats with MLX's exp at a scalar call per element; in a
// 512-token SmolLM2-135M prefill that took more time than all the layers' matrix products. This primitive
// computes each query row's scores, softmax and weighted sum of values in one pass that stays in cache,
// skips the keys a causal mask hides (half of them), vectorises exp with AVX2, and splits the rows over
// the same thread pool as qgemv. Queries, keys and values are read where they lie: a KV cache hands out a
// view of its preallocated buffer, which a copy per layer and step made cost a 16-row decode step a quarter of
// its time. It has no vjp of its own: locomlx/models/cpu_kernels.py wraps it in a
// custom function whose gradient is that of the unfused attention.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <vector>


#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>

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
using locomlx_kernels::hsum4;
#endif
using locomlx_kernels::exp_shifted_sum;
using locomlx_kernels::row_max;

namespace {


// One query row: out = softmax(scale * q . k_j for j < n, where `allowed` (if given) is true) . v_j, key and
// value j at k + j * k_row and v + j * v_row, with `scores` as scratch; a row with no allowed key is zeros (a
// padding row, which no later step reads).
template <int D>
void attend_row(const float* q, const float* k, int64_t k_row, const float* v, int64_t v_row, float* out, int n,
                const bool* allowed, float scale, float* scores) {
  int lo = 0;
  if (allowed) {
    while (lo < n && !allowed[lo]) ++lo;
    while (n > lo && !allowed[n - 1]) --n;
  }
  if (lo >= n) {
    std::fill(out, out + D, 0.0f);
    return;
  }
  k += lo * k_row;
  v += lo * v_row;
  if (allowed) allowed += lo;
  n -= lo;
#ifdef LOCOMLX_AVX2
  if constexpr (D % 8 == 0) {
    constexpr int C = D / 8;
    __m256 qv[C];
    for (int c = 0; c < C; ++c) qv[c] = _mm256_mul_ps(_mm256_loadu_ps(q + 8 * c), _mm256_set1_ps(scale));
    // Four keys at a time: four independent sums instead of one chain of dependent FMAs per key, added up
    // across lanes together.
    int j = 0;
    for (; j + 4 <= n; j += 4) {
      const float* k0 = k + j * k_row;
      const float* k1 = k0 + k_row;
      const float* k2 = k1 + k_row;
      const float* k3 = k2 + k_row;
      __m256 a0 = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k0));
      __m256 a1 = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k1));
      __m256 a2 = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k2));
      __m256 a3 = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k3));
      for (int c = 1; c < C; ++c) {
        a0 = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(k0 + 8 * c), a0);
        a1 = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(k1 + 8 * c), a1);
        a2 = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(k2 + 8 * c), a2);
        a3 = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(k3 + 8 * c), a3);
      }
      _mm_storeu_ps(scores + j, hsum4(a0, a1, a2, a3));
    }
    for (; j < n; ++j) {
      const float* kj = k + j * k_row;
      __m256 acc = _mm256_mul_ps(qv[0], _mm256_loadu_ps(kj));
      for (int c = 1; c < C; ++c) acc = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(kj + 8 * c), acc);
      scores[j] = hsum(acc);
    }
    if (allowed) {
      for (j = 0; j < n; ++j) scores[j] = allowed[j] ? scores[j] : -INFINITY;
    }
    const float m = row_max(scores, n);
    const float total = exp_shifted_sum(scores, scores, n, m);
    __m256 acc[C];
    for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps();
    for (int j = 0; j < n; ++j) {
      const float* vj = v + j * v_row;
      __m256 p = _mm256_set1_ps(scores[j]);
      for (int c = 0; c < C; ++c) acc[c] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 8 * c), acc[c]);
    }
    __m256 inv = _mm256_set1_ps(1.0f / total);
    for (int c = 0; c < C; ++c) _mm256_storeu_ps(out + 8 * c, _mm256_mul_ps(acc[c], inv));
    return;
  }
#endif
  float m = -INFINITY;
  for (int j = 0; j < n; ++j) {
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s += q[d] * k[j * k_row + d];
    scores[j] = allowed && !allowed[j] ? -INFINITY : s * scale;
    m = std::max(m, scores[j]);
  }
  const float total = exp_shifted_sum(scores, scores, n, m);
  for (int d = 0; d < D; ++d) out[d] = 0.0f;
  for (int j = 0; j < n; ++j) {
    for (int d = 0; d < D; ++d) out[d] += scores[j] * v[j * v_row + d];
  }
  for (int d = 0; d < D; ++d) out[d] /= total;
}

#ifdef LOCOMLX_AVX2
// Two consecutive causal query rows of one head: q0 attends to keys [0, n), q1 (the next position) to [0, n].
// Each key and value loaded serves both rows, which halves what a prompt's attention reads from the L2 cache,
// where a head's keys and values (256 KB at 512 positions of 64 floats) live.
template <int D>
void attend_pair(const float* q0, const float* q1, const float* k, int64_t k_row, const float* v, int64_t v_row,
                 float* out0, float* out1, int n, float scale, float* scores0, float* scores1) {
  static_assert(D % 32 == 0, "the output loop below takes four vectors of 8 floats at a time");
  constexpr int C = D / 8;
  alignas(32) float qs0[D], qs1[D];
  for (int d = 0; d < D; ++d) {
    qs0[d] = q0[d] * scale;
    qs1[d] = q1[d] * scale;
  }
  const auto dot = [](const float* a, const float* b) {
    __m256 acc = _mm256_mul_ps(_mm256_load_ps(a), _mm256_loadu_ps(b));
    for (int c = 1; c < C; ++c) acc = _mm256_fmadd_ps(_mm256_load_ps(a + 8 * c), _mm256_loadu_ps(b + 8 * c), acc);
    return hsum(acc);
  };
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const float* kj = k + j * k_row;
    __m256 a[2][4];
    for (int r = 0; r < 4; ++r) {
      const __m256 kv = _mm256_loadu_ps(kj + r * k_row);
      a[0][r] = _mm256_mul_ps(_mm256_load_ps(qs0), kv);
      a[1][r] = _mm256_mul_ps(_mm256_load_ps(qs1), kv);
    }
    for (int c = 1; c < C; ++c) {
      const __m256 x0 = _mm256_load_ps(qs0 + 8 * c), x1 = _mm256_load_ps(qs1 + 8 * c);
      for (int r = 0; r < 4; ++r) {
        const __m256 kv = _mm256_loadu_ps(kj + r * k_row + 8 * c);
        a[0][r] = _mm256_fmadd_ps(x0, kv, a[0][r]);
        a[1][r] = _mm256_fmadd_ps(x1, kv, a[1][r]);
      }
    }
    _mm_storeu_ps(scores0 + j, hsum4(a[0][0], a[0][1], a[0][2], a[0][3]));
    _mm_storeu_ps(scores1 + j, hsum4(a[1][0], a[1][1], a[1][2], a[1][3]));
  }
  for (; j < n; ++j) {
    scores0[j] = dot(qs0, k + j * k_row);
    scores1[j] = dot(qs1, k + j * k_row);
  }
  scores1[n] = dot(qs1, k + n * k_row);
  const float inv0 = 1.0f / exp_shifted_sum(scores0, scores0, n, row_max(scores0, n));
  const float inv1 = 1.0f / exp_shifted_sum(scores1, scores1, n + 1, row_max(scores1, n + 1));
  // Four vectors of the output at a time for both rows: eight sums held in registers across the keys.
  for (int c0 = 0; c0 < C; c0 += 4) {
    __m256 acc0[4], acc1[4];
    for (int c = 0; c < 4; ++c) acc0[c] = acc1[c] = _mm256_setzero_ps();
    for (j = 0; j < n; ++j) {
      const float* vj = v + j * v_row + 8 * c0;
      const __m256 p0 = _mm256_set1_ps(scores0[j]), p1 = _mm256_set1_ps(scores1[j]);
      for (int c = 0; c < 4; ++c) {
        const __m256 x = _mm256_loadu_ps(vj + 8 * c);
        acc0[c] = _mm256_fmadd_ps(p0, x, acc0[c]);
        acc1[c] = _mm256_fmadd_ps(p1, x, acc1[c]);
      }
    }
    const float* vn = v + n * v_row + 8 * c0;
    const __m256 pn = _mm256_set1_ps(scores1[n]);
    for (int c = 0; c < 4; ++c) {
      acc1[c] = _mm256_fmadd_ps(pn, _mm256_loadu_ps(vn + 8 * c), acc1[c]);
      _mm256_storeu_ps(out0 + 8 * (c0 + c), _mm256_mul_ps(acc0[c], _mm256_set1_ps(inv0)));
      _mm256_storeu_ps(out1 + 8 * (c0 + c), _mm256_mul_ps(acc1[c], _mm256_set1_ps(inv1)));
    }
  }
}
#endif

struct Shape {
  int batch, heads, kv_heads, queries, keys;
};

// Where a (B, H, L, D) tensor's rows are, in floats: its strides over B, H and L (a view's, such as the keys of a
// KV cache's preallocated buffer or the queries' transposed projection). Its last axis is dense.
struct Rows {
  const float* data;
  int64_t batch, head, row;
  const float* at(int64_t b, int64_t h) const { return data + b * batch + h * head; }
};

// An array's rows as the kernel reads them: in place when its last axis is dense (any view of a row-major
// array), else gathered into `dense` (row-major).
Rows rows_of(const mx::array& x, std::vector<float>& dense) {
  const int64_t d = x.shape(3);
  if (x.strides(3) == 1 || d == 1) return {x.data<float>(), x.strides(0), x.strides(1), x.strides(2)};
  const int64_t n1 = x.shape(1), n2 = x.shape(2);
  dense.resize(static_cast<size_t>(x.shape(0)) * n1 * n2 * d);
  const float* src = x.data<float>();
  for (int64_t i0 = 0; i0 < x.shape(0); ++i0)
    for (int64_t i1 = 0; i1 < n1; ++i1)
      for (int64_t i2 = 0; i2 < n2; ++i2)
        for (int64_t i3 = 0; i3 < d; ++i3)
          dense[((i0 * n1 + i1) * n2 + i2) * d + i3] =
              src[i0 * x.strides(0) + i1 * x.strides(1) + i2 * x.strides(2) + i3 * x.strides(3)];
  return {dense.data(), n1 * n2 * d, n2 * d, d};
}

// `mask`, when given, is boolean (mask_batch, 1, queries, keys) with mask_batch 1 or the batch.
template <int D>
void attend(Rows q, Rows k, Rows v, const bool* mask, int mask_batch, float* out, Shape s, float scale, bool causal) {
  const int group = s.heads / s.kv_heads;
  const int offset = s.keys - s.queries;  // the queries are the last `queries` positions of the keys
  const int64_t rows = static_cast<int64_t>(s.batch) * s.heads * s.queries;
  constexpr int kBlock = 8;  // query rows per unit of work: consecutive rows share their keys in cache
  const int64_t blocks = (rows + kBlock - 1) / kBlock;
  Pool& p = pool();
  const int parts = rows * s.keys >= (1 << 16) ? p.parts() : 1;
  auto task = [&](int part) {
    if (part >= parts) return;
    std::vector<float> scores(s.keys), pair_scores(s.keys + 1);
    // Blocks are dealt round-robin, so each part gets short and long causal rows alike.
    for (int64_t block = part; block < blocks; block += parts) {
      const int64_t end = std::min(rows, (block + 1) * kBlock);
      for (int64_t row = block * kBlock; row < end; ++row) {
        const int i = static_cast<int>(row % s.queries);
        const int64_t bh = row / s.queries;
        const int64_t b = bh / s.heads, h = bh % s.heads;
        const int64_t kv = h / group;
        const int n = causal ? offset + i + 1 : s.keys;
#ifdef LOCOMLX_AVX2
        if (causal && !mask && row + 1 < end && i + 1 < s.queries) {  // the next row: same head, one more key
          attend_pair<D>(q.at(b, h) + i * q.row, q.at(b, h) + (i + 1) * q.row, k.at(b, kv), k.row, v.at(b, kv),
                         v.row, out + row * D, out + (row + 1) * D, n, scale, scores.data(), pair_scores.data());
          ++row;
          continue;
        }
#endif
        const bool* allowed =
            mask ? mask + ((mask_batch == 1 ? 0 : b) * s.queries + i) * static_cast<int64_t>(s.keys) : nullptr;
        attend_row<D>(q.at(b, h) + i * q.row, k.at(b, kv), k.row, v.at(b, kv), v.row, out + row * D, n, allowed,
                      scale, scores.data());
      }
    }
  };
  if (parts == 1) {
    task(0);
  } else {
    p.run(parts, task);
  }
}

class Attention : public mx::UnaryPrimitive {
 public:
  Attention(mx::Stream stream, float scale, bool causal) : mx::UnaryPrimitive(stream), scale_(scale), causal_(causal) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    auto& q = inputs[0];
    auto& k = inputs[1];
    auto& v = inputs[2];
    auto& encoder = prepared_encoder(stream(), inputs, out);
    Shape shape{q.shape(0), q.shape(1), k.shape(1), q.shape(2), k.shape(2)};
    const bool* mask = inputs.size() == 4 ? inputs[3].data<bool>() : nullptr;
    int mask_batch = inputs.size() == 4 ? inputs[3].shape(0) : 1;
    encoder.dispatch([q, k, v, mask, mask_batch, op = out.data<float>(), shape, dim = q.shape(3), scale = scale_,
                      causal = causal_]() {
      std::vector<float> dense_q, dense_k, dense_v;
      Rows qr = rows_of(q, dense_q), kr = rows_of(k, dense_k), vr = rows_of(v, dense_v);
      switch (dim) {
        case 64: attend<64>(qr, kr, vr, mask, mask_batch, op, shape, scale, causal); break;
        case 128: attend<128>(qr, kr, vr, mask, mask_batch, op, shape, scale, causal); break;
        default: attend<256>(qr, kr, vr, mask, mask_batch, op, shape, scale, causal); break;
      }
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("this attention runs on the CPU only; on a GPU use mx.fast.scaled_dot_product_attention.");
  }

  const char* name() const override { return "LocomlxAttention"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const Attention&>(other);
    return scale_ == o.scale_ && causal_ == o.causal_;
  }

 private:
  float scale_;
  bool causal_;
};

mx::array attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale, bool causal,
                    std::optional<mx::array> mask) {
  if (q.dtype() != mx::float32 || k.dtype() != mx::float32 || v.dtype() != mx::float32) {
    throw std::invalid_argument("attention: queries, keys and values must be float32.");
  }
  if (q.ndim() != 4 || k.ndim() != 4 || v.shape() != k.shape() || q.shape(0) != k.shape(0) ||
      q.shape(3) != k.shape(3) || k.shape(1) == 0 || q.shape(1) % k.shape(1) != 0 || q.shape(2) > k.shape(2)) {
    throw std::invalid_argument("attention: queries (B, H, L, D) and keys, values (B, H_kv, S, D) with H a "
                                "multiple of H_kv and L <= S.");
  }
  int dim = q.shape(3);
  if (dim != 64 && dim != 128 && dim != 256) {
    throw std::invalid_argument("attention: head dimension must be 64, 128 or 256.");
  }
  auto s = mx::default_stream(mx::Device::cpu);
  // Read in place, whatever their strides (a cache's buffer, a transposed view).
  std::vector<mx::array> inputs{q, k, v};
  if (mask) {
    const auto& m = *mask;
    if (m.dtype() != mx::bool_ || m.ndim() != 4 || (m.shape(0) != 1 && m.shape(0) != q.shape(0)) ||
        m.shape(1) != 1 || m.shape(2) != q.shape(2) || m.shape(3) != k.shape(2)) {
      throw std::invalid_argument("attention: the mask must be boolean (B or 1, 1, L, S).");
    }
    inputs.push_back(mx::contiguous(m, false, s));
  }
  return mx::array(q.shape(), mx::float32, std::make_shared<Attention>(s, scale, causal), std::move(inputs));
}

}  // namespace

void register_attention(nb::module_& m) {
  m.def("attention", &attention, nb::arg("queries"), nb::arg("keys"), nb::arg("values"), nb::arg("scale"),
        nb::arg("causal") = true, nb::arg("mask") = nb::none(),
        "softmax(scale * queries @ keys.T, masked) @ values for float32 (B, H, L, D) queries and (B, H_kv, S, D) "
        "keys and values (grouped-query heads; the queries are the last L of the S positions). `causal` hides "
        "later keys; `mask`, boolean (B or 1, 1, L, S), hides the keys where it is false. A row with no key "
        "left is zeros.");
}
