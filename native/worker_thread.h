// The engine's own threads (epoll loops, the pcap writer) take no signals: those belong to
// Node's main thread. SIGPIPE, which Node ignores process-wide, still turns into EPIPE.
#pragma once

#include <signal.h>

#include <cerrno>
#include <system_error>
#include <thread>
#include <utility>

#include "syscall_error.h"

namespace splicer {

// Throws SyscallError("pthread_create") when no thread can be had (EAGAIN: RLIMIT_NPROC,
// threads-max, or no memory for a stack), so the caller can report it like any failed call.
template <typename Fn>
std::thread StartWorkerThread(Fn&& body) {
  try {
    return std::thread([body = std::forward<Fn>(body)]() mutable {
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, nullptr);
      body();
    });
  } catch (const std::system_error& err) {
    throw SyscallError(err.code().value() != 0 ? err.code().value() : EAGAIN, "pthread_create");
  }
}

}  // namespace splicer
