#include "backend/cpu/ops.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/thread_pool.hpp"

namespace megamoe::cpu {

float dot(const float* a, const float* b, int64_t n) {
  // Four partial sums: lets the compiler vectorise without -ffast-math.
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

float sigmoid(float z) { return 1.f / (1.f + std::exp(-z)); }

void linear(std::span<const float> x, int64_t rows, const Tensor& w, std::span<float> y) {
  MEGAMOE_CHECK(w.rank() == 2 && w.dtype() == DType::F32, "linear: weight must be an F32 matrix, got ",
                shape_str(w.shape()));
  const int64_t out = w.dim(0), in = w.dim(1);
  MEGAMOE_CHECK(static_cast<int64_t>(x.size()) == rows * in, "linear: input has ", x.size(),
                " values, expected ", rows, " x ", in);
  MEGAMOE_CHECK(static_cast<int64_t>(y.size()) == rows * out, "linear: output has ", y.size(),
                " values, expected ", rows, " x ", out);
  const float* wp = w.data<float>();
  const float* xp = x.data();
  float* yp = y.data();
  const size_t total = static_cast<size_t>(rows * out);
  const size_t min_chunk = std::max<size_t>(1, static_cast<size_t>(16384 / std::max<int64_t>(in, 1)));
  auto body = [&](size_t begin, size_t end) {
    for (size_t idx = begin; idx < end; ++idx) {
      const int64_t r = static_cast<int64_t>(idx) / out, o = static_cast<int64_t>(idx) % out;
      yp[idx] = dot(xp + r * in, wp + o * in, in);
    }
  };
  if (total * static_cast<size_t>(in) < 32768) {
    body(0, total);  // too small to be worth waking the pool
  } else {
    ThreadPool::global().parallel_for(total, body, min_chunk);
  }
}

void rms_norm_rows(std::span<float> x, int64_t n, std::span<const float> weight, float eps) {
  MEGAMOE_CHECK(static_cast<int64_t>(weight.size()) == n, "rms_norm: weight has ", weight.size(),
                " values, rows have ", n);
  rms_norm_rows(x, n, eps);
  for (size_t i = 0; i < x.size(); ++i) x[i] *= weight[i % static_cast<size_t>(n)];
}

void rms_norm_rows(std::span<float> x, int64_t n, float eps) {
  MEGAMOE_CHECK(n > 0 && x.size() % static_cast<size_t>(n) == 0, "rms_norm: ", x.size(),
                " values are not rows of ", n);
  for (size_t r = 0; r < x.size() / static_cast<size_t>(n); ++r) {
    float* row = x.data() + r * static_cast<size_t>(n);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(row[i]) * row[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + eps));
    for (int64_t i = 0; i < n; ++i) row[i] *= inv;
  }
}

}  // namespace megamoe::cpu
