// The GPT-2 byte-level alphabet: each of the 256 byte values is written as one
// printable code point in tokenizer.json vocabularies ('Ġ' for a space).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace megamoe::text {

// The code point that stands for byte b.
char32_t byte_to_char(std::uint8_t b);

// Byte-level token string -> raw bytes. Returns false (leaving `out` partial)
// when a character is not in the alphabet; Hugging Face's ByteLevel decoder
// then keeps the token's own UTF-8 bytes instead.
bool byte_level_to_bytes(std::string_view token, std::string& out);

// Raw bytes -> byte-level token string.
std::string bytes_to_byte_level(std::string_view bytes);

}  // namespace megamoe::text
