// Reading an untrusted input whole, with a size limit: every file and stdin
// input of megamoe (config.json, the shard index, tokenizer.json, chat files,
// id lists, text on stdin) goes through here.
//   - files must be regular files: a FIFO, a device or a directory is refused
//     with "<path>: not a regular file (a FIFO)" before anything is read (the
//     file is opened non-blocking, so a FIFO without a writer cannot hang);
//   - the size is checked against the limit before reading (fstat) and again
//     while reading (a file that grows, a stream), so no more than limit + 1
//     bytes are ever held;
//   - the bytes come back exactly, NUL bytes included (JSON parsing rejects
//     them, see json_file.hpp; text keeps them).
#pragma once

#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <string>

namespace megamoe {

// Limits of the inputs megamoe reads (bytes).
inline constexpr std::size_t kMaxConfigBytes = std::size_t{4} << 20;       // config.json
inline constexpr std::size_t kMaxIndexBytes = std::size_t{128} << 20;      // model.safetensors.index.json
inline constexpr std::size_t kMaxTokenizerBytes = std::size_t{128} << 20;  // tokenizer.json
inline constexpr std::size_t kMaxChatFileBytes = std::size_t{64} << 20;    // chat messages (JSON)
inline constexpr std::size_t kMaxIdsFileBytes = std::size_t{64} << 20;     // token id lists

// The whole file at `path`. Throws megamoe::Error "<path>: ..." when it cannot be
// opened, is not a regular file, or holds more than max_bytes (`limit_name`, e.g.
// "--max-bytes", is named in that message when given).
std::string read_input_file(const std::filesystem::path& path, std::size_t max_bytes,
                            const std::string& limit_name = "");

// Everything readable from `stream` (stdin) up to end of file; throws
// "<name>: input exceeds the limit of N bytes" as soon as more than max_bytes arrive.
std::string read_input_stream(std::FILE* stream, const std::string& name, std::size_t max_bytes,
                              const std::string& limit_name = "");

// `path`, or stdin when path is "-" (named "stdin" in errors).
std::string read_input(const std::string& path, std::size_t max_bytes, const std::string& limit_name = "");

// At most `max_chars` of `text` for an error message, with "..." when cut and
// control characters shown as \xNN (one line, never megabytes of input).
std::string quote_for_message(const std::string& text, std::size_t max_chars = 80);

}  // namespace megamoe
