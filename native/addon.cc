// The JS face of the engine: the Engine class and the checks on every argument it takes.
// Only a ThreadSafeFunction crosses from the loop and writer threads into JS; what it carries,
// and how that becomes JS values, is addon_delivery's.
#include <napi.h>
#include <uv.h>

#include <sys/socket.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "addon_acceptor.h"
#include "addon_args.h"
#include "addon_delivery.h"
#include "addon_mux.h"
#include "engine.h"
#include "listen_socket.h"
#include "malloc_tuning.h"
#include "notify_socket.h"
#include "syscall_error.h"

namespace splicer {

namespace {

Napi::Error ClosedError(Napi::Env env) {
  Napi::Error err = Napi::Error::New(env, "splice engine is closed");
  err.Set("code", Napi::String::New(env, "ERR_SPLICE_CLOSED"));
  return err;
}

using CompletionTsfn = Napi::TypedThreadSafeFunction<void, Batch, CallJs>;

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {
                           InstanceMethod<&EngineWrap::Add>("add"),
                           InstanceMethod<&EngineWrap::Abort>("abort"),
                           InstanceMethod<&EngineWrap::Release>("release"),
                           InstanceMethod<&EngineWrap::OpenRecorder>("openRecorder"),
                           InstanceMethod<&EngineWrap::RecordWrite>("recordWrite"),
                           InstanceMethod<&EngineWrap::CloseRecorder>("closeRecorder"),
                           InstanceMethod<&EngineWrap::Stats>("stats"),
                           InstanceMethod<&EngineWrap::Close>("close"),
                           InstanceMethod<&EngineWrap::Ref>("ref"),
                           InstanceMethod<&EngineWrap::Unref>("unref"),
                       });
  }

  EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    Napi::Env env = info.Env();
    Napi::Object options = ObjectArg(env, info[0], "options");
    if (!info[1].IsFunction()) throw Napi::TypeError::New(env, "onDone must be a function, got " + Describe(info[1]));
    // The same bounds as SpliceEngine's: a thread count of 2^32 - 1 (what -1 casts to) would
    // start threads until the process runs out of them.
    EngineOptions engineOptions;
    // 0: the loop runs on this (the JS) thread, driven by libuv.
    engineOptions.threads = static_cast<size_t>(OptionalIntegerArg(env, options.Get("threads"), "threads", 0, 64, 1));
    uv_loop_t* jsLoop = nullptr;
    if (engineOptions.threads == 0 && napi_get_uv_event_loop(env, &jsLoop) != napi_ok) {
      throw Napi::Error::New(env, "no event loop for an engine on the JS thread");
    }
    engineOptions.maxPipes = static_cast<size_t>(OptionalIntegerArg(env, options.Get("maxPipes"), "maxPipes", 1, 1 << 20, 256));
    engineOptions.maxPipeSize =
        static_cast<size_t>(OptionalIntegerArg(env, options.Get("maxPipeSize"), "maxPipeSize", 1, 1 << 30, 1 << 20));
    engineOptions.recordBufferBytes = static_cast<size_t>(
        OptionalIntegerArg(env, options.Get("recordBufferBytes"), "recordBufferBytes", 1, 1099511627776.0, 64 << 20));

    tsfn_ = CompletionTsfn::New(env, info[1].As<Napi::Function>(), "splicer.completions", 0, 1);
    // Idle engines must not keep the process alive; Add() refs while pairs are out.
    tsfn_.Unref(env);
    CompletionTsfn tsfn = tsfn_;
    auto send = [tsfn](Batch* heap) mutable {
      if (tsfn.NonBlockingCall(heap) != napi_ok) delete heap;  // napi_closing at teardown
    };
    try {
      engine_ = std::make_unique<Engine>(
          engineOptions,
          [send](std::vector<Completion>&& completions) mutable {
            send(new Batch{std::move(completions), {}});
          },
          [send](std::vector<RecorderEvent>&& events) mutable {
            send(new Batch{{}, std::move(events)});
          },
          jsLoop);
    } catch (const SyscallError& err) {
      // The engine has joined what it started and closed what it opened; the TSFN is ours.
      ReleaseTsfn();
      throw ErrnoError(env, err.Errno(), err.Syscall());
    } catch (const std::bad_alloc&) {
      ReleaseTsfn();
      throw Napi::Error::New(env, "out of memory starting the splice engine");
    }
    napi_add_env_cleanup_hook(env, &EngineWrap::Teardown, this);
    cleanupHookSet_ = true;
  }

  ~EngineWrap() override {
    if (cleanupHookSet_) napi_remove_env_cleanup_hook(Env(), &EngineWrap::Teardown, this);
    Shutdown();
  }

 private:
  // Process exit or worker teardown: stop threads, close every fd; JS is gone.
  static void Teardown(void* data) {
    EngineWrap* self = static_cast<EngineWrap*>(data);
    self->cleanupHookSet_ = false;
    self->Shutdown();
  }

  // Joins the loop threads, then frees them: their epoll, eventfd and pooled pipe fds close here.
  void Shutdown() {
    if (engine_) {
      engine_->Close();
      engine_.reset();
    }
    ReleaseTsfn();
  }

  void ReleaseTsfn() {
    if (!released_) {
      released_ = true;
      tsfn_.Release();
    }
  }

  Napi::Value Add(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!engine_ || engine_->Closed()) throw ClosedError(env);
    int fdA = FdArg(env, info[0], "fdA");
    int fdB = FdArg(env, info[1], "fdB");
    const char* headA;
    size_t headALength;
    const char* headB;
    size_t headBLength;
    OptionalBufferArg(env, info[2], "headAtoB", &headA, &headALength);
    OptionalBufferArg(env, info[3], "headBtoA", &headB, &headBLength);
    // 0: no timeout. Bounded so that a deadline (now + timeout, in ms) cannot overflow.
    uint64_t idle = static_cast<uint64_t>(OptionalIntegerArg(env, info[4], "idleTimeout", 0, kMaxTimerMs, 0));
    std::unique_ptr<RecordSpec> record;
    if (info.Length() > 5 && !info[5].IsUndefined() && !info[5].IsNull()) {
      record = ParseRecordSpec(env, ObjectArg(env, info[5], "record"));
    }
    // The handshake path hands over fds it made itself (non-blocking, close-on-exec): no dup.
    bool adopt = info.Length() > 6 && info[6].ToBoolean().Value();
    int error = 0;
    uint64_t id = engine_->Add(fdA, fdB, headA, headALength, headB, headBLength, idle, record.get(), &error, adopt);
    if (id == 0) throw ErrnoError(env, error, "dup");
    return Napi::Number::New(env, static_cast<double>(id));
  }

  // { recorder, legs: [{ ipv4, client: { ip, port, next, acked, ipId, finished }, server }] }.
  // Shapes are checked in TS; this checks what would corrupt memory or the file. The recorder
  // is acquired last, so a throw leaves nothing to give back.
  std::unique_ptr<RecordSpec> ParseRecordSpec(Napi::Env env, Napi::Object spec) {
    auto record = std::make_unique<RecordSpec>();
    Napi::Value legsValue = spec.Get("legs");
    if (!legsValue.IsArray()) throw Napi::TypeError::New(env, "record.legs must be an array, got " + Describe(legsValue));
    Napi::Array legs = legsValue.As<Napi::Array>();
    if (legs.Length() < 1 || legs.Length() > 2) throw Napi::RangeError::New(env, "a recording has 1 or 2 legs");
    for (uint32_t i = 0; i < legs.Length(); i++) {
      std::string legName = "record.legs[" + std::to_string(i) + "]";
      Napi::Object leg = ObjectArg(env, legs.Get(i), legName);
      Conversation c;
      c.ipv4 = leg.Get("ipv4").ToBoolean().Value();
      static const char* const kSides[2] = {"client", "server"};
      for (int side = 0; side < 2; side++) {
        std::string name = legName + "." + kSides[side];
        Napi::Object half = ObjectArg(env, leg.Get(kSides[side]), name);
        Napi::Value ip = half.Get("ip");
        size_t want = c.ipv4 ? 4 : 16;
        if (!IsBytes(ip) || ip.As<Napi::Buffer<uint8_t>>().Length() != want) {
          throw Napi::TypeError::New(env, "leg address does not match its IP family");
        }
        std::memcpy(c.half[side].ip, ip.As<Napi::Buffer<uint8_t>>().Data(), want);
        c.half[side].port = static_cast<uint16_t>(IntegerArg(env, half.Get("port"), name + ".port", 0, 65535));
        c.half[side].next = static_cast<uint32_t>(IntegerArg(env, half.Get("next"), name + ".next", 0, 4294967295.0));
        c.half[side].acked = static_cast<uint32_t>(IntegerArg(env, half.Get("acked"), name + ".acked", 0, 4294967295.0));
        c.half[side].ipId = static_cast<uint16_t>(IntegerArg(env, half.Get("ipId"), name + ".ipId", 0, 65535));
        c.half[side].finished = half.Get("finished").ToBoolean().Value();
      }
      record->legs.push_back(c);
    }
    uint64_t recorder = IdArg(env, spec.Get("recorder"), "record.recorder");
    record->recorder = engine_->Recorders().Acquire(recorder);
    if (!record->recorder) {
      Napi::Error err = Napi::Error::New(env, "the recorder is closed");
      err.Set("code", Napi::String::New(env, "ERR_RECORDER_CLOSED"));
      throw err;
    }
    return record;
  }

  // Ids are checked even on a closed engine: a bad argument is the caller's bug either way.
  void Abort(const Napi::CallbackInfo& info) {
    uint64_t id = IdArg(info.Env(), info[0], "id");
    if (!engine_ || engine_->Closed()) return;
    engine_->Abort(id);
  }

  void Release(const Napi::CallbackInfo& info) {
    uint64_t id = IdArg(info.Env(), info[0], "id");
    if (!engine_ || engine_->Closed()) return;
    engine_->Release(id);
  }

  // Takes a dup of the fd; the caller closes its own.
  Napi::Value OpenRecorder(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(env, info[0], "fd");
    if (!engine_ || engine_->Closed()) throw ClosedError(env);
    int error = 0;
    const char* syscall = "dup";
    uint64_t id = engine_->Recorders().Open(fd, &error, &syscall);
    if (id == 0) throw ErrnoError(env, error, syscall);
    return Napi::Number::New(env, static_cast<double>(id));
  }

  Napi::Value RecordWrite(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t id = IdArg(env, info[0], "recorder");
    if (!IsBytes(info[1])) throw Napi::TypeError::New(env, "data must be a Buffer, got " + Describe(info[1]));
    if (!engine_ || engine_->Closed()) return Napi::Boolean::New(env, false);
    auto data = info[1].As<Napi::Buffer<char>>();
    return Napi::Boolean::New(env, engine_->Recorders().Write(id, data.Data(), data.Length()));
  }

  void CloseRecorder(const Napi::CallbackInfo& info) {
    uint64_t id = IdArg(info.Env(), info[0], "recorder");
    if (!engine_ || engine_->Closed()) return;
    engine_->Recorders().Close(id);
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EngineStats stats = engine_ ? engine_->Stats() : EngineStats{};
    Napi::Object out = Napi::Object::New(env);
    out.Set("pairs", Napi::Number::New(env, static_cast<double>(stats.pairs)));
    out.Set("pipesInUse", Napi::Number::New(env, static_cast<double>(stats.pipesInUse)));
    out.Set("pipesIdle", Napi::Number::New(env, static_cast<double>(stats.pipesIdle)));
    out.Set("bytesBuffered", Napi::Number::New(env, static_cast<double>(stats.bytesBuffered)));
    out.Set("readWritePairs", Napi::Number::New(env, static_cast<double>(stats.readWritePairs)));
    out.Set("readWriteFallbacks", Napi::Number::New(env, static_cast<double>(stats.readWriteFallbacks)));
    out.Set("recordingsDropped", Napi::Number::New(env, static_cast<double>(stats.recordingsDropped)));
    out.Set("recordQueuedBytes", Napi::Number::New(env, static_cast<double>(stats.recordQueuedBytes)));
    out.Set("recorders", Napi::Number::New(env, static_cast<double>(stats.recorders)));
    out.Set("recordPipes", Napi::Number::New(env, static_cast<double>(stats.recordPipes)));
    out.Set("bytesAtoB", Napi::Number::New(env, static_cast<double>(stats.bytesAtoB)));
    out.Set("bytesBtoA", Napi::Number::New(env, static_cast<double>(stats.bytesBtoA)));
    return out;
  }

  // Completions of the aborted pairs are still delivered after this returns.
  void Close(const Napi::CallbackInfo& info) { Shutdown(); }

  // The JS wrapper refs the TSFN while pairs are outstanding so that an
  // in-flight pair keeps the process alive, as an open socket would.
  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (!released_) tsfn_.Ref(info.Env());
    return info.Env().Undefined();
  }
  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (!released_) tsfn_.Unref(info.Env());
    return info.Env().Undefined();
  }

  std::unique_ptr<Engine> engine_;
  CompletionTsfn tsfn_;
  bool released_ = false;
  bool cleanupHookSet_ = false;
};

// openListener(host, port, backlog, reusePort): a listening fd the caller owns (wrap it in a
// net.Server with listen({ fd }), or close it).
Napi::Value OpenListenerJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "host must be a string, got " + Describe(info[0]));
  std::string host = info[0].As<Napi::String>().Utf8Value();
  ListenSpec spec;
  spec.host = host.c_str();
  spec.port = static_cast<int>(IntegerArg(env, info[1], "port", 0, 65535));
  spec.backlog = static_cast<int>(OptionalIntegerArg(env, info[2], "backlog", 1, 65535, 511));
  spec.reusePort = info[3].ToBoolean().Value();
  try {
    return Napi::Number::New(env, OpenListener(spec));
  } catch (const SyscallError& err) {
    throw ErrnoError(env, err.Errno(), err.Syscall());
  }
}

// setTrimThreshold(bytes): whether the C allocator now keeps that much freed memory for reuse.
Napi::Value SetTrimThresholdJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "bytes must be a number, got " + Describe(info[0]));
  double bytes = info[0].As<Napi::Number>().DoubleValue();
  if (!(bytes >= 0 && bytes <= 2147483647.0) || bytes != static_cast<double>(static_cast<int64_t>(bytes))) {
    throw Napi::RangeError::New(env, "bytes must be an integer from 0 to 2147483647");
  }
  return Napi::Boolean::New(env, SetTrimThreshold(static_cast<size_t>(bytes)));
}

// lingerZero(fd): SO_LINGER {1, 0} on a socket Node still owns, so that its close is a reset.
Napi::Value LingerZeroJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "fd must be a number, got " + Describe(info[0]));
  int fd = info[0].As<Napi::Number>().Int32Value();
  linger lingerZero{1, 0};
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_LINGER, &lingerZero, sizeof lingerZero) != 0) {
    throw ErrnoError(env, fd < 0 ? EBADF : errno, "setsockopt");
  }
  return env.Undefined();
}

// notify(path, message): one datagram of systemd's notify protocol to `path` ('@' = abstract).
Napi::Value NotifyJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string, got " + Describe(info[0]));
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "message must be a string, got " + Describe(info[1]));
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string message = info[1].As<Napi::String>().Utf8Value();
  try {
    SendNotify(path, message.data(), message.size());
  } catch (const SyscallError& err) {
    throw ErrnoError(env, err.Errno(), err.Syscall());
  }
  return env.Undefined();
}

}  // namespace

}  // namespace splicer

static Napi::Object InitSplicer(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", splicer::EngineWrap::Init(env));
  exports.Set("Acceptor", splicer::InitAcceptor(env));
  exports.Set("MuxSession", splicer::InitMuxSession(env));
  exports.Set("openListener", Napi::Function::New<splicer::OpenListenerJs>(env, "openListener"));
  exports.Set("notify", Napi::Function::New<splicer::NotifyJs>(env, "notify"));
  exports.Set("lingerZero", Napi::Function::New<splicer::LingerZeroJs>(env, "lingerZero"));
  exports.Set("setTrimThreshold", Napi::Function::New<splicer::SetTrimThresholdJs>(env, "setTrimThreshold"));
  return exports;
}

NODE_API_MODULE(splicer, InitSplicer)
