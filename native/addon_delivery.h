// What crosses from the loop and writer threads into JS: a batch per loop iteration's finished
// pairs, or per writer round's recorder events, carried by the engine's one ThreadSafeFunction.
#pragma once

#include <napi.h>

#include <vector>

#include "loop.h"
#include "recorder.h"

namespace splicer {

// A released pair's fds close with its Released unless JS took them: a batch dropped at
// teardown leaks nothing. Either list may be empty.
struct Batch {
  std::vector<Completion> completions;
  std::vector<RecorderEvent> recorderEvents;
};

// One call per completion and per recorder event, each on its own: an exception thrown while
// one is built or handled cannot keep the others from their waiters. The exceptions are
// raised after the whole batch, in order, as uncaught exceptions (process 'uncaughtException',
// or the process ends as on any uncaught throw).
void CallJs(Napi::Env env, Napi::Function callback, void* context, Batch* batch);

}  // namespace splicer
