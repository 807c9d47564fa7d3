// The JS face of the engine. Only a ThreadSafeFunction crosses from the loop and
// writer threads into JS: each loop iteration's finished pairs arrive as one batch,
// and the writer's recorder events as another.
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
    case EndReason::kReleased: return "released";
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

// A released pair's fds close with its Released unless JS took them: a batch dropped at
// teardown leaks nothing.
struct Batch {
  std::vector<Completion> completions;
  std::vector<RecorderEvent> recorderEvents;
};

Napi::Object HalfObject(Napi::Env env, const ConversationHalf& half) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("next", Napi::Number::New(env, half.next));
  out.Set("acked", Napi::Number::New(env, half.acked));
  out.Set("ipId", Napi::Number::New(env, half.ipId));
  out.Set("finished", Napi::Boolean::New(env, half.finished));
  return out;
}

Napi::Object ReleasedObject(Napi::Env env, Released& released) {
  Napi::Object out = Napi::Object::New(env);
  static const char* const kPending[2] = {"pendingAtoB", "pendingBtoA"};
  static const char* const kEnded[2] = {"endedAtoB", "endedBtoA"};
  static const char* const kFinished[2] = {"finishedAtoB", "finishedBtoA"};
  for (int di = 0; di < 2; di++) {
    const std::string& pending = released.pending[di];
    out.Set(kPending[di], Napi::Buffer<char>::Copy(env, pending.data(), pending.size()));
    out.Set(kEnded[di], Napi::Boolean::New(env, released.ended[di]));
    out.Set(kFinished[di], Napi::Boolean::New(env, released.finished[di]));
  }
  if (!released.recording.empty()) {
    Napi::Array legs = Napi::Array::New(env, released.recording.size());
    for (uint32_t i = 0; i < released.recording.size(); i++) {
      Napi::Object leg = Napi::Object::New(env);
      leg.Set("client", HalfObject(env, released.recording[i].half[0]));
      leg.Set("server", HalfObject(env, released.recording[i].half[1]));
      legs.Set(i, leg);
    }
    out.Set("recording", legs);
  }
  // Last, once nothing above can throw: from here JS owns the fds.
  out.Set("fdA", Napi::Number::New(env, released.fd[0]));
  out.Set("fdB", Napi::Number::New(env, released.fd[1]));
  released.fd[0] = released.fd[1] = -1;
  return out;
}

void DeliverBatch(Napi::Env env, Napi::Function callback, Batch& batch) {
  Napi::Array list = Napi::Array::New(env, batch.completions.size());
  uint32_t i = 0;
  for (Completion& c : batch.completions) {
    Napi::Object item = Napi::Object::New(env);
    item.Set("id", Napi::Number::New(env, static_cast<double>(c.id)));
    item.Set("bytesAtoB", Napi::Number::New(env, static_cast<double>(c.bytesAtoB)));
    item.Set("bytesBtoA", Napi::Number::New(env, static_cast<double>(c.bytesBtoA)));
    item.Set("durationMs", Napi::Number::New(env, c.durationMs));
    item.Set("reason", Napi::String::New(env, ReasonName(c.reason)));
    if (c.error != 0) item.Set("code", Napi::String::New(env, uv_err_name(-c.error)));
    if (c.side >= 0) item.Set("side", Napi::Number::New(env, c.side));
    if (c.syscall != nullptr) item.Set("syscall", Napi::String::New(env, c.syscall));
    if (c.recordingDropped) item.Set("recordingDropped", Napi::Boolean::New(env, true));
    if (c.released) item.Set("released", ReleasedObject(env, *c.released));
    list.Set(i++, item);
  }
  Napi::Array events = Napi::Array::New(env, batch.recorderEvents.size());
  i = 0;
  for (const RecorderEvent& e : batch.recorderEvents) {
    Napi::Object item = Napi::Object::New(env);
    item.Set("recorder", Napi::Number::New(env, static_cast<double>(e.recorder)));
    if (e.type == RecorderEvent::kFailed) {
      item.Set("event", Napi::String::New(env, "failed"));
      item.Set("code", Napi::String::New(env, uv_err_name(-e.error)));
      item.Set("errno", Napi::Number::New(env, -e.error));
      if (e.syscall != nullptr) item.Set("syscall", Napi::String::New(env, e.syscall));
    } else {
      item.Set("event", Napi::String::New(env, "closed"));
      item.Set("complete", Napi::Boolean::New(env, e.complete));
    }
    events.Set(i++, item);
  }
  callback.Call({list, events});
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
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      throw Napi::TypeError::New(env, "Engine(options, onDone)");
    }
    Napi::Object options = info[0].As<Napi::Object>();
    EngineOptions engineOptions;
    engineOptions.threads = options.Get("threads").As<Napi::Number>().Uint32Value();
    engineOptions.maxPipes = options.Get("maxPipes").As<Napi::Number>().Uint32Value();
    engineOptions.maxPipeSize = options.Get("maxPipeSize").As<Napi::Number>().Uint32Value();
    Napi::Value recordBuffer = options.Get("recordBufferBytes");
    if (recordBuffer.IsNumber()) {
      engineOptions.recordBufferBytes = static_cast<size_t>(recordBuffer.As<Napi::Number>().DoubleValue());
    }

    tsfn_ = CompletionTsfn::New(env, info[1].As<Napi::Function>(), "splicer.completions", 0, 1);
    // Idle engines must not keep the process alive; Add() refs while pairs are out.
    tsfn_.Unref(env);
    CompletionTsfn tsfn = tsfn_;
    auto send = [tsfn](Batch* heap) mutable {
      if (tsfn.NonBlockingCall(heap) != napi_ok) delete heap;  // napi_closing at teardown
    };
    engine_ = std::make_unique<Engine>(
        engineOptions,
        [send](std::vector<Completion>&& completions) mutable {
          send(new Batch{std::move(completions), {}});
        },
        [send](std::vector<RecorderEvent>&& events) mutable {
          send(new Batch{{}, std::move(events)});
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
    std::unique_ptr<RecordSpec> record;
    if (info.Length() > 5 && info[5].IsObject()) record = ParseRecordSpec(env, info[5].As<Napi::Object>());
    int error = 0;
    uint64_t id = engine_->Add(fdA, fdB, headA, headALength, headB, headBLength,
                               idle > 0 ? static_cast<uint64_t>(idle) : 0, record.get(), &error);
    if (id == 0) throw ErrnoError(env, error, "dup");
    return Napi::Number::New(env, static_cast<double>(id));
  }

  // { recorder, legs: [{ ipv4, client: { ip, port, next, acked, ipId, finished }, server }] }.
  // Shapes are checked in TS; this checks what would corrupt memory or the file. The recorder
  // is acquired last, so a throw leaves nothing to give back.
  std::unique_ptr<RecordSpec> ParseRecordSpec(Napi::Env env, Napi::Object spec) {
    auto record = std::make_unique<RecordSpec>();
    Napi::Array legs = spec.Get("legs").As<Napi::Array>();
    if (legs.Length() < 1 || legs.Length() > 2) throw Napi::RangeError::New(env, "a recording has 1 or 2 legs");
    for (uint32_t i = 0; i < legs.Length(); i++) {
      Napi::Object leg = legs.Get(i).As<Napi::Object>();
      Conversation c;
      c.ipv4 = leg.Get("ipv4").ToBoolean().Value();
      static const char* const kSides[2] = {"client", "server"};
      for (int side = 0; side < 2; side++) {
        Napi::Object half = leg.Get(kSides[side]).As<Napi::Object>();
        Napi::Value ip = half.Get("ip");
        size_t want = c.ipv4 ? 4 : 16;
        if (!ip.IsBuffer() || ip.As<Napi::Buffer<uint8_t>>().Length() != want) {
          throw Napi::TypeError::New(env, "leg address does not match its IP family");
        }
        std::memcpy(c.half[side].ip, ip.As<Napi::Buffer<uint8_t>>().Data(), want);
        c.half[side].port = static_cast<uint16_t>(half.Get("port").As<Napi::Number>().Uint32Value());
        c.half[side].next = half.Get("next").As<Napi::Number>().Uint32Value();
        c.half[side].acked = half.Get("acked").As<Napi::Number>().Uint32Value();
        c.half[side].ipId = static_cast<uint16_t>(half.Get("ipId").As<Napi::Number>().Uint32Value());
        c.half[side].finished = half.Get("finished").ToBoolean().Value();
      }
      record->legs.push_back(c);
    }
    uint64_t recorder = static_cast<uint64_t>(spec.Get("recorder").As<Napi::Number>().Int64Value());
    record->recorder = engine_->Recorders().Acquire(recorder);
    if (!record->recorder) {
      Napi::Error err = Napi::Error::New(env, "the recorder is closed");
      err.Set("code", Napi::String::New(env, "ERR_RECORDER_CLOSED"));
      throw err;
    }
    return record;
  }

  void Abort(const Napi::CallbackInfo& info) {
    if (!engine_ || engine_->Closed()) return;
    engine_->Abort(static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value()));
  }

  void Release(const Napi::CallbackInfo& info) {
    if (!engine_ || engine_->Closed()) return;
    engine_->Release(static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value()));
  }

  // Takes a dup of the fd; the caller closes its own.
  Napi::Value OpenRecorder(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!engine_ || engine_->Closed()) throw Napi::Error::New(env, "engine is closed");
    int error = 0;
    uint64_t id = engine_->Recorders().Open(info[0].As<Napi::Number>().Int32Value(), &error);
    if (id == 0) throw ErrnoError(env, error, "dup");
    return Napi::Number::New(env, static_cast<double>(id));
  }

  Napi::Value RecordWrite(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!engine_ || engine_->Closed() || !info[1].IsBuffer()) return Napi::Boolean::New(env, false);
    auto data = info[1].As<Napi::Buffer<char>>();
    bool queued = engine_->Recorders().Write(static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value()),
                                             data.Data(), data.Length());
    return Napi::Boolean::New(env, queued);
  }

  void CloseRecorder(const Napi::CallbackInfo& info) {
    if (!engine_ || engine_->Closed()) return;
    engine_->Recorders().Close(static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value()));
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
