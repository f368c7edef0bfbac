// Device interface of DeepSeek-V4 attention (dsv4-architecture.md §5.3-5.5,
// §9): the KV compressor step, the lightning indexer with device top-k, and
// window + compressed attention with sinks. fp32 activations and state.
//
// State pools (allocated once for S slots at load; a sequence owns one slot):
//   window   [S, W, d_h]   ring of rotated, normalised kv rows; the row of
//                          absolute position p lives at p % W.
//   compressor of rate m, width d, c = 2 (overlap) or 1:
//     buf_kv   [S, m, c d]  raw K rows of the open window, row p % m
//     buf_gate [S, m, c d]  gate logits Z + position_bias[p % m] (biased when stored)
//     ov_kv    [S, m, d]    overlap only: the last closed window's Ca key halves
//     ov_gate  [S, m, d]    ... and its biased Ca gate halves; a fresh slot holds
//                           keys 0 and gates -inf (weight 0)
//     entries  [S, max_entries, d]  emitted entries C_w (normed, rotated at w m), row w
// Entry counts are implied by positions: after position p a compressor of rate
// m has emitted floor((p + 1) / m) entries, so a token at p sees that many.
// CPU oracle: compressor_push (src/backend/cpu/dsv4/compressor.cpp) and
// the CPU backend's attention op (src/backend/cpu/cpu_backend.cpp, dsv4/attention.cpp).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/attention/step_meta.hpp"

namespace megamoe::cuda::kernels {

struct CompressorPools {
  int rate = 0, width = 0;        // m, d
  bool overlap = false;           // c = 2
  int max_entries = 0;
  float* buf_kv = nullptr;        // [S, m, c d]
  float* buf_gate = nullptr;      // [S, m, c d]
  float* ov_kv = nullptr;         // [S, m, d] (overlap) or null
  float* ov_gate = nullptr;       // [S, m, d] (overlap) or null
  float* entries = nullptr;       // [S, max_entries, d]
};

// One compressor step over this step's rows: every window that closes at a
// position of this step is pooled (per channel: softmax over the window's
// slots of the biased gates, the weighted sum of keys; overlap windows pool
// 2m slots: the previous window's Ca halves, then this window's Cb halves),
// RMSNorm'ed with `norm` and rotated (tail rope_dim channels) at position w m,
// and written to entries[slot][w]. Then the slot's open-window buffer and
// overlap state are updated so that the next step continues exactly.
// Key/gate rows of positions < pos0 come from the pools, those >= pos0 from
// kv / gate (gate gets position_bias added). Channel layout of a row of c d:
// [Ca (d) | Cb (d)] for overlap compressors.
struct CompressorParams {
  StepMeta step;
  CompressorPools pools;
  const float* kv = nullptr;             // [T, c d] this step's K rows
  const float* gate = nullptr;           // [T, c d] this step's Z rows (unbiased)
  const float* position_bias = nullptr;  // [m, c d]
  const float* norm = nullptr;           // [d] RMSNorm weight of the entries
  float rms_eps = 1e-6f;
  const float* omega = nullptr;          // [rope_dim / 2] RoPE frequencies (the compress table)
  int rope_dim = 0;
  // Windows closing this step (host-built list): window index w of sequence b.
  int windows = 0;
  const int32_t* window_seq = nullptr;   // [windows] b
  const int32_t* window_index = nullptr; // [windows] w (-1: padding, skipped)
};

// Lightning indexer: for each row t (sequence b, position p) with
// n = floor((p + 1) / m) visible indexer entries,
//   I[t, e] = d_I^-1/2 sum_h head_w[t, h] H_I^-1/2 ReLU(q[t, h] . K[e]),  e < n,
// and selected[t] = the min(top_k, n) entries of highest score, ordered by
// score descending (ties: lower entry index first), padded with -1.
struct IndexerParams {
  StepMeta step;
  int heads = 0, dim = 0, rate = 0, top_k = 0, max_entries = 0;
  const float* q = nullptr;        // [T, H_I, d_I] rotated indexer queries
  const float* head_w = nullptr;   // [T, H_I] weights_proj output
  const float* entries = nullptr;  // [S, max_entries, d_I] indexer entries
  int32_t* selected = nullptr;     // [T, top_k] out
  // Optional scratch [T, max_entries] 64-bit keys: with it, scoring is split
  // over blocks of entries (few rows at long context); without, one block per row.
  uint64_t* scored = nullptr;
};

// Whether a step of `rows` rows should score with the split (IndexerParams::scored).
inline bool indexer_split_scoring(int rows) { return rows > 0 && rows <= 64; }

// Attention per (row t, head h) with one softmax over
//   window keys: positions max(0, p - W + 1) .. p (rows of kv for positions
//                >= pos0 of its sequence, the window pool otherwise),
//   compressed keys: CSA: entries[selected[t, i]] for i < top_k with
//                selected >= 0; HCA: entries 0 .. floor((p + 1) / m) - 1;
//                SWA: none,
//   and the sink: logit sinks[h], which takes probability mass but adds no value.
// Values equal keys. logits = scale * q . k. out[t, h] = sum_j softmax_j k_j.
struct AttentionParams {
  StepMeta step;
  int heads = 0, head_dim = 0, window = 0;  // H, d_h, W
  float scale = 1.0f;                       // 1 / sqrt(d_h)
  const float* q = nullptr;        // [T, H, d_h] rotated queries
  const float* kv = nullptr;       // [T, d_h] this step's rotated, normalised kv rows
  const float* window_pool = nullptr;  // [S, W, d_h]
  const float* sinks = nullptr;    // [H]
  // Compressed part (entries == null: sliding-window layer).
  const float* entries = nullptr;  // [S, max_entries, d_h] main compressor entries
  int max_entries = 0, rate = 0;   // m (HCA: visible count)
  const int32_t* selected = nullptr;  // [T, top_k] CSA selection, or null for HCA
  int top_k = 0;
  float* out = nullptr;            // [T, H, d_h]
};

// After attention: writes this step's kv rows of positions >= pos0 + tokens - W
// (the last min(W, tokens) of each sequence) into window_pool[slot][p % W].
struct WindowUpdateParams {
  StepMeta step;
  int head_dim = 0, window = 0;
  const float* kv = nullptr;   // [T, d_h]
  float* window_pool = nullptr;  // [S, W, d_h]
};

void launch_compressor(const CompressorParams& p, cudaStream_t stream);
void launch_indexer(const IndexerParams& p, cudaStream_t stream);
void launch_attention(const AttentionParams& p, cudaStream_t stream);
void launch_window_update(const WindowUpdateParams& p, cudaStream_t stream);

}  // namespace megamoe::cuda::kernels
