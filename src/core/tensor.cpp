#include "core/tensor.hpp"

#include <sstream>

namespace megamoe {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const Shape& shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

Tensor::Tensor(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  for (int64_t d : shape_) MEGAMOE_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape_));
  bytes_.assign(static_cast<size_t>(shape_numel(shape_)) * dtype_size(dtype_), std::byte{0});
}

Tensor Tensor::reshaped(Shape shape) const {
  MEGAMOE_CHECK(shape_numel(shape) == numel(), "cannot reshape ", shape_str(shape_), " to ", shape_str(shape));
  Tensor out = *this;
  out.shape_ = std::move(shape);
  return out;
}

void Tensor::check_element_size(size_t size) const {
  MEGAMOE_CHECK(size == dtype_size(dtype_), "tensor of dtype ", dtype_name(dtype_),
                " accessed with an element type of ", size, " bytes");
}

}  // namespace megamoe
