// Element types that appear in checkpoints and tensors, with their safetensors
// names. Packed FP4 (two E2M1 codes per byte) is stored as U8 or I8.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace megamoe {

enum class DType : uint8_t { F32, F16, BF16, F8_E4M3, F8_E8M0, U8, I8, I32, I64, BOOL };

// Size in bytes of one element.
size_t dtype_size(DType dtype);
// The safetensors spelling ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType dtype);
// Parses a safetensors dtype string; nullopt for an unknown one.
std::optional<DType> parse_dtype(std::string_view name);

}  // namespace megamoe
