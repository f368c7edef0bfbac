// Host tensors: an owning, contiguous, row-major buffer with a dtype and a
// shape. The CPU backend computes on F32 tensors; checkpoints hand out
// TensorView (see safetensors.hpp) which this can copy from.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"

namespace megamoe {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[4, 64]"

class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, Shape shape);  // zero-filled
  static Tensor zeros_f32(Shape shape) { return Tensor(DType::F32, std::move(shape)); }

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  size_t rank() const { return shape_.size(); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }

  void* raw() { return bytes_.data(); }
  const void* raw() const { return bytes_.data(); }

  // Typed access; throws if T does not match the dtype's element size.
  template <typename T>
  T* data() {
    check_element_size(sizeof(T));
    return reinterpret_cast<T*>(bytes_.data());
  }
  template <typename T>
  const T* data() const {
    check_element_size(sizeof(T));
    return reinterpret_cast<const T*>(bytes_.data());
  }

  // Same bytes, new shape with the same element count.
  Tensor reshaped(Shape shape) const;

 private:
  void check_element_size(size_t size) const;

  DType dtype_ = DType::F32;
  Shape shape_;
  std::vector<std::byte> bytes_;
};

}  // namespace megamoe
