#include "core/npy.hpp"

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "core/error.hpp"

namespace megamoe {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

std::string shape_tuple(const Shape& shape) {
  std::ostringstream out;
  out << '(';
  for (size_t i = 0; i < shape.size(); ++i) out << shape[i] << (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
  out << ')';
  return out.str();
}

// Value of 'key' in the header dict, as raw text up to the next top-level comma/brace.
std::string header_field(const std::string& header, const std::string& key, const std::string& source) {
  const std::string quoted = "'" + key + "'";
  const size_t at = header.find(quoted);
  MEGAMOE_CHECK(at != std::string::npos, source, ": .npy header has no '", key, "' field");
  size_t pos = header.find(':', at + quoted.size());
  MEGAMOE_CHECK(pos != std::string::npos, source, ": malformed .npy header");
  ++pos;
  while (pos < header.size() && header[pos] == ' ') ++pos;
  size_t end = pos;
  if (end < header.size() && header[end] == '(') {
    end = header.find(')', end);
    MEGAMOE_CHECK(end != std::string::npos, source, ": malformed shape in .npy header");
    return header.substr(pos, end - pos + 1);
  }
  while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  return header.substr(pos, end - pos);
}

Shape parse_shape(const std::string& text, const std::string& source) {
  Shape shape;
  std::string inner = text.substr(1, text.size() - 2);
  std::stringstream in(inner);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t first = item.find_first_not_of(' ');
    if (first == std::string::npos) continue;
    try {
      const long long v = std::stoll(item.substr(first));
      MEGAMOE_CHECK(v >= 0, source, ": negative dimension in .npy shape ", text);
      shape.push_back(v);
    } catch (const std::logic_error&) {
      MEGAMOE_THROW(source, ": bad dimension '", item, "' in .npy shape ", text);
    }
  }
  return shape;
}

}  // namespace

void write_npy_f32(const std::filesystem::path& path, const Shape& shape, const float* data) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_tuple(shape) + ", }";
  // Pad so that magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  MEGAMOE_CHECK(out, "cannot open ", path.string(), " for writing");
  out.write(kMagic, 6);
  const char version[2] = {1, 0};
  out.write(version, 2);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xFF), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(shape_numel(shape) * sizeof(float)));
  MEGAMOE_CHECK(out, "failed writing ", path.string());
}

NpyArray read_npy_f32(const std::filesystem::path& path) {
  const std::string source = path.string();
  std::ifstream in(path, std::ios::binary);
  MEGAMOE_CHECK(in, "cannot open ", source);
  char magic[8] = {};
  in.read(magic, 8);
  MEGAMOE_CHECK(in && std::memcmp(magic, kMagic, 6) == 0, source, ": not a .npy file (bad magic)");
  const int major = magic[6];
  MEGAMOE_CHECK(major == 1 || major == 2 || major == 3, source, ": unsupported .npy version ", major);
  size_t header_len = 0;
  unsigned char len_bytes[4] = {};
  in.read(reinterpret_cast<char*>(len_bytes), major == 1 ? 2 : 4);
  header_len = len_bytes[0] | (len_bytes[1] << 8) | (static_cast<size_t>(len_bytes[2]) << 16) |
               (static_cast<size_t>(len_bytes[3]) << 24);
  MEGAMOE_CHECK(in && header_len < (1u << 20), source, ": bad .npy header length");
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  MEGAMOE_CHECK(in, source, ": truncated .npy header");
  std::string descr = header_field(header, "descr", source);
  MEGAMOE_CHECK(header_field(header, "fortran_order", source).find("False") != std::string::npos, source,
                ": Fortran-order .npy arrays are not supported");
  NpyArray array;
  array.shape = parse_shape(header_field(header, "shape", source), source);
  const int64_t n = shape_numel(array.shape);
  array.data.resize(static_cast<size_t>(n));
  if (descr.find("<f4") != std::string::npos) {
    in.read(reinterpret_cast<char*>(array.data.data()), static_cast<std::streamsize>(n * 4));
  } else if (descr.find("<f8") != std::string::npos) {
    std::vector<double> tmp(static_cast<size_t>(n));
    in.read(reinterpret_cast<char*>(tmp.data()), static_cast<std::streamsize>(n * 8));
    for (int64_t i = 0; i < n; ++i) array.data[i] = static_cast<float>(tmp[i]);
  } else {
    MEGAMOE_THROW(source, ": unsupported .npy dtype ", descr, " (expected <f4 or <f8)");
  }
  MEGAMOE_CHECK(in, source, ": .npy data shorter than its shape ", shape_str(array.shape));
  return array;
}

}  // namespace megamoe
