// The JS face of the engine. Only a ThreadSafeFunction crosses from the loop
// threads into JS: each loop iteration's finished pairs arrive as one batch.
#include <napi.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "engine.h"

namespace splicer {

namespace {

const char* ReasonName(EndReason reason) {
  switch (reason) {
    case EndReason::kEof: return "eof";
    case EndReason::kReset: return "reset";
    case EndReason::kError: return "error";
    case EndReason::kAborted: return "aborted";
    case EndReason::kTimeout: return "timeout";
  }
  return "error";
}

Napi::Error ErrnoError(Napi::Env env, int error, const char* syscall) {
  Napi::Error err = Napi::Error::New(env, std::string(syscall) + " failed: " + strerror(error));
  err.Set("code", Napi::String::New(env, uv_err_name(-error)));
  err.Set("errno", Napi::Number::New(env, -error));
  err.Set("syscall", Napi::String::New(env, syscall));
  return err;
}

using Batch = std::vector<Completion>;

void DeliverBatch(Napi::Env env, Napi::Function callback, const Batch& batch) {
  Napi::Array list = Napi::Array::New(env, batch.size());
  uint32_t i = 0;
  for (const Completion& c : batch) {
    Napi::Object item = Napi::Object::New(env);
    item.Set("id", Napi::Number::New(env, static_cast<double>(c.id)));
    item.Set("bytesAtoB", Napi::Number::New(env, static_cast<double>(c.bytesAtoB)));
    item.Set("bytesBtoA", Napi::Number::New(env, static_cast<double>(c.bytesBtoA)));
    item.Set("durationMs", Napi::Number::New(env, c.durationMs));
    item.Set("reason", Napi::String::New(env, ReasonName(c.reason)));
    if (c.error != 0) item.Set("code", Napi::String::New(env, uv_err_name(-c.error)));
    if (c.side >= 0) item.Set("side", Napi::Number::New(env, c.side));
    if (c.syscall != nullptr) item.Set("syscall", Napi::String::New(env, c.syscall));
    list.Set(i++, item);
  }
  callback.Call({list});
}

void CallJs(Napi::Env env, Napi::Function callback, void* /*context*/, Batch* batch) {
  std::unique_ptr<Batch> owned(batch);
  if (env == nullptr || callback == nullptr) return;  // the TSFN is being torn down
  try {
    DeliverBatch(env, callback, *owned);
  } catch (const Napi::Error& err) {
    // A throwing handler's exception goes back to Node as uncaught. While a worker
    // is torn down JS cannot run and the throw fails too; nothing is left to tell.
    napi_throw(env, err.Value());
  }
}

using CompletionTsfn = Napi::TypedThreadSafeFunction<void, Batch, CallJs>;

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {
                           InstanceMethod<&EngineWrap::Add>("add"),
                           InstanceMethod<&EngineWrap::Abort>("abort"),
                           InstanceMethod<&EngineWrap::Stats>("stats"),
                           InstanceMethod<&EngineWrap::Close>("close"),
                           InstanceMethod<&EngineWrap::Ref>("ref"),
                           InstanceMethod<&EngineWrap::Unref>("unref"),
                       });
  }

  EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      throw Napi::TypeError::New(env, "Engine(options, onDone)");
    }
    Napi::Object options = info[0].As<Napi::Object>();
    EngineOptions engineOptions;
    engineOptions.threads = options.Get("threads").As<Napi::Number>().Uint32Value();
    engineOptions.maxPipes = options.Get("maxPipes").As<Napi::Number>().Uint32Value();
    engineOptions.maxPipeSize = options.Get("maxPipeSize").As<Napi::Number>().Uint32Value();

    tsfn_ = CompletionTsfn::New(env, info[1].As<Napi::Function>(), "splicer.completions", 0, 1);
    // Idle engines must not keep the process alive; Add() refs while pairs are out.
    tsfn_.Unref(env);
    CompletionTsfn tsfn = tsfn_;
    engine_ = std::make_unique<Engine>(engineOptions, [tsfn](std::vector<Completion>&& batch) mutable {
      Batch* heap = new Batch(std::move(batch));
      if (tsfn.NonBlockingCall(heap) != napi_ok) delete heap;  // napi_closing at teardown
    });
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
    if (!released_) {
      released_ = true;
      tsfn_.Release();
    }
  }

  Napi::Value Add(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!engine_ || engine_->Closed()) throw Napi::Error::New(env, "engine is closed");
    int fdA = info[0].As<Napi::Number>().Int32Value();
    int fdB = info[1].As<Napi::Number>().Int32Value();
    const char* headA = nullptr;
    size_t headALength = 0;
    const char* headB = nullptr;
    size_t headBLength = 0;
    if (info[2].IsBuffer()) {
      auto buffer = info[2].As<Napi::Buffer<char>>();
      headA = buffer.Data();
      headALength = buffer.Length();
    }
    if (info[3].IsBuffer()) {
      auto buffer = info[3].As<Napi::Buffer<char>>();
      headB = buffer.Data();
      headBLength = buffer.Length();
    }
    double idle = info[4].IsNumber() ? info[4].As<Napi::Number>().DoubleValue() : 0;
    int error = 0;
    uint64_t id = engine_->Add(fdA, fdB, headA, headALength, headB, headBLength,
                               idle > 0 ? static_cast<uint64_t>(idle) : 0, &error);
    if (id == 0) throw ErrnoError(env, error, "dup");
    return Napi::Number::New(env, static_cast<double>(id));
  }

  void Abort(const Napi::CallbackInfo& info) {
    if (!engine_ || engine_->Closed()) return;
    engine_->Abort(static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value()));
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

}  // namespace

}  // namespace splicer

static Napi::Object InitSplicer(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", splicer::EngineWrap::Init(env));
  return exports;
}

NODE_API_MODULE(splicer, InitSplicer)
