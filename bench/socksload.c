// Load driver of the proxy benchmark (bench/proxy.js): SOCKS5 clients and the target servers in one
// C process, so that neither the client nor the target is what limits a proxy under test.
//
// Two threads, each with its own epoll loop over non-blocking sockets:
//   main thread    reads commands on stdin and is the target server, on three listening sockets:
//                    rr    request/response: reads SIZE bytes, answers SIZE bytes, closes on EOF
//                    sink  counts bytes until EOF (bulk transfers), then closes
//                    echo  writes back what it reads, closes on EOF (held tunnels: idle, C10K)
//   client thread  runs the clients of a command (commands in through a pipe)
//
// Protocol (one JSON object per line):
//   stdout  {"type":"ready","rrPort":R,"sinkPort":S,"echoPort":E}
//   stdin   {"cmd":"rate","port":P,"socks":1,"clients":C,"count":N,"seconds":T,"size":1024,"timeout":5}
//           C clients in parallel, N connections in all (or until T seconds have passed): each one
//           connect()s to 127.0.0.1:P, does a SOCKS5 greeting (no auth) and CONNECT 127.0.0.1:R (socks:0
//           skips both: P is then the target itself), sends SIZE bytes, reads SIZE bytes, closes.
//   stdout  {"type":"rate","ok":bool,"done":n,"errors":e,"seconds":s,"connsPerSec":x,
//            "latencyUs":{"p50","p90","p99","max","mean"},"handshakeUs":{...},"firstError"?:string}
//           latency: connect() start to the last response byte; handshake: connect() start to the
//           SOCKS5 reply; seconds: first connect() to the last connection done
//   stdin   {"cmd":"bulk","port":P,"socks":1,"streams":S,"bytes":B}
//           S connections through P (SOCKS5 CONNECT 127.0.0.1:S) write B bytes in all, split across
//           them, from a preallocated random 1 MiB buffer, then shutdown(SHUT_WR)
//   stdout  {"type":"bulk","ok":bool,"bytes":n,"expected":B,"seconds":s,"error"?:string}
//           seconds: from the command to the last byte received (all S connections ended at the sink)
//   stdin   {"cmd":"hold","port":P,"count":N,"clients":C,"timeout":T}
//           opens N SOCKS5 CONNECTs through P to the echo target (at most C handshakes at a time) and
//           holds them open, idle, for the commands below; gives up after T seconds
//   stdout  {"type":"hold","ok":bool,"open":n,"errors":e,"seconds":s,"firstError"?:string}
//   stdin   {"cmd":"echo","seconds":T,"size":1024,"interval":1,"timeout":5}
//           every held tunnel sends SIZE bytes every INTERVAL seconds (the tunnels' turns spread evenly
//           over the interval) for T seconds and reads them back from the echo target; a tunnel that
//           fails (error, EOF, no echo within TIMEOUT seconds) counts once and is used no more
//   stdout  {"type":"echo","ok":bool,"echoes":n,"failures":f,"late":l,"seconds":s,"latencyUs":{...},"firstError"?:string}
//           latency: the send to the last echoed byte; late: turns skipped because the previous echo
//           of that tunnel was still out
//   stdin   {"cmd":"close"}
//           closes every held tunnel (the echo target then sees EOF through the proxy)
//   stdout  {"type":"close","closed":n,"lost":l}   lost: tunnels found closed by the other side
// One command at a time (the caller waits for the result). The process exits when stdin closes.
//
//   cc -O2 -Wall -Wextra -pthread -o socksload bench/socksload.c
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

#define BENCH_PROG "socksload"
#include "bench.h"

#define BUF_SIZE (1 << 20)
#define MAX_EVENTS 256
#define MAX_SIZE (1 << 20)
#define TAG(run, fd) (((uint64_t)(run) << 32) | (uint32_t)(fd))

enum { CMD_RATE = 1, CMD_BULK = 2, CMD_HOLD = 3, CMD_ECHO = 4, CMD_CLOSE = 5 };
struct cmd {
  uint32_t kind, run, port, socks, clients, size, streams;
  uint64_t count, bytes;
  double seconds, timeout, interval;
};
struct err { uint32_t run; char msg[120]; };

static char sendbuf[BUF_SIZE], recvbuf[BUF_SIZE];
static int cmd_pipe[2], err_pipe[2];
static uint16_t rr_port, sink_port, echo_port;
static volatile uint32_t rr_size = 1024; // set by the main thread before a rate command goes to the client
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;


static void emit(const char *line) {
  pthread_mutex_lock(&out_lock);
  fputs(line, stdout);
  fflush(stdout);
  pthread_mutex_unlock(&out_lock);
}

static void *grow(void *p, size_t *n, size_t need, size_t elem) {
  if (need < *n) return p;
  size_t m = need * 2 + 64;
  void *q = realloc(p, m * elem);
  if (!q) die("realloc");
  memset((char *)q + *n * elem, 0, (m - *n) * elem);
  *n = m;
  return q;
}

// ---------------------------------------------------------------------------------------------
// Client side: one connection's SOCKS5 handshake, shared by the rate and the bulk commands.

enum { C_CONNECTING, C_GREET, C_REPLY, C_RESP, C_SEND, C_DRAIN };
struct conn {
  int state, active;
  uint32_t slot;
  double t0, ths;
  unsigned char in[300];
  size_t inlen;
  const char *out; // pending bytes to send (greeting, CONNECT, request)
  size_t outlen, outoff;
  uint64_t left, sent, got;
  unsigned char req[10];
};

static const char greeting[3] = { 5, 1, 0 };

static void set_connect_request(struct conn *c, uint16_t port) {
  unsigned char r[10] = { 5, 1, 0, 1, 127, 0, 0, 1, (unsigned char)(port >> 8), (unsigned char)port };
  memcpy(c->req, r, sizeof r);
  c->out = (const char *)c->req;
  c->outlen = sizeof r;
  c->outoff = 0;
}

static int client_socket(uint16_t port, int *err) {
  struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) { *err = errno; return -1; }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS) {
    *err = errno;
    close(fd);
    return -1;
  }
  return fd;
}

// Sends what is pending. 1: all sent, 0: would block, -1: error (errno).
static int flush_out(int fd, struct conn *c) {
  while (c->outoff < c->outlen) {
    ssize_t w = send(fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 0 : -1;
    }
    c->outoff += (size_t)w;
  }
  return 1;
}

// Reads the handshake replies (states C_GREET, C_REPLY). 1: the SOCKS5 reply is complete (bytes past
// it, if any, are left in c->in from c->inlen on... none can come before the request), 0: more to
// read, -1: error with msg set.
static int read_handshake(int fd, struct conn *c, const char **msg) {
  for (;;) {
    ssize_t r = recv(fd, c->in + c->inlen, sizeof c->in - c->inlen, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return 0;
      *msg = strerror(errno);
      return -1;
    }
    if (r == 0) { *msg = c->state == C_GREET ? "EOF in SOCKS5 method reply" : "EOF in SOCKS5 CONNECT reply"; return -1; }
    c->inlen += (size_t)r;
    if (c->state == C_GREET) {
      if (c->inlen < 2) continue;
      if (c->in[0] != 5 || c->in[1] != 0) { *msg = "SOCKS5 method refused"; return -1; }
      c->inlen = 0;
      c->state = C_REPLY;
      return 2; // caller sends CONNECT
    }
    if (c->inlen < 5) continue;
    if (c->in[0] != 5) { *msg = "bad SOCKS5 reply version"; return -1; }
    if (c->in[1] != 0) {
      static char m[64];
      snprintf(m, sizeof m, "SOCKS5 CONNECT reply code %u", c->in[1]);
      *msg = m;
      return -1;
    }
    size_t need = c->in[3] == 1 ? 10 : c->in[3] == 4 ? 22 : c->in[3] == 3 ? (size_t)7 + c->in[4] : 0;
    if (need == 0) { *msg = "bad SOCKS5 reply address type"; return -1; }
    if (c->inlen < need) continue;
    c->got = c->inlen - need; // response bytes behind the reply (there should be none)
    return 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Client: the rate command

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void stats_json(char *buf, size_t n, double *v, size_t count) {
  if (count == 0) { snprintf(buf, n, "null"); return; }
  qsort(v, count, sizeof *v, cmp_double);
  double sum = 0;
  for (size_t i = 0; i < count; i++) sum += v[i];
#define PCT(p) (v[(size_t)((p) * (double)(count - 1) + 0.5)] * 1e6)
  snprintf(buf, n, "{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,\"mean\":%.1f}",
           PCT(0.50), PCT(0.90), PCT(0.99), PCT(0.999), v[count - 1] * 1e6, sum / (double)count * 1e6);
#undef PCT
}

// State of the rate run in progress (the client thread runs one at a time).
static struct rate {
  const struct cmd *k;
  int ep, active, stop_starting;
  struct conn *conns;
  size_t nconns;
  int *slots; // fd per client slot, -1 when idle
  double *lat, *hs;
  char *req;
  uint64_t started, done, errors;
  char first_error[160];
  double t_start, t_last, deadline;
} R;

static void rate_error(const char *what) {
  R.errors++;
  if (!R.first_error[0]) snprintf(R.first_error, sizeof R.first_error, "%s", what);
}

// Starts the next connection of a client slot, if any is left to start; the fd, or -1.
static int rate_start(uint32_t slot) {
  for (;;) {
    if (R.stop_starting || R.started >= R.k->count) break;
    if (now() >= R.deadline) { R.stop_starting = 1; break; }
    R.started++;
    int e = 0;
    double t0 = now();
    int fd = client_socket(R.k->socks ? (uint16_t)R.k->port : rr_port, &e);
    if (fd < 0) {
      char m[96];
      snprintf(m, sizeof m, "connect: %s", strerror(e));
      rate_error(m);
      continue;
    }
    R.conns = grow(R.conns, &R.nconns, (size_t)fd, sizeof *R.conns);
    R.conns[fd] = (struct conn){ .state = C_CONNECTING, .active = 1, .t0 = t0, .slot = slot };
    R.slots[slot] = fd;
    R.active++;
    epoll_set(R.ep, EPOLL_CTL_ADD, fd, EPOLLOUT, TAG(slot, fd));
    return fd;
  }
  R.slots[slot] = -1;
  return -1;
}

// Closes a connection (done or failed) and starts the next one of its slot.
static void rate_finish(int fd) {
  uint32_t slot = R.conns[fd].slot;
  R.conns[fd].active = 0;
  close(fd);
  R.active--;
  R.t_last = now();
  rate_start(slot);
}

static void rate_fail(int fd, const char *what) {
  rate_error(what);
  rate_finish(fd);
}

// One event of a rate connection.
static void rate_event(int fd, uint32_t events) {
  const struct cmd *k = R.k;
  struct conn *c = &R.conns[fd];
  const char *msg = NULL;
  char m[120];
  if (c->state == C_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err || (events & (EPOLLERR | EPOLLHUP))) {
      snprintf(m, sizeof m, "connect: %s", strerror(err ? err : ECONNRESET));
      rate_fail(fd, m);
      return;
    }
    if (k->socks) {
      c->state = C_GREET;
      c->out = greeting; c->outlen = sizeof greeting; c->outoff = 0;
    } else {
      c->state = C_RESP;
      c->ths = now();
      c->out = R.req; c->outlen = k->size; c->outoff = 0;
    }
  } else if (events & EPOLLOUT) {
    // pending bytes, sent below
  } else if (c->state == C_GREET || c->state == C_REPLY) {
    int r = read_handshake(fd, c, &msg);
    if (r < 0) { rate_fail(fd, msg); return; }
    if (r == 0) return;
    if (r == 2) {
      set_connect_request(c, rr_port);
    } else {
      c->ths = now();
      c->state = C_RESP;
      c->out = R.req; c->outlen = k->size; c->outoff = 0;
    }
  } else if (c->state == C_RESP) {
    int closed = 0, bad = 0;
    for (;;) {
      ssize_t r = recv(fd, recvbuf, BUF_SIZE, 0);
      if (r > 0) { c->got += (uint64_t)r; if (c->got >= k->size) break; continue; }
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno == EAGAIN) break;
      if (r < 0) bad = errno; else closed = 1;
      break;
    }
    if (c->got >= k->size) {
      R.lat[R.done] = now() - c->t0;
      R.hs[R.done] = c->ths - c->t0;
      R.done++;
      rate_finish(fd);
    } else if (bad || closed) {
      snprintf(m, sizeof m, "%s after %llu response bytes", bad ? strerror(bad) : "EOF", (unsigned long long)c->got);
      rate_fail(fd, m);
    }
    return;
  }
  // Send what is pending (greeting, CONNECT request or the request), then wait for the answer.
  int r = flush_out(fd, c);
  if (r < 0) {
    snprintf(m, sizeof m, "send: %s", strerror(errno));
    rate_fail(fd, m);
    return;
  }
  epoll_set(R.ep, EPOLL_CTL_MOD, fd, r ? EPOLLIN : EPOLLOUT, TAG(c->slot, fd));
}

static void run_rate(const struct cmd *k) {
  free(R.conns);
  R = (struct rate){ .k = k };
  R.ep = epoll_create1(EPOLL_CLOEXEC);
  if (R.ep < 0) die("epoll_create1");
  R.slots = malloc(k->clients * sizeof *R.slots);
  R.lat = malloc((k->count + 1) * sizeof *R.lat);
  R.hs = malloc((k->count + 1) * sizeof *R.hs);
  R.req = malloc(k->size);
  if (!R.slots || !R.lat || !R.hs || !R.req) die("malloc");
  memcpy(R.req, sendbuf, k->size);
  R.t_start = R.t_last = now();
  R.deadline = R.t_start + k->seconds;
  for (uint32_t s = 0; s < k->clients; s++) R.slots[s] = -1;
  for (uint32_t s = 0; s < k->clients; s++) rate_start(s);

  struct epoll_event evs[MAX_EVENTS];
  double last_scan = now();
  while (R.active > 0) {
    int n = epoll_wait(R.ep, evs, MAX_EVENTS, 100);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      int fd = (int)(uint32_t)evs[i].data.u64;
      if ((size_t)fd < R.nconns && R.conns[fd].active) rate_event(fd, evs[i].events);
    }
    double t = now();
    if (t >= R.deadline) R.stop_starting = 1;
    if (t - last_scan >= 0.1) { // connections stuck past the timeout count as failed
      last_scan = t;
      for (uint32_t s = 0; s < k->clients; s++) {
        int fd = R.slots[s];
        if (fd >= 0 && R.conns[fd].active && t - R.conns[fd].t0 > k->timeout) {
          char m[96];
          snprintf(m, sizeof m, "timeout after %.0f s in state %d", k->timeout, R.conns[fd].state);
          rate_fail(fd, m);
        }
      }
    }
  }
  double secs = R.t_last - R.t_start;
  char l1[256], l2[256], line[1024];
  stats_json(l1, sizeof l1, R.lat, R.done);
  stats_json(l2, sizeof l2, R.hs, R.done);
  int n = snprintf(line, sizeof line,
                   "{\"type\":\"rate\",\"ok\":%s,\"done\":%llu,\"errors\":%llu,\"started\":%llu,\"seconds\":%.6f,\"connsPerSec\":%.1f,"
                   "\"latencyUs\":%s,\"handshakeUs\":%s",
                   R.done > 0 && R.errors == 0 ? "true" : "false", (unsigned long long)R.done, (unsigned long long)R.errors,
                   (unsigned long long)R.started, secs, secs > 0 ? (double)R.done / secs : 0.0, l1, l2);
  if (R.first_error[0]) n += snprintf(line + n, sizeof line - (size_t)n, ",\"firstError\":\"%s\"", R.first_error);
  snprintf(line + n, sizeof line - (size_t)n, "}\n");
  emit(line);
  free(R.slots); free(R.lat); free(R.hs); free(R.req);
  close(R.ep);
}

// ---------------------------------------------------------------------------------------------
// Client: held tunnels (hold, echo, close). They stay open between commands; the client thread
// touches them only while one of these commands runs.

struct hconn {
  struct conn c;      // the handshake (c.active: open and usable)
  int fd;
  int waiting;        // an echo is out
  uint32_t got;       // echoed bytes of the current turn
  size_t sendoff;     // bytes of the current turn sent
  double tsend;
};

static struct held {
  int ep;
  struct hconn *h;    // in the order opened
  size_t n, cap;
  int32_t *byfd;      // fd -> index in h, -1 when none
  size_t nbyfd;
} H = { .ep = -1 };

static void held_grow_fd(int fd) {
  if ((size_t)fd >= H.nbyfd) {
    size_t m = (size_t)fd * 2 + 64;
    int32_t *q = realloc(H.byfd, m * sizeof *q);
    if (!q) die("realloc");
    for (size_t i = H.nbyfd; i < m; i++) q[i] = -1;
    H.byfd = q;
    H.nbyfd = m;
  }
}

static void held_error(char *first, size_t n, uint64_t *errors, const char *what) {
  (*errors)++;
  if (!first[0]) snprintf(first, n, "%s", what);
}

static void held_drop(struct hconn *x) {
  if (x->fd < 0) return;
  epoll_ctl(H.ep, EPOLL_CTL_DEL, x->fd, NULL);
  H.byfd[x->fd] = -1;
  close(x->fd);
  x->fd = -1;
  x->c.active = 0;
}

static void run_hold(const struct cmd *k) {
  if (H.ep < 0 && (H.ep = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1");
  if (H.cap < H.n + k->count) {
    H.cap = H.n + k->count;
    H.h = realloc(H.h, H.cap * sizeof *H.h);
    if (!H.h) die("realloc");
  }
  uint64_t started = 0, open = 0, errors = 0, inflight = 0;
  char first[160] = "";
  double t0 = now(), deadline = t0 + k->timeout;
  struct epoll_event evs[MAX_EVENTS];
  size_t base = H.n;
  for (;;) {
    while (inflight < k->clients && started < k->count && now() < deadline) {
      started++;
      int e = 0;
      int fd = client_socket((uint16_t)k->port, &e);
      if (fd < 0) {
        char m[96];
        snprintf(m, sizeof m, "connect: %s", strerror(e));
        held_error(first, sizeof first, &errors, m);
        continue;
      }
      held_grow_fd(fd);
      struct hconn *x = &H.h[H.n];
      *x = (struct hconn){ .c = { .state = C_CONNECTING, .active = 0, .t0 = now() }, .fd = fd };
      H.byfd[fd] = (int32_t)H.n++;
      inflight++;
      epoll_set(H.ep, EPOLL_CTL_ADD, fd, EPOLLOUT, (uint64_t)(uint32_t)fd);
    }
    if (inflight == 0 && (started >= k->count || now() >= deadline)) break;
    if (now() >= deadline) {
      for (size_t i = base; i < H.n; i++) {
        if (H.h[i].fd >= 0 && !H.h[i].c.active) {
          held_error(first, sizeof first, &errors, "timeout in the handshake");
          held_drop(&H.h[i]);
          inflight--;
        }
      }
      break;
    }
    int n = epoll_wait(H.ep, evs, MAX_EVENTS, 100);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      int fd = (int)(uint32_t)evs[i].data.u64;
      if ((size_t)fd >= H.nbyfd || H.byfd[fd] < 0) continue;
      struct hconn *x = &H.h[H.byfd[fd]];
      struct conn *c = &x->c;
      if (c->active) continue; // an established tunnel: nothing to do while holding
      const char *msg = NULL;
      char m[120];
      int fail = 0;
      if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
          snprintf(m, sizeof m, "connect: %s", strerror(err ? err : ECONNRESET));
          msg = m;
          fail = 1;
        } else {
          c->state = C_GREET;
          c->out = greeting; c->outlen = sizeof greeting; c->outoff = 0;
        }
      } else if (evs[i].events & EPOLLOUT) {
        // pending bytes, sent below
      } else {
        int r = read_handshake(fd, c, &msg);
        if (r < 0) fail = 1;
        else if (r == 0) continue;
        else if (r == 2) set_connect_request(c, echo_port);
        else {
          c->active = 1; // established: idle from now on
          inflight--;
          open++;
          epoll_set(H.ep, EPOLL_CTL_MOD, fd, EPOLLIN | EPOLLRDHUP | EPOLLET, (uint64_t)(uint32_t)fd);
          continue;
        }
      }
      if (!fail) {
        int r = flush_out(fd, c);
        if (r < 0) { snprintf(m, sizeof m, "send: %s", strerror(errno)); msg = m; fail = 1; }
        else epoll_set(H.ep, EPOLL_CTL_MOD, fd, r ? EPOLLIN : EPOLLOUT, (uint64_t)(uint32_t)fd);
      }
      if (fail) {
        held_error(first, sizeof first, &errors, msg);
        held_drop(x);
        inflight--;
      }
    }
  }
  char line[512];
  int len = snprintf(line, sizeof line, "{\"type\":\"hold\",\"ok\":%s,\"open\":%llu,\"errors\":%llu,\"seconds\":%.6f",
                     open == k->count ? "true" : "false", (unsigned long long)open, (unsigned long long)errors, now() - t0);
  if (first[0]) len += snprintf(line + len, sizeof line - (size_t)len, ",\"firstError\":\"%s\"", first);
  snprintf(line + len, sizeof line - (size_t)len, "}\n");
  emit(line);
}

// One event of a held tunnel during an echo run: 1 when its turn completed, -1 failed, 0 more to do.
static int echo_event(struct hconn *x, uint32_t size, const char **msg, char *m, size_t mn) {
  if (x->sendoff < size) {
    int fd = x->fd;
    while (x->sendoff < size) {
      ssize_t w = send(fd, sendbuf + x->sendoff, size - x->sendoff, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) { epoll_set(H.ep, EPOLL_CTL_MOD, fd, EPOLLOUT | EPOLLIN | EPOLLRDHUP, (uint64_t)(uint32_t)fd); break; }
        snprintf(m, mn, "send: %s", strerror(errno));
        *msg = m;
        return -1;
      }
      x->sendoff += (size_t)w;
    }
    if (x->sendoff == size) epoll_set(H.ep, EPOLL_CTL_MOD, fd, EPOLLIN | EPOLLRDHUP, (uint64_t)(uint32_t)fd);
  }
  for (;;) {
    ssize_t r = recv(x->fd, recvbuf, BUF_SIZE, 0);
    if (r > 0) { x->got += (uint32_t)r; continue; }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) break;
    snprintf(m, mn, "%s after %u echoed bytes", r < 0 ? strerror(errno) : "EOF", x->got);
    *msg = m;
    return -1;
  }
  if (x->got > size) { snprintf(m, mn, "%u bytes echoed for %u sent", x->got, size); *msg = m; return -1; }
  return x->got == size && x->sendoff == size ? 1 : 0;
}

static void run_echo(const struct cmd *k) {
  uint64_t echoes = 0, failures = 0, late = 0, turns = 0;
  char first[160] = "";
  size_t n = 0;
  for (size_t i = 0; i < H.n; i++) if (H.h[i].fd >= 0 && H.h[i].c.active) H.h[n++] = H.h[i];
  H.n = n;
  for (size_t i = 0; i < n; i++) { H.byfd[H.h[i].fd] = (int32_t)i; H.h[i].waiting = 0; }
  size_t maxlat = (size_t)(k->seconds / k->interval + 2) * (n ? n : 1);
  double *lat = malloc(maxlat * sizeof *lat);
  if (!lat) die("malloc");
  double t0 = now(), stop = t0 + k->seconds;
  uint64_t scheduled = 0; // turns handed out so far, in order: tunnel (scheduled % n)
  struct epoll_event evs[MAX_EVENTS];
  double last_scan = t0;
  for (;;) {
    double t = now();
    if (n > 0 && t < stop) {
      uint64_t due = (uint64_t)((t - t0) / k->interval * (double)n) + 1;
      for (; scheduled < due; scheduled++) {
        struct hconn *x = &H.h[scheduled % n];
        if (x->fd < 0) continue;
        if (x->waiting) { late++; continue; }
        x->waiting = 1;
        x->got = 0;
        x->sendoff = 0;
        x->tsend = now();
        turns++;
        const char *msg = NULL;
        char m[120];
        int r = echo_event(x, k->size, &msg, m, sizeof m);
        if (r < 0) { held_error(first, sizeof first, &failures, msg); held_drop(x); }
        else if (r > 0) { if (echoes < maxlat) lat[echoes] = now() - x->tsend; echoes++; x->waiting = 0; }
      }
    }
    int outstanding = 0;
    if (t >= stop) {
      for (size_t i = 0; i < n; i++) if (H.h[i].fd >= 0 && H.h[i].waiting) { outstanding = 1; break; }
      if (!outstanding) break;
    }
    int timeout_ms = 1;
    if (t >= stop) timeout_ms = 10;
    int got = epoll_wait(H.ep, evs, MAX_EVENTS, timeout_ms);
    if (got < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < got; i++) {
      int fd = (int)(uint32_t)evs[i].data.u64;
      if ((size_t)fd >= H.nbyfd || H.byfd[fd] < 0) continue;
      struct hconn *x = &H.h[H.byfd[fd]];
      const char *msg = NULL;
      char m[120];
      if (!x->waiting) {
        // Nothing is out: only an EOF or error can come.
        char b;
        ssize_t r = recv(fd, &b, 1, MSG_PEEK);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        held_error(first, sizeof first, &failures, r == 0 ? "EOF on an idle tunnel" : r > 0 ? "bytes on an idle tunnel" : strerror(errno));
        held_drop(x);
        continue;
      }
      int r = echo_event(x, k->size, &msg, m, sizeof m);
      if (r < 0) { held_error(first, sizeof first, &failures, msg); held_drop(x); }
      else if (r > 0) { if (echoes < maxlat) lat[echoes] = now() - x->tsend; echoes++; x->waiting = 0; }
    }
    t = now();
    if (t - last_scan >= 0.1) {
      last_scan = t;
      for (size_t i = 0; i < n; i++) {
        struct hconn *x = &H.h[i];
        if (x->fd >= 0 && x->waiting && t - x->tsend > k->timeout) {
          char m[96];
          snprintf(m, sizeof m, "no echo within %.0f s", k->timeout);
          held_error(first, sizeof first, &failures, m);
          held_drop(x);
        }
      }
    }
  }
  char l1[256], line[1024];
  size_t nl = echoes < maxlat ? echoes : maxlat;
  stats_json(l1, sizeof l1, lat, nl);
  int len = snprintf(line, sizeof line,
                     "{\"type\":\"echo\",\"ok\":%s,\"tunnels\":%zu,\"turns\":%llu,\"echoes\":%llu,\"failures\":%llu,\"late\":%llu,\"seconds\":%.6f,\"latencyUs\":%s",
                     failures == 0 && echoes > 0 ? "true" : "false", n, (unsigned long long)turns, (unsigned long long)echoes,
                     (unsigned long long)failures, (unsigned long long)late, now() - t0, l1);
  if (first[0]) len += snprintf(line + len, sizeof line - (size_t)len, ",\"firstError\":\"%s\"", first);
  snprintf(line + len, sizeof line - (size_t)len, "}\n");
  emit(line);
  free(lat);
}

static void run_close(void) {
  uint64_t closed = 0, lost = 0;
  for (size_t i = 0; i < H.n; i++) {
    struct hconn *x = &H.h[i];
    if (x->fd < 0) continue;
    char b;
    ssize_t r = recv(x->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) lost++;
    held_drop(x);
    closed++;
  }
  H.n = 0;
  char line[160];
  snprintf(line, sizeof line, "{\"type\":\"close\",\"closed\":%llu,\"lost\":%llu}\n", (unsigned long long)closed, (unsigned long long)lost);
  emit(line);
}

// ---------------------------------------------------------------------------------------------
// Client: the bulk command. Errors go to the main thread, which reports the run.

static uint32_t reported_run;
static void bulk_error(uint32_t run, const char *what) {
  if (run == reported_run) return;
  reported_run = run;
  struct err e = { .run = run };
  snprintf(e.msg, sizeof e.msg, "client: %s", what);
  if (write(err_pipe[1], &e, sizeof e) != (ssize_t)sizeof e) die("write err pipe");
}

static void run_bulk(const struct cmd *k, int ep, struct conn **connsp, size_t *nconns) {
  uint64_t base = k->bytes / k->streams;
  for (uint32_t s = 0; s < k->streams; s++) {
    int e = 0;
    int fd = client_socket(k->socks ? (uint16_t)k->port : sink_port, &e);
    if (fd < 0) {
      char m[96];
      snprintf(m, sizeof m, "connect: %s", strerror(e));
      bulk_error(k->run, m);
      return;
    }
    *connsp = grow(*connsp, nconns, (size_t)fd, sizeof **connsp);
    (*connsp)[fd] = (struct conn){ .state = C_CONNECTING, .active = 1, .t0 = now(),
                                   .left = s == k->streams - 1 ? k->bytes - base * (k->streams - 1) : base };
    epoll_set(ep, EPOLL_CTL_ADD, fd, EPOLLOUT, TAG(k->run, fd));
  }
}

// One event of a bulk connection.
static void bulk_event(int ep, struct conn *c, int fd, uint32_t events, uint32_t run, uint32_t socks) {
  const char *msg = NULL;
  char m[120];
#define BFAIL(what) do { bulk_error(run, (what)); c->active = 0; close(fd); return; } while (0)
  if (c->state == C_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err || (events & (EPOLLERR | EPOLLHUP))) {
      snprintf(m, sizeof m, "connect: %s", strerror(err ? err : ECONNRESET));
      BFAIL(m);
    }
    if (socks) {
      c->state = C_GREET;
      c->out = greeting; c->outlen = sizeof greeting; c->outoff = 0;
    } else {
      c->state = C_SEND;
    }
  } else if (c->state == C_GREET || c->state == C_REPLY) {
    if (events & EPOLLOUT) goto pending;
    int r = read_handshake(fd, c, &msg);
    if (r < 0) BFAIL(msg);
    if (r == 0) return;
    if (r == 2) set_connect_request(c, sink_port);
    else c->state = C_SEND;
  } else if (c->state == C_DRAIN) { // sent and shut down: wait for the end (nothing comes back)
    for (;;) {
      ssize_t r = recv(fd, recvbuf, 4096, 0);
      if (r > 0) continue;
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno == EAGAIN && !(events & (EPOLLHUP | EPOLLERR))) return;
      c->active = 0;
      close(fd);
      return;
    }
  }
pending:
  if (c->outoff < c->outlen) {
    int r = flush_out(fd, c);
    if (r < 0) { snprintf(m, sizeof m, "send: %s", strerror(errno)); BFAIL(m); }
    epoll_set(ep, EPOLL_CTL_MOD, fd, r ? EPOLLIN : EPOLLOUT, TAG(run, fd));
    if (!r || c->state != C_SEND) return;
  }
  if (c->state == C_SEND) {
    while (c->left > 0) {
      size_t off = c->sent % BUF_SIZE, chunk = BUF_SIZE - off;
      if (chunk > c->left) chunk = (size_t)c->left;
      ssize_t w = send(fd, sendbuf + off, chunk, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) { snprintf(m, sizeof m, "send: %s", strerror(errno)); BFAIL(m); }
        epoll_set(ep, EPOLL_CTL_MOD, fd, EPOLLOUT, TAG(run, fd));
        return;
      }
      c->left -= (uint64_t)w;
      c->sent += (uint64_t)w;
    }
    if (shutdown(fd, SHUT_WR) < 0) { snprintf(m, sizeof m, "shutdown: %s", strerror(errno)); BFAIL(m); }
    c->state = C_DRAIN;
    epoll_set(ep, EPOLL_CTL_MOD, fd, EPOLLIN | EPOLLRDHUP, TAG(run, fd));
  }
#undef BFAIL
}

static void *client(void *arg) {
  (void)arg;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  epoll_set(ep, EPOLL_CTL_ADD, cmd_pipe[0], EPOLLIN, TAG(0, cmd_pipe[0]));
  struct conn *conns = NULL;
  size_t nconns = 0;
  uint32_t socks = 1;
  struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      uint32_t run = (uint32_t)(evs[i].data.u64 >> 32);
      int fd = (int)(uint32_t)evs[i].data.u64;
      if (fd == cmd_pipe[0]) {
        struct cmd k;
        if (read(fd, &k, sizeof k) != (ssize_t)sizeof k) die("read cmd pipe");
        if (k.kind == CMD_RATE) run_rate(&k); // blocks this thread until the rate run is over
        else if (k.kind == CMD_HOLD) run_hold(&k); // these three block it too
        else if (k.kind == CMD_ECHO) run_echo(&k);
        else if (k.kind == CMD_CLOSE) run_close();
        else { socks = k.socks; run_bulk(&k, ep, &conns, &nconns); }
        continue;
      }
      if ((size_t)fd < nconns && conns[fd].active) bulk_event(ep, &conns[fd], fd, evs[i].events, run, socks);
    }
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// Main thread: commands and the target servers

static struct run {
  uint32_t run;
  int active;
  uint32_t streams, ended;
  uint64_t expected, received;
  double t0;
} t;

struct sconn { int kind; uint32_t wrote, run; uint64_t got; }; // kind 1 rr, 2 sink, 3 echo
static struct sconn *sconns;
static size_t nsconns;

static void bulk_result(const char *error, int timed) {
  char mismatch[96], line[512];
  t.active = 0;
  if (!error && t.received != t.expected) {
    snprintf(mismatch, sizeof mismatch, "sink received %llu bytes, expected %llu",
             (unsigned long long)t.received, (unsigned long long)t.expected);
    error = mismatch;
  }
  int n = snprintf(line, sizeof line, "{\"type\":\"bulk\",\"ok\":%s,\"bytes\":%llu,\"expected\":%llu,\"seconds\":",
                   error ? "false" : "true", (unsigned long long)t.received, (unsigned long long)t.expected);
  n += timed ? snprintf(line + n, sizeof line - (size_t)n, "%.9f", now() - t.t0) : snprintf(line + n, sizeof line - (size_t)n, "null");
  if (error) n += snprintf(line + n, sizeof line - (size_t)n, ",\"error\":\"%s\"", error); // no quotes in messages
  snprintf(line + n, sizeof line - (size_t)n, "}\n");
  emit(line);
}

static int number(const char *line, const char *key, double *v) {
  const char *p = strstr(line, key);
  if (!p) return 0;
  char *end;
  errno = 0;
  *v = strtod(p + strlen(key), &end);
  return errno == 0 && end != p + strlen(key);
}

static void command(const char *line) {
  double port = 0, socks = 1, clients = 1, count = 0, seconds = 20, size = 1024, timeout = 5, streams = 1, bytes = 0;
  number(line, "\"socks\":", &socks);
  int okport = number(line, "\"port\":", &port) && port >= 1 && port <= 65535;
  struct cmd c = { .port = (uint32_t)port, .socks = socks != 0 };
  if (strstr(line, "\"cmd\":\"rate\"")) {
    number(line, "\"clients\":", &clients);
    number(line, "\"count\":", &count);
    number(line, "\"seconds\":", &seconds);
    number(line, "\"size\":", &size);
    number(line, "\"timeout\":", &timeout);
    if (!okport || clients < 1 || clients > 16384 || count < 1 || count > 1e8 || size < 1 || size > MAX_SIZE || !(seconds > 0) || !(timeout > 0)) {
      emit("{\"type\":\"rate\",\"ok\":false,\"error\":\"bad rate command\"}\n");
      return;
    }
    c.kind = CMD_RATE;
    c.clients = (uint32_t)clients;
    c.count = (uint64_t)count;
    c.seconds = seconds;
    c.size = (uint32_t)size;
    c.timeout = timeout;
    rr_size = c.size;
  } else if (strstr(line, "\"cmd\":\"hold\"")) {
    number(line, "\"count\":", &count);
    number(line, "\"clients\":", &clients);
    timeout = 120;
    number(line, "\"timeout\":", &timeout);
    if (!okport || count < 1 || count > 1e6 || clients < 1 || clients > 16384 || !(timeout > 0)) {
      emit("{\"type\":\"hold\",\"ok\":false,\"error\":\"bad hold command\"}\n");
      return;
    }
    c.kind = CMD_HOLD;
    c.count = (uint64_t)count;
    c.clients = (uint32_t)clients;
    c.timeout = timeout;
  } else if (strstr(line, "\"cmd\":\"echo\"")) {
    double interval = 1;
    number(line, "\"seconds\":", &seconds);
    number(line, "\"size\":", &size);
    number(line, "\"interval\":", &interval);
    number(line, "\"timeout\":", &timeout);
    if (size < 1 || size > 65536 || !(seconds > 0) || !(interval > 0) || !(timeout > 0)) {
      emit("{\"type\":\"echo\",\"ok\":false,\"error\":\"bad echo command\"}\n");
      return;
    }
    c.kind = CMD_ECHO;
    c.seconds = seconds;
    c.size = (uint32_t)size;
    c.interval = interval;
    c.timeout = timeout;
  } else if (strstr(line, "\"cmd\":\"close\"")) {
    c.kind = CMD_CLOSE;
  } else if (strstr(line, "\"cmd\":\"bulk\"")) {
    t = (struct run){ .run = t.run + 1, .active = 1 };
    number(line, "\"streams\":", &streams);
    number(line, "\"bytes\":", &bytes);
    if (!okport || streams < 1 || streams > 65536 || bytes < streams) {
      bulk_result("bad bulk command", 0);
      return;
    }
    c.kind = CMD_BULK;
    c.run = t.run;
    c.streams = (uint32_t)streams;
    c.bytes = (uint64_t)bytes;
    t.streams = c.streams;
    t.expected = c.bytes;
    t.t0 = now();
  } else {
    return;
  }
  if (write(cmd_pipe[1], &c, sizeof c) != (ssize_t)sizeof c) die("write cmd pipe");
}

static int listen_socket(uint16_t *port) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t alen = sizeof addr;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0
      || getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) die("listen");
  *port = ntohs(addr.sin_port);
  return lfd;
}

static void rr_event(int ep, int fd, uint32_t events) {
  struct sconn *s = &sconns[fd];
  uint32_t size = rr_size;
  if (events & EPOLLOUT) goto write;
  for (;;) {
    ssize_t r = recv(fd, recvbuf, BUF_SIZE, 0);
    if (r > 0) {
      uint64_t before = s->got;
      s->got += (uint64_t)r;
      if (before < size && s->got >= size) goto write;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return;
    s->kind = 0; // EOF or error: done with this one
    close(fd);
    return;
  }
write:
  while (s->wrote < size) {
    ssize_t w = send(fd, sendbuf + s->wrote, size - s->wrote, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) { epoll_set(ep, EPOLL_CTL_MOD, fd, EPOLLOUT, TAG(0, fd)); return; }
      s->kind = 0;
      close(fd);
      return;
    }
    s->wrote += (uint32_t)w;
  }
  if (events & EPOLLOUT) epoll_set(ep, EPOLL_CTL_MOD, fd, EPOLLIN | EPOLLRDHUP, TAG(0, fd));
}

static void sink_event(int fd) {
  struct sconn *s = &sconns[fd];
  int counted = t.active && s->run == t.run;
  for (;;) {
    ssize_t r = recv(fd, recvbuf, BUF_SIZE, 0);
    if (r > 0) {
      if (counted) t.received += (uint64_t)r;
      if (r < BUF_SIZE) return; // most likely empty now; level-triggered epoll says if not
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return;
    int code = errno;
    s->kind = 0;
    close(fd);
    if (!counted) return;
    if (r < 0) {
      char msg[96];
      snprintf(msg, sizeof msg, "sink: %s", strerror(code));
      bulk_result(msg, 0);
    } else if (++t.ended == t.streams) {
      bulk_result(NULL, 1);
    }
    return;
  }
}

// The echo target: writes back what it reads (a held tunnel's 1 KiB fits in any socket buffer: a
// write that would block loses the connection, and the client reports the missing echo).
static void echo_target_event(int fd) {
  for (;;) {
    ssize_t r = recv(fd, recvbuf, BUF_SIZE, 0);
    if (r > 0) {
      ssize_t off = 0;
      while (off < r) {
        ssize_t w = send(fd, recvbuf + off, (size_t)(r - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) goto gone;
        off += w;
      }
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return;
    break;
  }
gone:
  sconns[fd].kind = 0;
  close(fd);
}

int main(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  for (size_t i = 0; i < BUF_SIZE; i++) sendbuf[i] = (char)(rand() >> 7);

  int rr_fd = listen_socket(&rr_port), sink_fd = listen_socket(&sink_port), echo_fd = listen_socket(&echo_port);
  if (pipe2(cmd_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0) die("pipe2");
  pthread_t th;
  if (pthread_create(&th, NULL, client, NULL) != 0) die("pthread_create");

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  epoll_set(ep, EPOLL_CTL_ADD, STDIN_FILENO, EPOLLIN, TAG(0, STDIN_FILENO));
  epoll_set(ep, EPOLL_CTL_ADD, rr_fd, EPOLLIN, TAG(0, rr_fd));
  epoll_set(ep, EPOLL_CTL_ADD, sink_fd, EPOLLIN, TAG(0, sink_fd));
  epoll_set(ep, EPOLL_CTL_ADD, echo_fd, EPOLLIN, TAG(0, echo_fd));
  epoll_set(ep, EPOLL_CTL_ADD, err_pipe[0], EPOLLIN, TAG(0, err_pipe[0]));
  char ready[128];
  snprintf(ready, sizeof ready, "{\"type\":\"ready\",\"rrPort\":%u,\"sinkPort\":%u,\"echoPort\":%u}\n", rr_port, sink_port, echo_port);
  emit(ready);

  static char line[65536];
  size_t have = 0;
  struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    char *nl;
    while ((nl = memchr(line, '\n', have))) {
      *nl = '\0';
      command(line);
      have -= (size_t)(nl + 1 - line);
      memmove(line, nl + 1, have);
    }
    int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      int fd = (int)(uint32_t)evs[i].data.u64;
      if (fd == STDIN_FILENO) {
        if (have == sizeof line) have = 0;
        ssize_t r = read(fd, line + have, sizeof line - have);
        if (r <= 0 && !(r < 0 && errno == EINTR)) exit(0); // stdin closed: the benchmark is over
        if (r > 0) have += (size_t)r;
      } else if (fd == err_pipe[0]) {
        struct err e;
        if (read(fd, &e, sizeof e) != (ssize_t)sizeof e) die("read err pipe");
        if (t.active && e.run == t.run) bulk_result(e.msg, 0);
      } else if (fd == rr_fd || fd == sink_fd || fd == echo_fd) {
        int cfd;
        while ((cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          sconns = grow(sconns, &nsconns, (size_t)cfd, sizeof *sconns);
          if (fd == sink_fd && !t.active) {
            close(cfd);
            fprintf(stderr, "socksload: stray sink connection outside a transfer\n");
            continue;
          }
          if (fd == rr_fd || fd == echo_fd) {
            int one = 1;
            setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          }
          sconns[cfd] = (struct sconn){ .kind = fd == rr_fd ? 1 : fd == sink_fd ? 2 : 3, .run = t.run };
          epoll_set(ep, EPOLL_CTL_ADD, cfd, EPOLLIN | EPOLLRDHUP, TAG(0, cfd));
        }
        if (errno == EMFILE || errno == ENFILE) {
          fprintf(stderr, "socksload: accept4: %s (out of fds: fewer tunnels, or a higher limit)\n", strerror(errno));
          sleep(1);
        } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) die("accept4");
      } else if ((size_t)fd < nsconns && sconns[fd].kind == 1) {
        rr_event(ep, fd, evs[i].events);
      } else if ((size_t)fd < nsconns && sconns[fd].kind == 2) {
        sink_event(fd);
      } else if ((size_t)fd < nsconns && sconns[fd].kind == 3) {
        echo_target_event(fd);
      }
    }
  }
}
