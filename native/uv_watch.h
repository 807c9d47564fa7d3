// libuv handles on the JS thread for the addon's own fds: an epoll set watched for readability,
// so that its events run on that thread (the handshake I/O, an engine loop with threads 0).
#pragma once

#include <uv.h>

#include "syscall_error.h"

namespace splicer {

// Starts watching `fd`; `owner` is the handle's data. Throws SyscallError (uv_poll_init).
inline uv_poll_t* WatchReadable(uv_loop_t* loop, int fd, void* owner, uv_poll_cb onReady) {
  auto* poll = new uv_poll_t;
  int error = uv_poll_init(loop, poll, fd);
  if (error != 0) {
    delete poll;
    throw SyscallError(-error, "uv_poll_init");
  }
  poll->data = owner;
  uv_poll_start(poll, UV_READABLE, onReady);
  return poll;
}

// Lets go of a handle: its callbacks see no owner from now on, and its memory goes with its close
// callback (libuv may still hold it until then).
template <typename Handle>
void CloseHandle(Handle* handle) {
  handle->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(handle), [](uv_handle_t* closed) { delete reinterpret_cast<Handle*>(closed); });
}

}  // namespace splicer
