// Helpers shared by the benchmark's C load programs (load.c, socksload.c). Each program
// defines BENCH_PROG, its name for error messages, before including this file.
#ifndef BENCH_H
#define BENCH_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

static void die(const char *what) {
  fprintf(stderr, BENCH_PROG ": %s: %s\n", what, strerror(errno));
  exit(1);
}

static void epoll_set(int ep, int op, int fd, uint32_t events, uint64_t tag) {
  struct epoll_event ev = { .events = events, .data.u64 = tag };
  if (epoll_ctl(ep, op, fd, &ev) < 0) die("epoll_ctl");
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

#endif
