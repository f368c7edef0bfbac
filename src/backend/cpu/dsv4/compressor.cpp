#include "backend/cpu/dsv4/compressor.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "core/error.hpp"

namespace megamoe::dsv4 {
namespace {

// Softmax-weighted sum over slots, per channel: keys/gates are [slots] strided views.
float pool_channel(const std::vector<const float*>& keys, const std::vector<const float*>& gates) {
  float mx = -INFINITY;
  for (const float* g : gates) mx = std::max(mx, *g);
  float denom = 0.f, num = 0.f;
  for (size_t s = 0; s < gates.size(); ++s) {
    const float e = std::exp(*gates[s] - mx);  // exp(-inf) = 0 for never-filled overlap slots
    denom += e;
    num += e * *keys[s];
  }
  return num / denom;
}

}  // namespace

bool compressor_push(CompressorState& state, const CompressorWeights& w, const float* k, const float* z,
                     int64_t pos, const RopeTable& rope, float rms_eps) {
  const int64_t m = w.rate, d = w.width, c = w.overlap ? 2 : 1;
  MEGAMOE_CHECK(state.rate == m && state.width == d && state.overlap == w.overlap,
                "compressor state does not match its weights");
  MEGAMOE_CHECK(pos % m == state.buffered && pos / m == state.entry_count(), "compressor: token at position ",
                pos, " does not continue the state (", state.entry_count(), " entries, ", state.buffered,
                " buffered)");
  const float* bias = w.position_bias.data<float>() + (pos % m) * c * d;  // B[pos mod m]
  for (int64_t i = 0; i < c * d; ++i) {
    state.buffer_kv.push_back(k[i]);
    state.buffer_gate.push_back(z[i] + bias[i]);
  }
  ++state.buffered;
  if (state.buffered < m) return false;

  // Window w = pos / m closes: pool per channel q.
  std::vector<float> entry(static_cast<size_t>(d));
  std::vector<const float*> keys, gates;
  for (int64_t q = 0; q < d; ++q) {
    keys.clear();
    gates.clear();
    if (w.overlap) {
      for (int64_t s = 0; s < m; ++s) {  // previous window's Ca halves
        keys.push_back(&state.overlap_kv[s * d + q]);
        gates.push_back(&state.overlap_gate[s * d + q]);
      }
      for (int64_t s = 0; s < m; ++s) {  // this window's Cb halves
        keys.push_back(&state.buffer_kv[s * c * d + d + q]);
        gates.push_back(&state.buffer_gate[s * c * d + d + q]);
      }
    } else {
      for (int64_t s = 0; s < m; ++s) {
        keys.push_back(&state.buffer_kv[s * d + q]);
        gates.push_back(&state.buffer_gate[s * d + q]);
      }
    }
    entry[q] = pool_channel(keys, gates);
  }
  cpu::rms_norm_rows(entry, d, {w.kv_norm.data<float>(), static_cast<size_t>(d)}, rms_eps);
  rope.apply(entry.data(), d, (pos / m) * m);
  state.entries.insert(state.entries.end(), entry.begin(), entry.end());

  if (w.overlap) {  // this window's Ca halves become the next entry's first m slots
    for (int64_t s = 0; s < m; ++s) {
      for (int64_t q = 0; q < d; ++q) {
        state.overlap_kv[s * d + q] = state.buffer_kv[s * c * d + q];
        state.overlap_gate[s * d + q] = state.buffer_gate[s * c * d + q];
      }
    }
  }
  state.buffer_kv.clear();
  state.buffer_gate.clear();
  state.buffered = 0;
  return true;
}

}  // namespace megamoe::dsv4
