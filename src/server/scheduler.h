// The serving loop behind `elastic serve`: one model thread runs every admitted request's Session,
// one decode token per running sequence per round (continuous batching: sequences join and leave
// between rounds), their rows stacked through the GEMMs (DecodeBatch) in groups the backend keeps
// bit-identical to single-row decode. A new request's prefill runs whole — the router decides on the whole prompt,
// so the prompt is not cut into token chunks — but it yields after each layer to decode rounds of
// the running sequences, which keep streaming while a long prompt is read. No HTTP here: the server
// (server.h) submits Jobs and reads their events.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "attention/elastic.h"
#include "model/model.h"
#include "model/sampler.h"

namespace elastic::server {

// What a request asks for, already validated and tokenised.
struct JobRequest {
    std::vector<int32_t> prompt;
    int max_tokens = 128;                 // new tokens at most (also bounded by the context)
    SamplerParams sampling;               // temperature 0 = greedy
    std::vector<std::string> stop;        // stop strings (not part of the output)
    AttentionSpec spec;                   // this request's attention mode
    double timeout_seconds = 0;           // from submission to the last token; 0 = none
};

// One step of a job's output, as the HTTP side reads it.
struct JobEvent {
    enum class Kind { Text, Done, Error } kind = Kind::Text;
    std::string text;           // Text: new output (whole UTF-8 characters); Error: the message
    std::string finish_reason;  // Done: "stop" or "length"
    int status = 500;           // Error: HTTP status that fits (408 timeout, 500 internal, 503 shutting down)
};

// A job's summary, valid once its Done (or Error) event was pushed.
struct JobResult {
    int prompt_tokens = 0, completion_tokens = 0;
    std::string text;                          // the whole output
    AttentionStats stats;                      // of the prefill: modes per layer and head, Ω
    size_t kv_bytes = 0;                       // KV caches at the end (lean for sparse heads)
    double queue_seconds = 0, ttft_seconds = 0, total_seconds = 0;  // ttft: submission to first token
};

// Shared by the HTTP handler that submitted it and the model thread.
class Job {
public:
    explicit Job(JobRequest r) : req(std::move(r)), submitted(std::chrono::steady_clock::now()) {}
    const JobRequest req;
    const std::chrono::steady_clock::time_point submitted;
    std::atomic<bool> cancelled{false};  // set by the HTTP side (client gone); the model thread frees the job

    // Model thread: append an event (wakes the reader).
    void push(JobEvent e);
    // HTTP side: the next event, waiting up to `wait`; false when none came in time.
    bool next(JobEvent& e, std::chrono::milliseconds wait);
    // Valid after a Done/Error event was read.
    JobResult result() const;
    void set_result(JobResult r);

private:
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<JobEvent> events_;
    JobResult result_;
};

struct SchedulerOptions {
    int parallel = 4;   // sequences decoding at once
    int queue = 64;     // jobs waiting beyond those (submit() refuses more)
};

// Counters for /metrics (monotonic totals and current gauges).
struct SchedulerStats {
    int64_t queued = 0, running = 0;
    int64_t finished = 0, failed = 0, cancelled = 0;
    int64_t prompt_tokens = 0, completion_tokens = 0;
    double omega_msr_sum = 0;  // over finished prefills
    int64_t prefills = 0;
    double decode_seconds = 0;  // model-thread time in decode rounds
};

class Scheduler {
public:
    Scheduler(const Engine& engine, SchedulerOptions o);
    ~Scheduler();  // stop(), then joins the model thread
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    // Queues a job; false when the queue is full or the scheduler is stopping (nothing queued).
    bool submit(const std::shared_ptr<Job>& job);
    // Jobs queued or running.
    int64_t in_flight() const;
    SchedulerStats stats() const;
    // Stops the model thread: jobs still queued or running end with an Error event (503).
    void stop();

private:
    struct Seq;
    void loop();
    void admit(std::vector<std::unique_ptr<Seq>>& running);
    void prefill(Seq& s, std::vector<std::unique_ptr<Seq>>& running);
    void decode_round(std::vector<std::unique_ptr<Seq>>& running, const Seq* skip);
    bool step(Seq& s);  // sample and emit; true when the sequence goes on (its token is then decoded)
    void finish(Seq& s, const std::string& reason);
    void fail_job(const std::shared_ptr<Job>& job, const std::string& msg, int status);

    const Engine& e_;
    const Tokenizer& tok_;
    SchedulerOptions o_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::shared_ptr<Job>> queue_;
    bool stopping_ = false;
    int64_t running_ = 0;
    SchedulerStats stats_;
    DecodeBatch batch_;  // the decode rounds' stacked rows (model thread only)
    std::thread thread_;
};

}  // namespace elastic::server
