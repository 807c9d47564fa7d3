// The JS face of MuxSession. Its events reach JS as one callback, onEvent(kind, ...), called on
// the JS thread from libuv, never from inside one of the methods below:
//   1 opened        (id)                               the peer opened a stream: attach or refuse it
//   2 streamClosed  (id, why, errno, bytesUp, bytesDown)
//   3 goaway        (code)
//   4 pong          (pingId, rttMs)
//   5 closed        (code, message)                    code '' for a clean end
#include <fcntl.h>
#include <napi.h>
#include <uv.h>

#include <cerrno>
#include <memory>
#include <string>

#include "addon_args.h"
#include "addon_mux.h"
#include "mux_session.h"
#include "syscall_error.h"

namespace splicer {

namespace {

enum EventKind { kOpened = 1, kStreamClosed, kGoAway, kPong, kClosed };

// A dup of `fd` (O_NONBLOCK is shared with it) that the session owns; throws ErrnoError.
int DupFd(Napi::Env env, int fd) {
  int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) throw ErrnoError(env, errno, "dup");
  return dup;
}

std::string HeadArg(Napi::Env env, Napi::Value value) {
  const char* data = nullptr;
  size_t length = 0;
  if (!OptionalBufferArg(env, value, "head", &data, &length)) return {};
  return std::string(data, length);
}

class MuxSessionWrap : public Napi::ObjectWrap<MuxSessionWrap>, public MuxSessionEvents {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "MuxSession",
                       {
                           InstanceMethod<&MuxSessionWrap::Open>("open"),
                           InstanceMethod<&MuxSessionWrap::Attach>("attach"),
                           InstanceMethod<&MuxSessionWrap::Abort>("abort"),
                           InstanceMethod<&MuxSessionWrap::Ping>("ping"),
                           InstanceMethod<&MuxSessionWrap::GoAway>("goAway"),
                           InstanceMethod<&MuxSessionWrap::Destroy>("destroy"),
                           InstanceMethod<&MuxSessionWrap::Counts>("counts"),
                       });
  }

  // new MuxSession(fd, head, {client, maxStreams, maxWindow, maxPipeSize}, onEvent): takes a dup of fd.
  MuxSessionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MuxSessionWrap>(info), context_(info.Env(), "splicer.MuxSession") {
    Napi::Env env = info.Env();
    env_ = env;
    int fd = FdArg(env, info[0], "fd");
    std::string head = HeadArg(env, info[1]);
    Napi::Object options = ObjectArg(env, info[2], "options");
    if (!info[3].IsFunction()) throw Napi::TypeError::New(env, "onEvent must be a function, got " + Describe(info[3]));
    MuxOptions muxOptions;
    muxOptions.client = options.Get("client").ToBoolean().Value();
    muxOptions.maxStreams = static_cast<uint32_t>(OptionalIntegerArg(env, options.Get("maxStreams"), "maxStreams", 1, 1 << 20, 1024));
    muxOptions.maxWindow = static_cast<uint32_t>(OptionalIntegerArg(env, options.Get("maxWindow"), "maxWindow", 256 * 1024, 1 << 30, 4 << 20));
    muxOptions.maxPipeSize = static_cast<size_t>(OptionalIntegerArg(env, options.Get("maxPipeSize"), "maxPipeSize", 4096, 1 << 30, 1 << 20));
    onEvent_ = Napi::Persistent(info[3].As<Napi::Function>());
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no event loop");
    int owned = DupFd(env, fd);
    try {
      session_ = std::make_unique<MuxSession>(loop, owned, std::move(head), muxOptions, this);
    } catch (const SyscallError& err) {
      throw ErrnoError(env, err.Errno(), err.Syscall());
    }
    napi_add_env_cleanup_hook(env, Cleanup, this);
    cleanupHookSet_ = true;
  }

  ~MuxSessionWrap() override {
    if (cleanupHookSet_) napi_remove_env_cleanup_hook(env_, Cleanup, this);
    session_.reset();
  }

  void StreamOpened(uint32_t id) override {
    Napi::HandleScope scope(env_);
    Emit({Num(kOpened), Num(id)});
  }
  void StreamClosed(uint32_t id, StreamEnd why, int error, uint64_t up, uint64_t down) override {
    Napi::HandleScope scope(env_);
    Emit({Num(kStreamClosed), Num(id), Num(static_cast<int>(why)), Num(error), Num(static_cast<double>(up)), Num(static_cast<double>(down))});
  }
  void GoAwayReceived(uint32_t code) override {
    Napi::HandleScope scope(env_);
    Emit({Num(kGoAway), Num(code)});
  }
  void Pong(uint32_t pingId, double rttMs) override {
    Napi::HandleScope scope(env_);
    Emit({Num(kPong), Num(pingId), Num(rttMs)});
  }
  void Closed(const std::string& code, const std::string& message) override {
    Napi::HandleScope scope(env_);
    Emit({Num(kClosed), Napi::String::New(env_, code), Napi::String::New(env_, message)});
    // Nothing follows `closed`: the callback (and what its closure holds) may be collected now.
    onEvent_.Reset();
  }

 private:
  static void Cleanup(void* self) {
    auto* wrap = static_cast<MuxSessionWrap*>(self);
    wrap->cleanupHookSet_ = false;
    wrap->session_.reset();
  }

  Napi::Number Num(double value) { return Napi::Number::New(env_, value); }

  void Emit(const std::initializer_list<napi_value>& args) {
    if (onEvent_.IsEmpty()) return;
    try {
      onEvent_.MakeCallback(Value(), args, context_);
    } catch (const Napi::Error& err) {
      napi_fatal_exception(env_, err.Value());
    }
  }

  // open(fd, head): takes a dup of fd; the stream id, or a string naming why not.
  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(env, info[0], "fd");
    std::string head = HeadArg(env, info[1]);
    if (!session_) return Napi::String::New(env, "ERR_MUX_SESSION_CLOSED");
    const char* why = nullptr;
    uint32_t id = session_->Open(DupFd(env, fd), std::move(head), &why);
    if (id == 0) return Napi::String::New(env, why);
    return Num(id);
  }

  // attach(id, fd, head): takes a dup of fd for a peer-opened stream; false when it is gone.
  Napi::Value Attach(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t id = static_cast<uint32_t>(IntegerArg(env, info[0], "id", 1, 4294967295.0));
    int fd = FdArg(env, info[1], "fd");
    std::string head = HeadArg(env, info[2]);
    if (!session_) return Napi::Boolean::New(env, false);
    return Napi::Boolean::New(env, session_->Attach(id, DupFd(env, fd), std::move(head)));
  }

  // abort(id): RST, and the stream socket reset; also how a peer-opened stream is refused.
  void Abort(const Napi::CallbackInfo& info) {
    uint32_t id = static_cast<uint32_t>(IntegerArg(info.Env(), info[0], "id", 1, 4294967295.0));
    if (session_) session_->Abort(id);
  }

  Napi::Value Ping(const Napi::CallbackInfo& info) { return Num(session_ ? session_->Ping() : 0); }

  void GoAway(const Napi::CallbackInfo& info) {
    if (session_) session_->GoAway();
  }

  // destroy(code?, message?): every stream reset, the connection closed; `closed` follows.
  void Destroy(const Napi::CallbackInfo& info) {
    std::string code = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
    std::string message = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    if (session_) session_->Destroy(code, message);
  }

  Napi::Value Counts(const Napi::CallbackInfo& info) {
    Napi::Object out = Napi::Object::New(env_);
    out.Set("streams", Num(session_ ? static_cast<double>(session_->StreamCount()) : 0));
    out.Set("reads", Num(session_ ? static_cast<double>(session_->Reads()) : 0));
    out.Set("dataFramesIn", Num(session_ ? static_cast<double>(session_->DataFramesIn()) : 0));
    out.Set("dataFramesOut", Num(session_ ? static_cast<double>(session_->DataFramesOut()) : 0));
    out.Set("overflowBytes", Num(session_ ? static_cast<double>(session_->OverflowBytes()) : 0));
    out.Set("largestWindow", Num(session_ ? static_cast<double>(session_->LargestWindow()) : 0));
    return out;
  }

  Napi::Env env_ = nullptr;
  Napi::FunctionReference onEvent_;
  Napi::AsyncContext context_;
  std::unique_ptr<MuxSession> session_;
  bool cleanupHookSet_ = false;
};

}  // namespace

Napi::Function InitMuxSession(Napi::Env env) { return MuxSessionWrap::Init(env); }

}  // namespace splicer
