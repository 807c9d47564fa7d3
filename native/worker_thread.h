// The engine's own threads (epoll loops, the pcap writer) take no signals: those belong to
// Node's main thread. SIGPIPE, which Node ignores process-wide, still turns into EPIPE.
#pragma once

#include <signal.h>

#include <thread>
#include <utility>

namespace splicer {

template <typename Fn>
std::thread StartWorkerThread(Fn&& body) {
  return std::thread([body = std::forward<Fn>(body)]() mutable {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    body();
  });
}

}  // namespace splicer
