// Completions and recorder events made into JS objects, and handed to JS one by one.
#include "addon_delivery.h"

#include <uv.h>

#include <memory>
#include <string>

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

Napi::Object CompletionObject(Napi::Env env, Completion& c) {
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
  return item;
}

// What JS is told when a completion could not be turned into an object: the pair is over
// (a released pair's fds close with its Released), and its caller must not wait forever.
Napi::Object UndeliverableObject(Napi::Env env, const Completion& c) {
  Napi::Object item = Napi::Object::New(env);
  item.Set("id", Napi::Number::New(env, static_cast<double>(c.id)));
  item.Set("bytesAtoB", Napi::Number::New(env, static_cast<double>(c.bytesAtoB)));
  item.Set("bytesBtoA", Napi::Number::New(env, static_cast<double>(c.bytesBtoA)));
  item.Set("durationMs", Napi::Number::New(env, c.durationMs));
  item.Set("reason", Napi::String::New(env, "error"));
  item.Set("code", Napi::String::New(env, "ERR_SPLICE_DELIVERY"));
  item.Set("side", Napi::Number::New(env, 0));
  return item;
}

Napi::Object RecorderEventObject(Napi::Env env, const RecorderEvent& e) {
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
  return item;
}

}  // namespace

void CallJs(Napi::Env env, Napi::Function callback, void* /*context*/, Batch* batch) {
  std::unique_ptr<Batch> owned(batch);
  if (env == nullptr || callback == nullptr) return;  // the TSFN is being torn down
  std::vector<Napi::Value> thrown;
  for (const RecorderEvent& e : owned->recorderEvents) {
    try {
      callback.Call({env.Undefined(), RecorderEventObject(env, e)});
    } catch (const Napi::Error& err) {
      thrown.push_back(err.Value());
    }
  }
  for (Completion& c : owned->completions) {
    Napi::Object item;
    try {
      item = CompletionObject(env, c);
    } catch (const Napi::Error& err) {
      thrown.push_back(err.Value());
      try {
        item = UndeliverableObject(env, c);
      } catch (const Napi::Error&) {
        continue;  // JS cannot run at all (worker teardown): nobody is left to tell
      }
    }
    try {
      callback.Call({item, env.Undefined()});
    } catch (const Napi::Error& err) {
      thrown.push_back(err.Value());
    }
  }
  // While a worker is torn down JS cannot run and this fails too; nothing is left to tell.
  for (Napi::Value err : thrown) napi_fatal_exception(env, err);
}

}  // namespace splicer
