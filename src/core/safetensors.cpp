// Safetensors reader (mmap) and writer. Layout: 8-byte little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {str: str}}, then the data section; offsets are relative to
// the start of the data section. Every rule of the format is checked because
// checkpoints are untrusted input (design.md "Errors and inputs").
#include "core/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace megamoe {
namespace {

using nlohmann::json;

// The reference implementation's limit; a larger header is corrupt, not big.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr uint64_t kMaxDimension = uint64_t{1} << 48;
constexpr const char* kMetadataKey = "__metadata__";

struct ParsedHeader {
  std::map<std::string, TensorView> tensors;
  std::map<std::string, std::string> metadata;
};

// Parses JSON, rejecting duplicate keys in any object (nlohmann would silently keep the last).
json parse_json_strict(const std::string& text, const std::string& source) {
  std::vector<std::set<std::string>> keys_by_depth;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    const auto d = static_cast<size_t>(depth);
    if (event == json::parse_event_t::object_start) {
      if (keys_by_depth.size() <= d + 1) keys_by_depth.resize(d + 2);
      keys_by_depth[d + 1].clear();
    } else if (event == json::parse_event_t::key) {
      if (keys_by_depth.size() <= d) keys_by_depth.resize(d + 1);
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!keys_by_depth[d].insert(key).second) {
        MEGAMOE_THROW(source, ": header JSON has the key '", key, "' twice in one object");
      }
    }
    return true;
  };
  try {
    return json::parse(text, callback);
  } catch (const json::exception& e) {
    MEGAMOE_THROW(source, ": header is not valid JSON (", e.what(), ")");
  }
}

uint64_t read_offset(const json& value, const std::string& source, const std::string& name) {
  MEGAMOE_CHECK(value.is_number_unsigned(), source, ": tensor '", name,
                "': data_offsets must hold non-negative integers, got ", value.dump());
  return value.get<uint64_t>();
}

TensorView parse_entry(const std::string& name, const json& entry, size_t data_size, const std::string& source) {
  MEGAMOE_CHECK(entry.is_object(), source, ": tensor '", name, "': entry must be an object, got ", entry.dump());
  for (const auto& item : entry.items()) {
    const std::string& key = item.key();
    MEGAMOE_CHECK(key == "dtype" || key == "shape" || key == "data_offsets", source, ": tensor '", name,
                  "': unexpected field '", key, "'");
  }
  MEGAMOE_CHECK(entry.contains("dtype"), source, ": tensor '", name, "': missing dtype");
  MEGAMOE_CHECK(entry.contains("shape"), source, ": tensor '", name, "': missing shape");
  MEGAMOE_CHECK(entry.contains("data_offsets"), source, ": tensor '", name, "': missing data_offsets");

  const json& dtype_json = entry.at("dtype");
  MEGAMOE_CHECK(dtype_json.is_string(), source, ": tensor '", name, "': dtype must be a string, got ",
                dtype_json.dump());
  const std::string dtype_text = dtype_json.get<std::string>();
  const auto dtype = parse_dtype(dtype_text);
  MEGAMOE_CHECK(dtype.has_value(), source, ": tensor '", name, "': unknown dtype '", dtype_text, "'");

  TensorView view;
  view.name = name;
  view.dtype = *dtype;
  const json& shape_json = entry.at("shape");
  MEGAMOE_CHECK(shape_json.is_array(), source, ": tensor '", name, "': shape must be a list, got ", shape_json.dump());
  uint64_t numel = 1;
  for (const json& dim : shape_json) {
    MEGAMOE_CHECK(dim.is_number_unsigned() && dim.get<uint64_t>() <= kMaxDimension, source, ": tensor '", name,
                  "': shape entries must be non-negative integers, got ", shape_json.dump());
    const uint64_t d = dim.get<uint64_t>();
    MEGAMOE_CHECK(!__builtin_mul_overflow(numel, d, &numel), source, ": tensor '", name, "': shape ",
                  shape_json.dump(), " overflows");
    view.shape.push_back(static_cast<int64_t>(d));
  }
  uint64_t expected_bytes = 0;
  MEGAMOE_CHECK(!__builtin_mul_overflow(numel, uint64_t{dtype_size(*dtype)}, &expected_bytes), source, ": tensor '",
                name, "': shape ", shape_json.dump(), " overflows");

  const json& offsets = entry.at("data_offsets");
  MEGAMOE_CHECK(offsets.is_array() && offsets.size() == 2, source, ": tensor '", name,
                "': data_offsets must be [begin, end], got ", offsets.dump());
  const uint64_t begin = read_offset(offsets[0], source, name);
  const uint64_t end = read_offset(offsets[1], source, name);
  MEGAMOE_CHECK(begin <= end, source, ": tensor '", name, "': data_offsets [", begin, ", ", end, "] run backwards");
  MEGAMOE_CHECK(end <= data_size, source, ": tensor '", name, "': data_offsets [", begin, ", ", end,
                "] end past the data section of ", data_size, " bytes (file truncated?)");
  MEGAMOE_CHECK(end - begin == expected_bytes, source, ": tensor '", name, "': shape ", shape_str(view.shape), " x ",
                dtype_text, " needs ", expected_bytes, " bytes but data_offsets give ", end - begin);
  view.data_offset = begin;
  view.nbytes = static_cast<size_t>(expected_bytes);
  return view;
}

ParsedHeader parse_header_full(const std::string& header_json, size_t data_size, const std::string& source) {
  const json header = parse_json_strict(header_json, source);
  MEGAMOE_CHECK(header.is_object(), source, ": header must be a JSON object");
  ParsedHeader parsed;
  for (const auto& item : header.items()) {
    const std::string& name = item.key();
    if (name == kMetadataKey) {
      MEGAMOE_CHECK(item.value().is_object(), source, ": __metadata__ must be an object of strings");
      for (const auto& meta : item.value().items()) {
        MEGAMOE_CHECK(meta.value().is_string(), source, ": __metadata__ entry '", meta.key(),
                      "' must be a string, got ", meta.value().dump());
        parsed.metadata[meta.key()] = meta.value().get<std::string>();
      }
      continue;
    }
    MEGAMOE_CHECK(!name.empty(), source, ": a tensor has an empty name");
    parsed.tensors.emplace(name, parse_entry(name, item.value(), data_size, source));
  }
  // No two tensors may share bytes (zero-byte tensors occupy none).
  std::vector<const TensorView*> by_offset;
  for (const auto& [name, view] : parsed.tensors) {
    if (view.nbytes > 0) by_offset.push_back(&view);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorView* a, const TensorView* b) { return a->data_offset < b->data_offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorView& prev = *by_offset[i - 1];
    const TensorView& cur = *by_offset[i];
    MEGAMOE_CHECK(prev.data_offset + prev.nbytes <= cur.data_offset, source, ": tensors '", prev.name, "' [",
                  prev.data_offset, ", ", prev.data_offset + prev.nbytes, ") and '", cur.name, "' [", cur.data_offset,
                  ", ", cur.data_offset + cur.nbytes, ") overlap");
  }
  return parsed;
}

std::string errno_text() { return std::strerror(errno); }

// Closes a file descriptor on every path out of open().
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::map<std::string, TensorView> SafetensorsFile::parse_header(const std::string& header_json, size_t data_size,
                                                                const std::string& source) {
  return parse_header_full(header_json, data_size, source).tensors;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string source = path.string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MEGAMOE_CHECK(fd >= 0, source, ": cannot open (", errno_text(), ")");
  FdCloser closer{fd};
  struct stat info {};
  MEGAMOE_CHECK(::fstat(fd, &info) == 0, source, ": cannot stat (", errno_text(), ")");
  MEGAMOE_CHECK(S_ISREG(info.st_mode), source, ": not a regular file");
  const auto file_size = static_cast<uint64_t>(info.st_size);
  MEGAMOE_CHECK(file_size >= 8, source, ": file is ", file_size,
                " bytes, shorter than the 8-byte header length (truncated?)");

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  void* mapping = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  MEGAMOE_CHECK(mapping != MAP_FAILED, source, ": cannot mmap (", errno_text(), ")");
  file->mapping_ = mapping;
  file->mapping_size_ = file_size;

  const auto* bytes = static_cast<const unsigned char*>(mapping);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];  // little-endian on any host
  MEGAMOE_CHECK(header_size <= kMaxHeaderBytes, source, ": header length ", header_size,
                " is implausible (limit ", kMaxHeaderBytes, " bytes)");
  MEGAMOE_CHECK(header_size <= file_size - 8, source, ": header length ", header_size, " exceeds the ",
                file_size - 8, " bytes after the length field (truncated or not a safetensors file)");
  MEGAMOE_CHECK(header_size >= 2, source, ": header length ", header_size, " is too short for a JSON object");

  const std::string header_json(reinterpret_cast<const char*>(bytes + 8), header_size);
  const uint64_t data_start = 8 + header_size;
  const size_t data_size = file_size - data_start;
  ParsedHeader parsed = parse_header_full(header_json, data_size, source);
  const auto* data = reinterpret_cast<const std::byte*>(bytes + data_start);
  for (auto& [name, view] : parsed.tensors) {
    view.data = data + view.data_offset;
    view.file = &file->path_;
  }
  file->tensors_ = std::move(parsed.tensors);
  file->metadata_ = std::move(parsed.metadata);
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string target = path.string();
  json header = json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite& tensor : tensors) {
    MEGAMOE_CHECK(!tensor.name.empty() && tensor.name != kMetadataKey, target, ": invalid tensor name '",
                  tensor.name, "'");
    MEGAMOE_CHECK(!header.contains(tensor.name), target, ": tensor '", tensor.name, "' given twice");
    for (int64_t d : tensor.shape) MEGAMOE_CHECK(d >= 0, target, ": tensor '", tensor.name, "' has a negative dim");
    const uint64_t expected = static_cast<uint64_t>(shape_numel(tensor.shape)) * dtype_size(tensor.dtype);
    MEGAMOE_CHECK(tensor.nbytes == expected, target, ": tensor '", tensor.name, "' shape ", shape_str(tensor.shape),
                  " x ", dtype_name(tensor.dtype), " needs ", expected, " bytes, got ", tensor.nbytes);
    MEGAMOE_CHECK(tensor.nbytes == 0 || tensor.data != nullptr, target, ": tensor '", tensor.name, "' has no data");
    header[tensor.name] = {{"dtype", std::string(dtype_name(tensor.dtype))},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.nbytes}}};
    offset += tensor.nbytes;
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const json::exception& e) {
    MEGAMOE_THROW(target, ": cannot encode the header (", e.what(), ")");
  }
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  MEGAMOE_CHECK(out, target, ": cannot create the file");
  unsigned char length[8];
  uint64_t n = header_text.size();
  for (unsigned char& byte : length) {
    byte = static_cast<unsigned char>(n & 0xff);
    n >>= 8;
  }
  out.write(reinterpret_cast<const char*>(length), 8);
  out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
  for (const TensorToWrite& tensor : tensors) {
    if (tensor.nbytes > 0) out.write(static_cast<const char*>(tensor.data), static_cast<std::streamsize>(tensor.nbytes));
  }
  out.close();
  MEGAMOE_CHECK(out, target, ": write failed");
}

}  // namespace megamoe
