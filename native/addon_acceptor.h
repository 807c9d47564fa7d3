// The Acceptor class: the handshake's sockets without Node streams (handshake_io.h).
#pragma once

#include <napi.h>

namespace splicer {

Napi::Function InitAcceptor(Napi::Env env);

}  // namespace splicer
