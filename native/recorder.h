// Recording spliced pairs into pcap files without the payload entering user space.
//
// A Recorder is one open file. Every write to it goes through the engine's one Writer thread,
// entry by entry, so records never interleave. An entry is bytes (record headers, or whole
// records JS built) followed by a payload spliced from a RecordPipe: the loop thread tee()d
// those bytes out of a pair's data pipe into the record pipe before queueing the entry.
//
// Ownership:
// - The Recorder's file fd is a dup taken on the JS thread; only the writer thread writes it
//   and closes it (when JS closed the recorder, every entry is written and no pair uses it;
//   or at engine close).
// - A RecordPipe belongs to one recorded pair; the pair's loop thread holds the tail of its
//   chain and every queued entry holds the pipe its payload is in (shared_ptr). Bytes teed
//   into a pipe but never queued (a recording dropped half way) lie behind every queued
//   payload, are never read, and die with the pipe: no other pair's bytes can follow them.
// - The queue is bounded in bytes across the engine: an entry that would pass the bound is
//   refused, and the pair stops recording rather than waiting.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "pcap_record.h"
#include "unique_fd.h"

namespace splicer {

struct RecordPipe {
  RecordPipe(int readFd, int writeFd, size_t capacity, std::atomic<size_t>* live);
  ~RecordPipe();
  RecordPipe(const RecordPipe&) = delete;
  RecordPipe& operator=(const RecordPipe&) = delete;

  const int readFd;
  const int writeFd;
  const size_t capacity;
  size_t teed = 0;                   // loop thread only
  std::atomic<size_t> consumed{0};   // written by the writer thread

  // A new pipe of `size` bytes if the kernel allows (else its default), counted in *live.
  static std::shared_ptr<RecordPipe> Create(size_t size, std::atomic<size_t>* live);

 private:
  std::atomic<size_t>* live_;
};

struct RecordEntry {
  std::string bytes;                  // written first
  std::shared_ptr<RecordPipe> pipe;   // then `payload` bytes spliced out of this pipe
  size_t payload = 0;
  size_t Size() const { return bytes.size() + payload; }
};

struct RecorderEvent {
  enum Type { kFailed, kClosed } type = kClosed;
  uint64_t recorder = 0;
  int error = 0;                 // kFailed: the errno that stopped the recorder
  const char* syscall = nullptr;
  bool complete = true;          // kClosed: every queued entry was written
};

class Recorder {
 public:
  Recorder(uint64_t id, int fd) : id(id), fd_(fd) {}
  const uint64_t id;

 private:
  friend class Writer;
  // Guarded by Writer::mutex_.
  std::deque<RecordEntry> queue_;   // references to elements survive push_back
  int users_ = 0;                   // pairs recording into this file
  bool closeRequested_ = false;
  bool failed_ = false;
  // Writer thread only.
  int fd_;
  size_t bytesDone_ = 0;      // of the front entry
  size_t payloadDone_ = 0;
  bool blocked_ = false;      // EAGAIN: wait for POLLOUT
  bool noSplice_ = false;     // the file refused splice(): copy through scratch_
  std::vector<char> scratch_;
  size_t scratchStart_ = 0;
  size_t scratchEnd_ = 0;
};

// One class over two files: the queue that JS and the loops fill (recorder_queue.cc) and the
// thread that writes it (recorder_writer.cc) share one mutex and one map of recorders.
class Writer {
 public:
  using Deliver = std::function<void(std::vector<RecorderEvent>&&)>;

  Writer(size_t maxQueuedBytes, Deliver deliver);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // JS thread. Takes a dup of fd; returns the recorder id, or 0 with *error and *syscall set
  // (the dup, or the writer's eventfd or thread, started with the first recorder).
  uint64_t Open(int fd, int* error, const char** syscall);
  // JS thread: bytes JS built (whole records). False when the queue is full, the recorder
  // failed or is closing, or the id is unknown; nothing is queued then.
  bool Write(uint64_t id, const char* data, size_t length);
  // JS thread. The file closes (and a kClosed event follows) once its queue is written and
  // no pair uses it. Unknown ids are ignored.
  void Close(uint64_t id);
  // The recorder a new pair will record into, counted as a user; nullptr when unknown or closing.
  std::shared_ptr<Recorder> Acquire(uint64_t id);
  // A pair stopped recording into it.
  void ReleaseUser(const std::shared_ptr<Recorder>& recorder);

  // Loop threads. Whether `bytes` more would still fit under the bound (a hint before tee).
  bool HasRoom(size_t bytes) const;
  // Queues the entries in order, all or none. False (nothing queued) over the bound or when
  // the recorder failed: the caller stops recording that pair.
  bool Enqueue(Recorder* recorder, std::vector<RecordEntry>&& entries);

  // Writes what can be written without blocking, closes every file, joins. Idempotent.
  void Stop();

  size_t QueuedBytes() const { return queued_.load(std::memory_order_relaxed); }
  size_t RecorderCount() const { return recorderCount_.load(std::memory_order_relaxed); }
  size_t MaxQueuedBytes() const { return maxQueuedBytes_; }
  // Record pipes alive in this engine (they are counted here; loops create them).
  std::atomic<size_t>* PipeCounter() { return &pipes_; }
  size_t RecordPipes() const { return pipes_.load(std::memory_order_relaxed); }

 private:
  enum class Progress { kEmpty, kBlocked, kBudget, kFailed };

  void StartLocked();
  void Run();
  void WakeLocked();
  Progress Drain(Recorder* recorder, size_t budget);
  bool WriteAll(Recorder* recorder, const char* data, size_t length, size_t* done);
  bool WriteEntry(Recorder* recorder, RecordEntry& entry);
  bool CopyPayload(Recorder* recorder, RecordEntry& entry);
  void Fail(Recorder* recorder, int error, const char* syscall);
  void CloseFile(Recorder* recorder, bool complete);
  void Flush();

  const size_t maxQueuedBytes_;
  Deliver deliver_;
  std::thread thread_;
  UniqueFd wakeFd_;   // closed after the thread is joined (~Writer stops it first)
  bool started_ = false;
  bool stopping_ = false;    // guarded by mutex_
  bool stopped_ = false;
  bool sleeping_ = false;    // guarded by mutex_: the thread waits in poll() with no ready work
  std::atomic<uint64_t> nextId_{1};
  std::atomic<size_t> queued_{0};
  std::atomic<size_t> recorderCount_{0};
  std::atomic<size_t> pipes_{0};

  mutable std::mutex mutex_;
  std::unordered_map<uint64_t, std::shared_ptr<Recorder>> recorders_;
  std::vector<RecorderEvent> events_;   // writer thread only
};

// What a recorded pair carries: the file, its conversations (legs), and the tail of its
// chain of record pipes. Loop thread only.
struct PairRecord {
  std::shared_ptr<Recorder> recorder;
  std::vector<Conversation> legs;   // legs[0]: client <-> relay; legs[1]: relay <-> server
  std::shared_ptr<RecordPipe> pipe;
  bool active = true;    // still recording
  bool dropped = false;  // stopped early: the writer fell behind, or the file failed
};

}  // namespace splicer
