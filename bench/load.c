// Sender and receiver of the throughput benchmark in C: the same stdin/stdout protocol as
// bench/load.js, at a fraction of its CPU cost, so that the forwarder under test gets the CPU.
//
// Protocol (one JSON object per line):
//   stdout  {"type":"ready","port":R,"threads":2}    receiver listening on 127.0.0.1:R
//   stdin   {"cmd":"run","port":P,"streams":S,"bytes":B[,"rate":R]}   R: bytes/s over all streams (paced)
//           the sender opens S connections to 127.0.0.1:P and writes B bytes in total, split
//           across them, from a preallocated random 1 MiB buffer, then shutdown(SHUT_WR)s each one
//   stdout  {"type":"result","ok":bool,"bytes":n,"expected":B,"seconds":s,"error"?:string}
//           seconds: from the first connect() to the last byte received (all S connections ended)
// The process exits when stdin closes, so it never outlives the benchmark.
//
// Two threads, each with its own epoll loop over non-blocking sockets: the sender thread (commands
// in through a pipe, its first error per run back through another) and the main thread, which
// reads stdin and is the receiver (recv into a 1 MiB buffer, discarded). Both block when idle.
//
//   cc -O2 -Wall -Wextra -pthread -o load bench/load.c
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PROG "load"
#include "bench.h"

#define BUF_SIZE (1 << 20)
#define MAX_EVENTS 256
// epoll data: the run a connection belongs to in the high half, its fd in the low half.
#define TAG(run, fd) (((uint64_t)(run) << 32) | (uint32_t)(fd))

struct cmd { uint32_t run, port, streams; uint64_t bytes, rate; };
struct err { uint32_t run; char msg[96]; };
struct out { uint64_t left, sent; }; // sender: per fd

static char sendbuf[BUF_SIZE], recvbuf[BUF_SIZE];
static int cmd_pipe[2], err_pipe[2];


// ---------------------------------------------------------------------------------------------
// Sender thread

static uint32_t reported_run; // last run an error was sent for: one per run is enough

static void sender_error(uint32_t run, const char *what, int code) {
  if (run == reported_run) return;
  reported_run = run;
  struct err e = { .run = run };
  snprintf(e.msg, sizeof e.msg, "sender: %s: %s", what, strerror(code));
  if (write(err_pipe[1], &e, sizeof e) != (ssize_t)sizeof e) die("write err pipe");
}

static void *sender(void *arg) {
  (void)arg;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  epoll_set(ep, EPOLL_CTL_ADD, cmd_pipe[0], EPOLLIN, TAG(0, cmd_pipe[0]));
  struct out *outs = NULL;
  size_t nouts = 0;
  struct epoll_event evs[MAX_EVENTS];
  // Pacing (a run's optional "rate", bytes per second over all its streams): what may be sent by now.
  uint64_t rate = 0, run_sent = 0;
  struct timespec run_start = {0};
  for (;;) {
    int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      uint32_t run = (uint32_t)(evs[i].data.u64 >> 32);
      int fd = (int)(uint32_t)evs[i].data.u64;
      if (fd == cmd_pipe[0]) { // a run: open every connection, sends start on EPOLLOUT
        struct cmd c;
        if (read(fd, &c, sizeof c) != (ssize_t)sizeof c) die("read cmd pipe");
        rate = c.rate;
        run_sent = 0;
        clock_gettime(CLOCK_MONOTONIC, &run_start);
        struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)c.port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        uint64_t base = c.bytes / c.streams;
        for (uint32_t s = 0; s < c.streams; s++) {
          int sfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
          if (sfd < 0) { sender_error(c.run, "socket", errno); break; }
          if ((size_t)sfd >= nouts) {
            size_t grow = (size_t)sfd * 2 + 64;
            if (!(outs = realloc(outs, grow * sizeof *outs))) die("realloc");
            nouts = grow;
          }
          outs[sfd] = (struct out){ .left = s == c.streams - 1 ? c.bytes - base * (c.streams - 1) : base };
          if (connect(sfd, (struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS) {
            sender_error(c.run, "connect", errno);
            close(sfd);
            continue;
          }
          epoll_set(ep, EPOLL_CTL_ADD, sfd, EPOLLOUT, TAG(c.run, sfd));
        }
        continue;
      }
      struct out *o = &outs[fd];
      int err = 0;
      socklen_t len = sizeof err;
      if (evs[i].events & EPOLLERR) {
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        sender_error(run, "connection", err ? err : ECONNRESET);
        close(fd);
      } else if (evs[i].events & EPOLLOUT) { // write until the socket is full or the share is sent
        while (o->left > 0) {
          size_t off = o->sent % BUF_SIZE, chunk = BUF_SIZE - off;
          if (chunk > o->left) chunk = (size_t)o->left;
          if (rate > 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            double elapsed = (double)(now.tv_sec - run_start.tv_sec) + (double)(now.tv_nsec - run_start.tv_nsec) / 1e9;
            double allowed = (double)rate * elapsed - (double)run_sent;
            if (allowed < 1) { // ahead of the rate: wait a little; EPOLLOUT is level-triggered
              struct timespec pause = { 0, 1000000 };
              nanosleep(&pause, NULL);
              break;
            }
            if ((double)chunk > allowed) chunk = (size_t)allowed;
          }
          ssize_t w = send(fd, sendbuf + off, chunk, MSG_NOSIGNAL);
          if (w < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) { sender_error(run, "send", errno); close(fd); }
            break;
          }
          o->left -= (uint64_t)w;
          o->sent += (uint64_t)w;
          run_sent += (uint64_t)w;
        }
        if (o->left == 0) { // done: FIN, then wait for the peer's end (nothing else comes back)
          if (shutdown(fd, SHUT_WR) < 0) { sender_error(run, "shutdown", errno); close(fd); continue; }
          epoll_set(ep, EPOLL_CTL_MOD, fd, EPOLLIN | EPOLLRDHUP, TAG(run, fd));
        }
      } else if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
        char scratch[4096];
        ssize_t r = recv(fd, scratch, sizeof scratch, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) close(fd);
      }
    }
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// Receiver (main thread) and the command channel

static struct run {
  uint32_t run; // current run id, 0 before the first
  int active;   // a run is in progress
  uint32_t streams, ended;
  uint64_t expected, received;
  double t0;
} t;

// The result line. timed: every stream ended (seconds is then reported, as load.js does).
static void result(const char *error, int timed) {
  char mismatch[96];
  t.active = 0;
  if (!error && t.received != t.expected) {
    snprintf(mismatch, sizeof mismatch, "received %llu bytes, expected %llu",
             (unsigned long long)t.received, (unsigned long long)t.expected);
    error = mismatch;
  }
  printf("{\"type\":\"result\",\"ok\":%s,\"bytes\":%llu,\"expected\":%llu,\"seconds\":", error ? "false" : "true",
         (unsigned long long)t.received, (unsigned long long)t.expected);
  if (timed) printf("%.9f", now() - t.t0); else printf("null");
  if (error) printf(",\"error\":\"%s\"", error); // messages hold no quote or backslash
  printf("}\n");
  fflush(stdout);
}

static int number(const char *line, const char *key, unsigned long long *v) {
  const char *p = strstr(line, key);
  if (!p) return 0;
  char *end;
  errno = 0;
  *v = strtoull(p + strlen(key), &end, 10);
  return errno == 0 && end != p + strlen(key);
}

// One stdin line; ignores anything but a run command, as load.js does.
static void command(const char *line) {
  unsigned long long port, streams, bytes, rate = 0;
  if (!strstr(line, "\"cmd\":\"run\"")) return;
  t = (struct run){ .run = t.run + 1, .active = 1 };
  if (!number(line, "\"port\":", &port) || !number(line, "\"streams\":", &streams)
      || !number(line, "\"bytes\":", &bytes) || port < 1 || port > 65535 || streams < 1 || streams > 65536) {
    result("bad run command", 0);
    return;
  }
  t.streams = (uint32_t)streams;
  t.expected = bytes;
  t.t0 = now();
  number(line, "\"rate\":", &rate); // optional
  struct cmd c = { .run = t.run, .port = (uint32_t)port, .streams = (uint32_t)streams, .bytes = bytes, .rate = rate };
  if (write(cmd_pipe[1], &c, sizeof c) != (ssize_t)sizeof c) die("write cmd pipe");
}

int main(void) {
  // Sender and receiver ends of 4096 streams in one process: raise the fd limit to the hard one.
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  for (size_t i = 0; i < BUF_SIZE; i++) sendbuf[i] = (char)(rand() >> 7);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t alen = sizeof addr;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0
      || getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) die("listen");
  if (pipe2(cmd_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0) die("pipe2");
  pthread_t th;
  if (pthread_create(&th, NULL, sender, NULL) != 0) die("pthread_create");

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  epoll_set(ep, EPOLL_CTL_ADD, STDIN_FILENO, EPOLLIN, TAG(0, STDIN_FILENO));
  epoll_set(ep, EPOLL_CTL_ADD, lfd, EPOLLIN, TAG(0, lfd));
  epoll_set(ep, EPOLL_CTL_ADD, err_pipe[0], EPOLLIN, TAG(0, err_pipe[0]));
  printf("{\"type\":\"ready\",\"port\":%u,\"threads\":2}\n", ntohs(addr.sin_port));
  fflush(stdout);

  static char line[65536];
  size_t have = 0;
  struct epoll_event evs[MAX_EVENTS];
  // Pacing (a run's optional "rate", bytes per second over all its streams): what may be sent by now.
  uint64_t rate = 0, run_sent = 0;
  struct timespec run_start = {0};
  for (;;) {
    // Commands wait in the line buffer while a run is in progress: one run at a time.
    char *nl;
    while (!t.active && (nl = memchr(line, '\n', have))) {
      *nl = '\0';
      command(line);
      have -= (size_t)(nl + 1 - line);
      memmove(line, nl + 1, have);
    }
    int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      uint32_t run = (uint32_t)(evs[i].data.u64 >> 32);
      int fd = (int)(uint32_t)evs[i].data.u64;
      if (fd == STDIN_FILENO) {
        if (have == sizeof line) have = 0; // an absurd line: drop it
        ssize_t r = read(fd, line + have, sizeof line - have);
        if (r <= 0 && !(r < 0 && errno == EINTR)) exit(0); // stdin closed: the benchmark is over
        if (r > 0) have += (size_t)r;
      } else if (fd == err_pipe[0]) {
        struct err e;
        if (read(fd, &e, sizeof e) != (ssize_t)sizeof e) die("read err pipe");
        if (t.active && e.run == t.run) result(e.msg, 0);
      } else if (fd == lfd) {
        int cfd;
        while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          if (!t.active) {
            close(cfd);
            fprintf(stderr, "load: stray connection outside a transfer\n");
            continue;
          }
          epoll_set(ep, EPOLL_CTL_ADD, cfd, EPOLLIN | EPOLLRDHUP, TAG(t.run, cfd));
        }
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) die("accept4");
      } else { // a stream: count until EOF; a stream of an earlier (failed) run is only drained
        int counted = t.active && run == t.run;
        for (;;) {
          ssize_t r = recv(fd, recvbuf, BUF_SIZE, 0);
          if (r > 0) {
            if (counted) t.received += (uint64_t)r;
            if (r < BUF_SIZE) break; // most likely empty now; level-triggered epoll says if not
          } else if (r < 0 && errno == EINTR) {
            continue;
          } else if (r < 0 && errno == EAGAIN) {
            break;
          } else { // EOF or error: the stream is over
            int code = errno;
            close(fd);
            if (!counted) break;
            if (r < 0) {
              char msg[96];
              snprintf(msg, sizeof msg, "receiver: %s", strerror(code));
              result(msg, 0);
            } else if (++t.ended == t.streams) {
              result(NULL, 1);
            }
            break;
          }
        }
      }
    }
  }
}
