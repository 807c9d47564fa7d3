// The MuxSession class: a yamux session whose stream bytes move by splice() (mux_session.h).
#pragma once

#include <napi.h>

namespace splicer {

Napi::Function InitMuxSession(Napi::Env env);

}  // namespace splicer
