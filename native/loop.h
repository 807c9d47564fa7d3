// One epoll thread and the pairs it moves bytes for. Every fd a pair holds is
// owned by that pair and closed exactly once, by the loop thread, when the
// pair ends. Pairs are known by a 64-bit id that is never reused, never by fd
// number, so a recycled fd number cannot reach an old pair.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "pipe_pool.h"
#include "recorder.h"
#include "unique_fd.h"

struct uv_loop_s;
struct uv_poll_s;
struct uv_timer_s;

namespace splicer {

enum class EndReason { kEof, kReset, kError, kAborted, kTimeout, kReleased };

// A pair handed back to JS alive. The fds are the pair's own dups: from the moment this is
// built they belong to whoever receives it (JS wraps them in net.Sockets; a batch that cannot
// be delivered closes them).
struct Released {
  Released() = default;
  Released(const Released&) = delete;
  Released& operator=(const Released&) = delete;
  // Closes the fds nobody claimed (a batch dropped at teardown); a receiver sets them to -1.
  ~Released();
  int fd[2] = {-1, -1};
  std::string pending[2];   // per direction: read from the source, not yet written
  bool ended[2] = {false, false};     // the source's EOF was read
  bool finished[2] = {false, false};  // ... and passed on: shutdown(SHUT_WR) on the destination
  std::vector<Conversation> recording;  // the legs, to be continued by JS; empty when not recording
};

struct Completion {
  uint64_t id = 0;
  uint64_t bytesAtoB = 0;
  uint64_t bytesBtoA = 0;
  double durationMs = 0;
  EndReason reason = EndReason::kEof;
  int error = 0;            // errno, for kReset and kError
  int side = -1;            // 0 = a, 1 = b: where the error was seen
  const char* syscall = nullptr;
  bool recordingDropped = false;
  std::shared_ptr<Released> released;  // kReleased only
};

// One direction of a pair: bytes read from fd[src] are written to fd[1 - src]. Kept small: a
// server may hold tens of thousands of idle pairs, and an idle spliced pair holds no pipe and no
// buffer, only this.
struct Direction {
  Pipe* pipe = nullptr;        // held only while bytes are in it
  size_t inPipe = 0;
  // The bytes Node had read (written first, then freed), or the read/write fallback's buffer
  // (kept while the direction reads that way); null when there is neither.
  std::unique_ptr<char[]> buffer;
  size_t bufferStart = 0;
  size_t bufferEnd = 0;
  uint64_t bytes = 0;
  uint32_t bufferSize = 0;     // the buffer's capacity
  uint8_t streak = 0;          // fills in a row without EAGAIN (saturating): a streaming flow, worth a bigger pipe
  bool readWrite = false;      // no pipe to be had, or splice refused this socket
  bool sourceEof = false;
  bool done = false;           // EOF seen and passed on as shutdown(SHUT_WR)
  bool scheduled = false;      // in the loop's ready list (budget ran out while data remained)
  bool blockedOnOutput = false;  // bytes wait for the destination's EPOLLOUT; reads of the source wait too
};

// What epoll hands back for a socket of a pair: the Pair's address with the side (0 or 1) in
// its lowest bit, which a Pair's alignment leaves free.

struct Pair {
  uint64_t id = 0;
  int fd[2] = {-1, -1};
  Direction dir[2];            // dir[0]: a -> b, dir[1]: b -> a
  uint64_t idleTimeoutMs = 0;
  uint64_t lastActivityMs = 0;
  uint64_t startNs = 0;
  bool closed = false;
  bool countedReadWrite = false;
  std::unique_ptr<PairRecord> record;  // null when the pair is not recorded
};
static_assert(alignof(Pair) >= 2, "the side of an epoll event is in the lowest bit of the Pair's address");

// A pair built on the JS thread, waiting to be adopted by a loop.
struct PairRequest {
  std::unique_ptr<Pair> pair;
};

class Loop {
 public:
  using Deliver = std::function<void(std::vector<Completion>&&)>;

  // `writer` outlives the loop (the engine stops loops first).
  Loop(size_t maxPipes, size_t maxPipeSize, Writer* writer, Deliver deliver);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Creates the epoll set and the wake eventfd, then the thread. Throws SyscallError
  // (epoll_create1, eventfd, epoll_ctl, pthread_create); what was created before the failure
  // is closed by the Loop's destructor, and no thread is left running.
  void Start();
  // Runs the loop on the JS thread instead, driven by libuv: its epoll set is watched as one
  // fd of libuv's, its timers are a libuv timer, and a pair handed to Add() is taken at once.
  // No thread, no wake fd: no thread switch per pair, for many short pairs. Every call below
  // must then come from that thread. Throws SyscallError (epoll_create1, uv_poll_init).
  void StartInline(uv_loop_s* loop);
  // From any thread (the JS thread only, inline). The loop takes the pair (and its fds) over.
  void Add(std::unique_ptr<Pair> pair);
  void Abort(uint64_t id);
  // Hands the pair back to JS (a kReleased completion). Unknown or finished ids are ignored.
  void Release(uint64_t id);
  // Aborts every pair, delivers their completions, joins the thread. Idempotent.
  void Stop();

  size_t PairCount() const { return pairCount_.load(std::memory_order_relaxed); }
  size_t PipesInUse() const { return pipes_.InUse(); }
  size_t PipesIdle() const { return pipes_.Idle(); }
  int64_t BytesBuffered() const { return bytesBuffered_.load(std::memory_order_relaxed); }
  size_t ReadWritePairs() const { return readWritePairs_.load(std::memory_order_relaxed); }
  uint64_t ReadWriteFallbacks() const { return readWriteFallbacks_.load(std::memory_order_relaxed); }
  uint64_t RecordingsDropped() const { return recordingsDropped_.load(std::memory_order_relaxed); }
  // Bytes written to destinations by every pair of this loop, live ones included: read at any time.
  uint64_t BytesMoved(int di) const { return bytesMoved_[di].load(std::memory_order_relaxed); }

 private:
  struct Command {
    enum Type { kAdd, kAbort, kRelease } type;
    std::unique_ptr<Pair> pair;
    uint64_t id = 0;
  };
  struct Timer {
    uint64_t deadlineMs;
    uint64_t id;
    bool operator>(const Timer& other) const { return deadlineMs > other.deadlineMs; }
  };

  void Run();
  // One turn of Run's loop: what epoll has ready (without waiting), the ready list, the
  // timers, and the completions delivered.
  void Turn(int waitMs);
  void Wake();
  void ArmInlineTimer();
  void StopInline();
  void AbortAll();
  void DrainCommands();
  void Adopt(std::unique_ptr<Pair> pair);
  void HandleEvent(Pair* pair, int side, uint32_t events);
  // The splice pump (loop_pump.cc).
  void Pump(Pair* pair, int di);
  bool FlushBuffer(Pair* pair, int di);
  bool FlushPipe(Pair* pair, int di);
  bool Fill(Pair* pair, int di);
  void RunReady();

  void RunTimers();
  void Fail(Pair* pair, int side, int error, const char* syscall);
  void End(Pair* pair, EndReason reason, int error, int side, const char* syscall);
  void HandBack(Pair* pair);
  void Forget(Pair* pair);

  // Recording (loop_record.cc): every byte is recorded once, when it enters the pair (read
  // from its source). The two below return whether the pair's recording was dropped.
  bool EndRecording(Pair* pair, EndReason reason, int side);
  bool HandBackRecording(Pair* pair, Released* released);
  void RecordSpliced(Pair* pair, int di, size_t length);
  void RecordCopy(Pair* pair, int di, const char* data, size_t length);
  void RecordFin(Pair* pair, int di);
  void RecordEnd(Pair* pair, EndReason reason, int side);
  bool Tee(PairRecord* record, const Pipe& from, size_t length, std::shared_ptr<RecordPipe>* into);
  void Enqueue(Pair* pair, std::vector<RecordEntry>&& entries);
  void DropRecording(Pair* pair);
  void StopRecording(Pair* pair);

  void CloseFds(Pair* pair, bool resetA, bool resetB);
  void Flush();
  void Touch(Pair* pair) { pair->lastActivityMs = nowMs_; }
  int NextTimeoutMs();

  PipePool pipes_;
  Writer* writer_;
  Deliver deliver_;
  UniqueFd epollFd_;
  UniqueFd wakeFd_;
  std::thread thread_;
  // Inline only: libuv's handles on the JS thread; freed by their close callbacks.
  uv_poll_s* inlinePoll_ = nullptr;
  uv_timer_s* inlineTimer_ = nullptr;
  std::atomic<bool> stopping_{false};
  bool started_ = false;
  bool joined_ = false;

  std::mutex commandsMutex_;
  std::vector<Command> commands_;

  std::unordered_map<uint64_t, std::unique_ptr<Pair>> pairs_;
  std::vector<std::unique_ptr<Pair>> ended_;   // freed after the event batch that ended them
  std::vector<std::pair<uint64_t, int>> ready_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  std::vector<Completion> completions_;
  uint64_t nowMs_ = 0;

  std::atomic<size_t> pairCount_{0};
  std::atomic<int64_t> bytesBuffered_{0};
  std::atomic<size_t> readWritePairs_{0};
  std::atomic<uint64_t> readWriteFallbacks_{0};  // pairs that ever fell back: counts up only
  std::atomic<uint64_t> recordingsDropped_{0};   // pairs whose recording stopped early: counts up only
  std::atomic<uint64_t> bytesMoved_[2] = {0, 0};  // per direction (0: a -> b), all pairs ever: counts up only
};

uint64_t MonotonicNs();

}  // namespace splicer
