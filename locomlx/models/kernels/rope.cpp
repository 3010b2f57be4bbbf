// Rotary position embedding of queries and keys (mx.fast.rope with a base), for prompts and batched decode steps.
//
// On a CPU, MLX computes every element's angle, cosine and sine with scalar calls on one thread: a 512-token
// prompt's queries and keys took 2.3 ms a layer on SmolLM2-135M, 70 ms of a 1.3 s prefill. Here the cosines and
// sines are computed once per position (in float32, as MLX does) and shared by every head and, while the positions
// stay the same, by every layer; the rotation is
// vectorised, and rows are split over the kernels' threads. The input is read with its strides (the queries as
// the projection lays them out, a transposed view); the output is contiguous.

#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
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

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // below this many elements one thread is faster than waking others

struct Layout {
  int64_t batch, heads, length, dim;
  int64_t batch_stride, head_stride, length_stride, dim_stride;  // the input's, in floats
};

// cos and sin of every (offset row, position, frequency): `offsets` has one entry, or one per batch row.
std::vector<float> angles(const std::vector<int32_t>& offsets, int64_t length, int half, float base, float scale) {
  std::vector<float> table(offsets.size() * length * half * 2);
  const float step = std::log(base) / static_cast<float>(half);
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = std::exp(-static_cast<float>(i) * step);
  float* t = table.data();
  for (int32_t offset : offsets) {
    for (int64_t l = 0; l < length; ++l) {
      const float position = static_cast<float>(offset + l) * scale;
      for (int i = 0; i < half; ++i, t += 2) {
        const float theta = position * inv_freq[i];
        t[0] = std::cos(theta);
        t[1] = std::sin(theta);
      }
    }
  }
  return table;
}

// The table of the last call, kept: a forward's queries and keys in every layer share their positions, so one
// table serves its 2 x layers calls (computing it took longer than the rotation itself).
struct Angles {
  std::vector<int32_t> offsets;
  int64_t length;
  int half;
  float base, scale;
  std::vector<float> table;
};

std::shared_ptr<const Angles> cached_angles(const int32_t* offsets, int64_t n_offsets, int64_t length, int half,
                                            float base, float scale) {
  static std::mutex mutex;
  static std::shared_ptr<const Angles> last;
  std::vector<int32_t> wanted(offsets, offsets + n_offsets);
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (last && last->offsets == wanted && last->length == length && last->half == half && last->base == base &&
        last->scale == scale) {
      return last;
    }
  }
  auto table = angles(wanted, length, half, base, scale);
  auto made = std::make_shared<const Angles>(Angles{std::move(wanted), length, half, base, scale, std::move(table)});
  std::lock_guard<std::mutex> lock(mutex);
  last = made;
  return made;
}

// One row of `dim` floats: the first `dims` rotated in pairs (i, i + half), or (2i, 2i + 1) if traditional; the
// rest copied. cs: the row position's (cos, sin) pairs.
void rotate_row(const float* x, float* out, const float* cs, int dims, int64_t dim, bool traditional) {
  const int half = dims / 2;
  if (traditional) {
    for (int i = 0; i < half; ++i) {
      const float a = x[2 * i], b = x[2 * i + 1], c = cs[2 * i], s = cs[2 * i + 1];
      out[2 * i] = a * c - b * s;
      out[2 * i + 1] = a * s + b * c;
    }
  } else {
    int i = 0;
#ifdef LOCOMLX_AVX2
    // (cos, sin) pairs de-interleaved eight at a time.
    const __m256i evens = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    for (; i + 8 <= half; i += 8) {
      __m256 p0 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(cs + 2 * i), evens);      // c0..c3 s0..s3
      __m256 p1 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(cs + 2 * i + 8), evens);  // c4..c7 s4..s7
      __m256 c = _mm256_permute2f128_ps(p0, p1, 0x20);
      __m256 s = _mm256_permute2f128_ps(p0, p1, 0x31);
      __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + half);
      _mm256_storeu_ps(out + i, _mm256_fmsub_ps(a, c, _mm256_mul_ps(b, s)));
      _mm256_storeu_ps(out + i + half, _mm256_fmadd_ps(a, s, _mm256_mul_ps(b, c)));
    }
#endif
    for (; i < half; ++i) {
      const float a = x[i], b = x[i + half], c = cs[2 * i], s = cs[2 * i + 1];
      out[i] = a * c - b * s;
      out[i + half] = a * s + b * c;
    }
  }
  for (int64_t j = dims; j < dim; ++j) out[j] = x[j];
}

void rope(const float* x, float* out, const float* table, int64_t n_offsets, Layout s, int dims, bool traditional) {
  const int64_t rows = s.batch * s.heads * s.length;
  const int half = dims / 2;
  auto task = [&](int64_t lo, int64_t hi) {
    std::vector<float> gathered(s.dim_stride == 1 ? 0 : s.dim);  // a row whose last axis is strided, made dense
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t l = row % s.length, bh = row / s.length;
      const int64_t b = bh / s.heads, h = bh % s.heads;
      const float* cs = table + ((n_offsets == 1 ? 0 : b) * s.length + l) * half * 2;
      const float* in = x + b * s.batch_stride + h * s.head_stride + l * s.length_stride;
      if (s.dim_stride != 1) {
        for (int64_t j = 0; j < s.dim; ++j) gathered[j] = in[j * s.dim_stride];
        in = gathered.data();
      }
      rotate_row(in, out + row * s.dim, cs, dims, s.dim, traditional);
    }
  };
  over_ranges(rows, rows * s.dim >= kParallelMin, task);
}

class RoPE : public mx::UnaryPrimitive {
 public:
  RoPE(mx::Stream stream, int dims, bool traditional, float base, float scale)
      : mx::UnaryPrimitive(stream), dims_(dims), traditional_(traditional), base_(base), scale_(scale) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    const auto& offsets = inputs[1];
    auto& encoder = prepared_encoder(stream(), inputs, out);
    Layout layout{x.shape(0),   x.shape(1),   x.shape(2),   x.shape(3),
                  x.strides(0), x.strides(1), x.strides(2), x.strides(3)};
    encoder.dispatch([xs = x.data<float>(), os = offsets.data<int32_t>(), n_offsets = offsets.size(),
                      o = out.data<float>(), layout, dims = dims_, traditional = traditional_, base = base_,
                      scale = scale_]() {
      auto angles = cached_angles(os, static_cast<int64_t>(n_offsets), layout.length, dims / 2, base, scale);
      rope(xs, o, angles->table.data(), static_cast<int64_t>(n_offsets), layout, dims, traditional);
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("this rope runs on the CPU only; on a GPU use mx.fast.rope.");
  }

  const char* name() const override { return "LocomlxRoPE"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const RoPE&>(other);
    return dims_ == o.dims_ && traditional_ == o.traditional_ && base_ == o.base_ && scale_ == o.scale_;
  }

 private:
  int dims_;
  bool traditional_;
  float base_, scale_;
};

mx::array rope_op(const mx::array& x, int dims, bool traditional, float base, float scale, const mx::array& offset) {
  if (x.dtype() != mx::float32 || x.ndim() != 4) {
    throw std::invalid_argument("rope: x must be a float32 (B, H, L, D) array.");
  }
  if (dims <= 0 || dims % 2 != 0 || dims > x.shape(3)) {
    throw std::invalid_argument("rope: dims must be even, positive and at most the last axis.");
  }
  if (offset.ndim() > 1 || (offset.size() != 1 && offset.size() != static_cast<size_t>(x.shape(0)))) {
    throw std::invalid_argument("rope: offset must be one position, or one per batch row.");
  }
  auto s = mx::default_stream(mx::Device::cpu);
  mx::array offsets = mx::contiguous(mx::astype(mx::reshape(offset, {-1}, s), mx::int32, s), false, s);
  return mx::array(x.shape(), mx::float32, std::make_shared<RoPE>(s, dims, traditional, base, scale),
                   {x, offsets});  // read in place, whatever its strides (a transposed view, a slice)
}

}  // namespace

void register_rope(nb::module_& m) {
  m.def("rope", &rope_op, nb::arg("x"), nb::arg("dims"), nb::arg("traditional"), nb::arg("base"), nb::arg("scale"),
        nb::arg("offset"),
        "mx.fast.rope(x, dims, traditional=, base=, scale=, offset=) for a float32 (B, H, L, D) x; `offset` is an "
        "int32 array of one position or one per batch row. No vjp of its own (locomlx/models/cpu_kernels.py "
        "gives it mx.fast.rope's).");
}
