// An error that becomes an HTTP error reply: the status and OpenAI's error
// object ({"error": {"message", "type", "param", "code"}}). It is a
// megamoe::Error, so code below the server that throws plain megamoe::Error
// (chat encoding, tokenizer) is turned into a 400 by the handlers instead.
#pragma once

#include <string>
#include <utility>

#include "core/error.hpp"

namespace megamoe::server {

class ApiError : public Error {
 public:
  ApiError(int status, std::string type, std::string message, std::string param, std::string code, const char* file,
           int line)
      : Error(std::move(message), file, line),
        status_(status),
        type_(std::move(type)),
        param_(std::move(param)),
        code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }  // "" = null
  const std::string& code() const { return code_; }    // "" = null

 private:
  int status_;
  std::string type_, param_, code_;
};

}  // namespace megamoe::server

// A 400 invalid_request_error naming the request field `param`.
#define MEGAMOE_BAD_REQUEST(param, ...)                                                                        \
  throw ::megamoe::server::ApiError(400, "invalid_request_error", ::megamoe::str_cat(__VA_ARGS__), (param), "", \
                                    __FILE__, __LINE__)
#define MEGAMOE_API_ERROR(status, type, param, code, ...) \
  throw ::megamoe::server::ApiError((status), (type), ::megamoe::str_cat(__VA_ARGS__), (param), (code), __FILE__, __LINE__)
