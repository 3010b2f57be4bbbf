// A multi-threaded CPU matrix-vector product on MLX's 4- and 8-bit affine weights, for decoding.
//
// MLX's CPU quantized_matmul runs on one thread with scalar code, so on a CPU locomlx decodes on float32
// weights, which reads four to eight times the bytes per token. This primitive reads the quantized weights
// themselves (MLX's layout: 4-bit or 8-bit values packed into uint32s, low bits first; one scale and bias
// per group), unpacks
// them with AVX2 where the compiler targets it, and splits the output rows across the kernels' threads
// (pool.h: OpenMP's team, awake between the ~200 calls of a decode step, microseconds apart).

#include <algorithm>
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

void register_attention(nb::module_& m);  // attention.cpp
void register_swiglu(nb::module_& m);  // swiglu.cpp
void register_softmax(nb::module_& m);  // softmax.cpp
void register_rope(nb::module_& m);  // rope.cpp
void register_rms_norm(nb::module_& m);  // rmsnorm.cpp
void register_logsumexp(nb::module_& m);  // logsumexp.cpp

namespace {

// ---------------------------------------------------------------- kernel

#ifdef LOCOMLX_AVX2
// sum over 32 weights (16 packed bytes) of q[i] * x[i]
inline __m256 dot32(const uint8_t* packed, const float* x, __m256 acc) {
  __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
  __m128i mask = _mm_set1_epi8(0x0F);
  __m128i lo = _mm_and_si128(bytes, mask);
  __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  __m128i first = _mm_unpacklo_epi8(lo, hi);   // values 0..15 in order
  __m128i second = _mm_unpackhi_epi8(lo, hi);  // values 16..31
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(first)), _mm256_loadu_ps(x), acc);
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(first, 8))),
                        _mm256_loadu_ps(x + 8), acc);
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(second)), _mm256_loadu_ps(x + 16), acc);
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(second, 8))),
                        _mm256_loadu_ps(x + 24), acc);
  return acc;
}

// sum over 32 weights (32 bytes) of q[i] * x[i]
inline __m256 dot32_8bit(const uint8_t* bytes, const float* x, __m256 acc) {
  for (int j = 0; j < 32; j += 8) {
    __m128i eight = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes + j));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eight)), _mm256_loadu_ps(x + j), acc);
  }
  return acc;
}
#endif

// out[m, n] = sum_g scale[n, g] * sum_{i in g} q[n, i] x[m, i] + bias[n, g] * sum_{i in g} x[m, i]
template <int Bits>
void rows(const float* x, const uint8_t* w, const float* scales, const float* biases, const float* xsum,
          float* out, int M, int K, int N, int group, int n0, int n1) {
  const int groups = K / group;
  const int row_bytes = K * Bits / 8;
  for (int n = n0; n < n1; ++n) {
    const uint8_t* wn = w + static_cast<size_t>(n) * row_bytes;
    const float* sn = scales + static_cast<size_t>(n) * groups;
    const float* bn = biases + static_cast<size_t>(n) * groups;
    for (int m = 0; m < M; ++m) {
      const float* xm = x + static_cast<size_t>(m) * K;
      const float* xs = xsum + static_cast<size_t>(m) * groups;
      float total = 0.0f;
#ifdef LOCOMLX_AVX2
      if (group % 32 == 0) {
        __m256 acc = _mm256_setzero_ps();
        for (int g = 0; g < groups; ++g) {
          __m256 part = _mm256_setzero_ps();
          for (int i = g * group; i < (g + 1) * group; i += 32) {
            part = Bits == 4 ? dot32(wn + i / 2, xm + i, part) : dot32_8bit(wn + i, xm + i, part);
          }
          acc = _mm256_fmadd_ps(part, _mm256_set1_ps(sn[g]), acc);
          total += bn[g] * xs[g];
        }
        out[static_cast<size_t>(m) * N + n] = total + hsum(acc);
        continue;
      }
#endif
      for (int g = 0; g < groups; ++g) {
        float part = 0.0f;
        if (Bits == 4) {
          for (int i = g * group; i < (g + 1) * group; i += 2) {
            uint8_t b = wn[i / 2];
            part += static_cast<float>(b & 0x0F) * xm[i] + static_cast<float>(b >> 4) * xm[i + 1];
          }
        } else {
          for (int i = g * group; i < (g + 1) * group; ++i) part += static_cast<float>(wn[i]) * xm[i];
        }
        total += sn[g] * part + bn[g] * xs[g];
      }
      out[static_cast<size_t>(m) * N + n] = total;
    }
  }
}

void qgemv_cpu(const float* x, const uint8_t* w, const float* scales, const float* biases, float* out,
                int M, int K, int N, int group, int bits) {
  const int groups = K / group;
  std::vector<float> xsum(static_cast<size_t>(M) * groups);
  for (int m = 0; m < M; ++m) {
    for (int g = 0; g < groups; ++g) {
      float s = 0.0f;
      for (int i = g * group; i < (g + 1) * group; ++i) s += x[static_cast<size_t>(m) * K + i];
      xsum[static_cast<size_t>(m) * groups + g] = s;
    }
  }
  Pool& p = pool();
  const int parts = (N >= 64 * p.size()) ? p.size() : 1;
  // Chunks of 8 rows keep each part's output writes on cache lines of its own.
  const int chunk = ((N + parts - 1) / parts + 7) / 8 * 8;
  auto task = [&](int part) {
    int n0 = std::min(N, part * chunk), n1 = std::min(N, (part + 1) * chunk);
    if (part >= parts || n0 >= n1) return;
    if (bits == 4) {
      rows<4>(x, w, scales, biases, xsum.data(), out, M, K, N, group, n0, n1);
    } else {
      rows<8>(x, w, scales, biases, xsum.data(), out, M, K, N, group, n0, n1);
    }
  };
  if (parts == 1) {
    task(0);
  } else {
    p.run(parts, task);
  }
}

// ---------------------------------------------------------------- primitive

class QGemv : public mx::UnaryPrimitive {
 public:
  QGemv(mx::Stream stream, int group, int bits) : mx::UnaryPrimitive(stream), group_(group), bits_(bits) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    auto& x = inputs[0];
    auto& w = inputs[1];
    auto& scales = inputs[2];
    auto& biases = inputs[3];
    auto& encoder = prepared_encoder(stream(), inputs, out);
    int K = x.shape(-1);
    int M = static_cast<int>(x.size() / K);
    int N = w.shape(0);
    encoder.dispatch([xp = x.data<float>(), wp = w.data<uint8_t>(), sp = scales.data<float>(),
                      bp = biases.data<float>(), op = out.data<float>(), M, K, N, group = group_, bits = bits_]() {
      qgemv_cpu(xp, wp, sp, bp, op, M, K, N, group, bits);
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("qgemv runs on the CPU only; on a GPU use mx.quantized_matmul.");
  }

  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>&) override {
    std::vector<mx::array> grads;
    for (int arg : argnums) {
      if (arg != 0) throw std::invalid_argument("qgemv: gradients only with respect to the input.");
      // d(x W^T)/dx = cotangent W, with W dequantized by MLX's own kernel.
      grads.push_back(mx::quantized_matmul(cotangents[0], mx::view(primals[1], mx::uint32, stream()),
                                           primals[2], primals[3], false, group_, bits_, "affine", stream()));
    }
    return grads;
  }

  const char* name() const override { return "QGemv"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const QGemv&>(other);
    return group_ == o.group_ && bits_ == o.bits_;
  }

 private:
  int group_;
  int bits_;
};

mx::array qgemv(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases,
                 int group, int bits) {
  if (x.dtype() != mx::float32 || scales.dtype() != mx::float32 || biases.dtype() != mx::float32) {
    throw std::invalid_argument("qgemv: x, scales and biases must be float32.");
  }
  if (bits != 4 && bits != 8) {
    throw std::invalid_argument("qgemv: bits must be 4 or 8.");
  }
  if (w.dtype() != mx::uint8 || w.ndim() != 2 || group <= 0 || group % 2 != 0) {
    throw std::invalid_argument("qgemv: w must be uint8 (N, K * bits / 8) packed weights, group even.");
  }
  int K = x.shape(-1);
  int N = w.shape(0);
  if (static_cast<int64_t>(w.shape(1)) * 8 != static_cast<int64_t>(K) * bits || K % group != 0 || scales.shape(0) != N || scales.shape(1) != K / group ||
      biases.shape() != scales.shape()) {
    throw std::invalid_argument("qgemv: shapes of x, w, scales and biases do not agree.");
  }
  auto s = mx::default_stream(mx::Device::cpu);
  mx::Shape shape = x.shape();
  shape.back() = N;
  return mx::array(shape, mx::float32, std::make_shared<QGemv>(s, group, bits),
                   {mx::contiguous(x, false, s), mx::contiguous(w, false, s), mx::contiguous(scales, false, s),
                    mx::contiguous(biases, false, s)});
}

}  // namespace

NB_MODULE(_kernels, m) {
  m.doc() = "Multi-threaded CPU matrix-vector products on MLX's 4- and 8-bit affine weights (locomlx decoding).";
  m.def("qgemv", &qgemv, nb::arg("x"), nb::arg("w"), nb::arg("scales"), nb::arg("biases"), nb::arg("group"),
        nb::arg("bits") = 4,
        "x @ dequantize(w, scales, biases).T for float32 x of shape (..., K) and `bits`-bit weights in MLX's "
        "packing, viewed as uint8 (N, K * bits / 8).");
  m.def("threads", [] { return pool().size(); }, "Threads the kernel splits its rows across.");
  register_attention(m);
  register_swiglu(m);
  register_softmax(m);
  register_rope(m);
  register_rms_norm(m);
  register_logsumexp(m);
}
