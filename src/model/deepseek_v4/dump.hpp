// Optional per-layer activation dumps: the model hands every named
// intermediate (e.g. "layers.3.attn.q", [T, H, d_h]) to this callback, so a
// GPU path can be compared layer by layer. Null = no dumps (no cost).
#pragma once

#include <functional>
#include <span>
#include <string>

#include "core/tensor.hpp"

namespace megamoe::dsv4 {

using DumpFn = std::function<void(const std::string& name, const Shape& shape, std::span<const float> values)>;

inline void dump(const DumpFn* fn, const std::string& name, const Shape& shape, std::span<const float> values) {
  if (fn != nullptr && *fn) (*fn)(name, shape, values);
}

}  // namespace megamoe::dsv4
