// Argument checks and errors shared by the addon's classes. The TS layer validates first; these
// make sure that whatever reaches the addon directly (another caller, a bug) is a TypeError or
// RangeError naming the argument, never a silent cast: a double outside its integer type's
// range is undefined behaviour.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace splicer {

constexpr double kMaxSafeInteger = 9007199254740991.0;  // 2^53 - 1: ids, as JS numbers
constexpr double kMaxFd = 2147483647.0;
constexpr double kMaxTimerMs = 2147483647.0;              // 2^31 - 1, as setTimeout's limit

// "epoll_create1 failed: EMFILE (Too many open files)", with code, errno and syscall as on
// Node's own system errors.
Napi::Error ErrnoError(Napi::Env env, int error, const char* syscall);
std::string Describe(Napi::Value value);
// An integer in [min, max] (both within 2^53, so the double is exact).
double IntegerArg(Napi::Env env, Napi::Value value, const std::string& name, double min, double max);
// As IntegerArg; undefined gives the fallback.
double OptionalIntegerArg(Napi::Env env, Napi::Value value, const std::string& name, double min, double max, double fallback);
int FdArg(Napi::Env env, Napi::Value value, const std::string& name);
uint64_t IdArg(Napi::Env env, Napi::Value value, const std::string& name);
Napi::Object ObjectArg(Napi::Env env, Napi::Value value, const std::string& name);
// A Buffer or another typed array. napi_is_buffer says yes to a DataView too, whose bytes
// napi_get_buffer_info then refuses.
bool IsBytes(Napi::Value value);
// A Buffer (or another typed array), or null/undefined for none.
bool OptionalBufferArg(Napi::Env env, Napi::Value value, const std::string& name, const char** data, size_t* length);

}  // namespace splicer
