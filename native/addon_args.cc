#include "addon_args.h"

#include <uv.h>

#include <cmath>
#include <cstdio>
#include <cstring>

namespace splicer {

namespace {

std::string FormatNumber(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  char text[32];
  snprintf(text, sizeof(text), "%.17g", value);
  return text;
}

}  // namespace

Napi::Error ErrnoError(Napi::Env env, int error, const char* syscall) {
  const char* code = uv_err_name(-error);
  Napi::Error err = Napi::Error::New(env, std::string(syscall) + " failed: " + code + " (" + strerror(error) + ")");
  err.Set("code", Napi::String::New(env, code));
  err.Set("errno", Napi::Number::New(env, -error));
  err.Set("syscall", Napi::String::New(env, syscall));
  return err;
}

std::string Describe(Napi::Value value) {
  switch (value.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_number:
    case napi_boolean:
    case napi_bigint: return value.ToString().Utf8Value();
    case napi_string: return "a string";
    case napi_symbol: return "a symbol";
    case napi_function: return "a function";
    default: return value.IsArray() ? "an array" : "an object";
  }
}

// An integer in [min, max] (both within 2^53, so the double is exact).
double IntegerArg(Napi::Env env, Napi::Value value, const std::string& name, double min, double max) {
  if (!value.IsNumber()) throw Napi::TypeError::New(env, name + " must be a number, got " + Describe(value));
  double number = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(number) || std::trunc(number) != number || number < min || number > max) {
    throw Napi::RangeError::New(env, name + " must be an integer from " + FormatNumber(min) + " to " + FormatNumber(max) +
                                         ", got " + FormatNumber(number));
  }
  return number;
}

// As IntegerArg; undefined gives the fallback.
double OptionalIntegerArg(Napi::Env env, Napi::Value value, const std::string& name, double min, double max, double fallback) {
  return value.IsUndefined() ? fallback : IntegerArg(env, value, name, min, max);
}

int FdArg(Napi::Env env, Napi::Value value, const std::string& name) {
  return static_cast<int>(IntegerArg(env, value, name, 0, kMaxFd));
}

uint64_t IdArg(Napi::Env env, Napi::Value value, const std::string& name) {
  return static_cast<uint64_t>(IntegerArg(env, value, name, 1, kMaxSafeInteger));
}

Napi::Object ObjectArg(Napi::Env env, Napi::Value value, const std::string& name) {
  if (!value.IsObject()) throw Napi::TypeError::New(env, name + " must be an object, got " + Describe(value));
  return value.As<Napi::Object>();
}

// A Buffer or another typed array. napi_is_buffer says yes to a DataView too, whose bytes
// napi_get_buffer_info then refuses.
bool IsBytes(Napi::Value value) { return value.IsBuffer() && value.IsTypedArray(); }

// A Buffer (or another typed array), or null/undefined for none.
bool OptionalBufferArg(Napi::Env env, Napi::Value value, const std::string& name, const char** data, size_t* length) {
  *data = nullptr;
  *length = 0;
  if (value.IsUndefined() || value.IsNull()) return false;
  if (!IsBytes(value)) throw Napi::TypeError::New(env, name + " must be a Buffer or null, got " + Describe(value));
  auto buffer = value.As<Napi::Buffer<char>>();
  *data = buffer.Data();
  *length = buffer.Length();
  return true;
}


}  // namespace splicer
