// Scheduler: see scheduler.h.
#include "server/scheduler.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/unicode-nfc.h"

namespace elastic::server {

namespace {
using clock = std::chrono::steady_clock;
double seconds_since(clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); }

// Thrown from the prefill's per-layer callback to abandon a cancelled or late prefill.
struct Abandon {
    bool timeout;
};

// Length of the longest complete-UTF-8 prefix of s: a trailing partial character is held back.
size_t utf8_complete(const std::string& s) {
    size_t k = s.size();
    while (k > 0 && (static_cast<unsigned char>(s[k - 1]) & 0xC0) == 0x80) --k;
    if (k == 0) return s.size();
    const unsigned char lead = static_cast<unsigned char>(s[k - 1]);
    const size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return s.size() - (k - 1) < need ? k - 1 : s.size();
}
}  // namespace

void Job::push(JobEvent e) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        events_.push_back(std::move(e));
    }
    cv_.notify_all();
}

bool Job::next(JobEvent& e, std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lk(mu_);
    if (!cv_.wait_for(lk, wait, [&] { return !events_.empty(); })) return false;
    e = std::move(events_.front());
    events_.pop_front();
    return true;
}

JobResult Job::result() const {
    std::lock_guard<std::mutex> lk(mu_);
    return result_;
}

void Job::set_result(JobResult r) {
    std::lock_guard<std::mutex> lk(mu_);
    result_ = std::move(r);
}

struct Scheduler::Seq {
    std::shared_ptr<Job> job;
    std::unique_ptr<Session> s;
    Sampler sampler;
    std::vector<int32_t> out;
    size_t emitted = 0;  // bytes of the decoded output already sent
    std::string text;    // decoded output
    bool prefilled = false, done = false;
    double queue_seconds = 0, ttft = -1;
    int32_t next = -1;  // the sampled token the next batched decode appends
    explicit Seq(std::shared_ptr<Job> j) : job(std::move(j)), sampler(job->req.sampling) {}
};

Scheduler::Scheduler(const Engine& engine, SchedulerOptions o)
    : e_(engine), tok_(engine.model.tok()), o_(o), batch_(engine) {
    if (o_.parallel < 1) fail("serve: --parallel must be >= 1");
    if (o_.queue < 0) fail("serve: --queue must be >= 0");
    thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
    stop();
    if (thread_.joinable()) thread_.join();
}

bool Scheduler::submit(const std::shared_ptr<Job>& job) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stopping_) return false;
        // Room: every free decoding slot plus the queue.
        if (int64_t(queue_.size()) >= int64_t(o_.queue) + std::max<int64_t>(0, o_.parallel - running_)) return false;
        queue_.push_back(job);
        stats_.queued = int64_t(queue_.size());
    }
    cv_.notify_all();
    return true;
}

int64_t Scheduler::in_flight() const {
    std::lock_guard<std::mutex> lk(mu_);
    return int64_t(queue_.size()) + running_;
}

SchedulerStats Scheduler::stats() const {
    std::lock_guard<std::mutex> lk(mu_);
    SchedulerStats s = stats_;
    s.queued = int64_t(queue_.size());
    s.running = running_;
    return s;
}

void Scheduler::stop() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
}

void Scheduler::fail_job(const std::shared_ptr<Job>& job, const std::string& msg, int status) {
    JobEvent e;
    e.kind = JobEvent::Kind::Error;
    e.text = msg;
    e.status = status;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (job->cancelled) ++stats_.cancelled;
        else ++stats_.failed;
    }
    job->push(std::move(e));
}

void Scheduler::admit(std::vector<std::unique_ptr<Seq>>& running) {
    for (;;) {
        std::shared_ptr<Job> job;
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (queue_.empty() || int64_t(running.size()) >= o_.parallel) return;
            job = queue_.front();
            queue_.pop_front();
            running_ = int64_t(running.size()) + 1;
        }
        auto s = std::make_unique<Seq>(job);
        s->queue_seconds = seconds_since(job->submitted);
        if (job->cancelled) {
            fail_job(job, "cancelled", 499);
            std::lock_guard<std::mutex> lk(mu_);
            running_ = int64_t(running.size());
            continue;
        }
        try {
            const int64_t cap = std::min<int64_t>(e_.model.config.max_ctx,
                                                  int64_t(job->req.prompt.size()) + std::max(job->req.max_tokens, 1));
            s->s = std::make_unique<Session>(e_, cap, job->req.spec);
            s->s->set_host_logits(!(s->sampler.uses_candidates(Backend::kMaxCandidates) || s->sampler.uses_sorted()));
            running.push_back(std::move(s));
        } catch (const std::exception& ex) {
            fail_job(job, ex.what(), 500);
            std::lock_guard<std::mutex> lk(mu_);
            running_ = int64_t(running.size());
        }
    }
}

void Scheduler::prefill(Seq& s, std::vector<std::unique_ptr<Seq>>& running) {
    const JobRequest& r = s.job->req;
    // Decode rounds of the running sequences between the prefill's layers: at most one round per
    // round's own duration, so a long prompt and the streams share the model thread about evenly.
    auto last_round = clock::now();
    double round_seconds = 0;
    s.s->set_progress([&](int, int) {
        if (s.job->cancelled) throw Abandon{false};
        if (r.timeout_seconds > 0 && seconds_since(s.job->submitted) > r.timeout_seconds) throw Abandon{true};
        if (seconds_since(last_round) < round_seconds) return;
        const auto t0 = clock::now();
        decode_round(running, &s);
        last_round = clock::now();
        round_seconds = std::chrono::duration<double>(last_round - t0).count();
    });
    try {
        s.s->forward(r.prompt.data(), int64_t(r.prompt.size()));
        s.prefilled = true;
        std::lock_guard<std::mutex> lk(mu_);
        ++stats_.prefills;
        stats_.omega_msr_sum += s.s->stats().omega_msr;
        stats_.prompt_tokens += int64_t(r.prompt.size());
    } catch (const Abandon& a) {
        s.done = true;
        if (a.timeout) fail_job(s.job, "the request timed out during the prompt's prefill", 408);
        else fail_job(s.job, "cancelled", 499);
    } catch (const std::exception& ex) {
        s.done = true;
        fail_job(s.job, ex.what(), 500);
    }
    s.s->set_progress(nullptr);
}

void Scheduler::finish(Seq& s, const std::string& reason) {
    s.done = true;
    // Text still held back (a partial stop string, or a partial character at the very end) goes out.
    if (s.emitted < s.text.size()) {
        JobEvent t;
        t.text = utf8_lossy(std::string_view(s.text).substr(s.emitted));
        s.emitted = s.text.size();
        s.job->push(std::move(t));
    }
    JobResult res;
    res.prompt_tokens = int(s.job->req.prompt.size());
    res.completion_tokens = int(s.out.size());
    res.text = utf8_lossy(s.text);
    res.stats = s.s->stats();
    res.kv_bytes = s.s->kv_bytes();
    res.queue_seconds = s.queue_seconds;
    res.ttft_seconds = s.ttft < 0 ? seconds_since(s.job->submitted) : s.ttft;
    res.total_seconds = seconds_since(s.job->submitted);
    s.job->set_result(std::move(res));
    {
        std::lock_guard<std::mutex> lk(mu_);
        ++stats_.finished;
        stats_.completion_tokens += int64_t(s.out.size());
    }
    JobEvent d;
    d.kind = JobEvent::Kind::Done;
    d.finish_reason = reason;
    s.job->push(std::move(d));
}

bool Scheduler::step(Seq& s) {
    const JobRequest& r = s.job->req;
    if (s.job->cancelled) {
        s.done = true;
        fail_job(s.job, "cancelled", 499);
        return false;
    }
    if (r.timeout_seconds > 0 && seconds_since(s.job->submitted) > r.timeout_seconds) {
        s.done = true;
        fail_job(s.job, "the request timed out after " + std::to_string(s.out.size()) + " tokens", 408);
        return false;
    }
    const int32_t next = s.s->sample_next(s.sampler, tok_.vocab_size());
    if (s.ttft < 0) s.ttft = seconds_since(s.job->submitted);
    const auto& stops = tok_.stop_ids();
    if (std::find(stops.begin(), stops.end(), next) != stops.end()) {
        finish(s, "stop");
        return false;
    }
    s.out.push_back(next);
    s.text = tok_.decode_bytes(s.out, /*skip_special=*/true);  // may end inside a character
    // Stop strings: the output ends before the first one found.
    size_t longest = 0;
    for (const std::string& st : r.stop) longest = std::max(longest, st.size());
    if (longest > 0) {  // (empty stop strings never match: find("") would)
        const size_t from = s.emitted >= longest ? s.emitted - longest + 1 : 0;
        size_t cut = std::string::npos;
        for (const std::string& st : r.stop) {
            if (st.empty()) continue;
            const size_t p = s.text.find(st, from);
            if (p != std::string::npos) cut = std::min(cut, p);
        }
        if (cut != std::string::npos) {
            s.text.resize(std::max(cut, s.emitted));
            finish(s, "stop");
            return false;
        }
    }
    // Send whole characters, holding back a tail that may begin a stop string.
    const size_t complete = utf8_complete(s.text);
    size_t end = complete;
    for (const std::string& st : r.stop) {
        if (st.empty()) continue;
        for (size_t k = std::min(st.size() - 1, complete); k > 0; --k)
            if (s.text.compare(complete - k, k, st, 0, k) == 0) {
                end = std::min(end, complete - k);
                break;
            }
    }
    if (end > s.emitted) {
        JobEvent t;
        t.text = utf8_lossy(std::string_view(s.text).substr(s.emitted, end - s.emitted));
        s.emitted = end;
        s.job->push(std::move(t));
    }
    if (int(s.out.size()) >= r.max_tokens || s.s->pos() >= s.s->capacity()) {
        finish(s, "length");
        return false;
    }
    s.next = next;  // fed back by the round's batched decode
    return true;
}

void Scheduler::decode_round(std::vector<std::unique_ptr<Seq>>& running, const Seq* skip) {
    const auto t0 = clock::now();
    // Every running sequence samples its next token, then those that go on decode it together:
    // batches of up to the backend's stable row count, so a request's output is what it gets alone.
    std::vector<Seq*> go;
    for (auto& sp : running) {
        Seq& s = *sp;
        if (&s == skip || s.done || !s.prefilled) continue;
        try {
            if (step(s)) go.push_back(&s);
        } catch (const std::exception& ex) {
            s.done = true;
            fail_job(s.job, ex.what(), 500);
        }
    }
    const size_t rows = size_t(batch_.max_rows());
    for (size_t i = 0; i < go.size(); i += rows) {
        std::vector<Session*> ss;
        std::vector<int32_t> ids;
        for (size_t k = i; k < std::min(go.size(), i + rows); ++k) {
            ss.push_back(go[k]->s.get());
            ids.push_back(go[k]->next);
        }
        try {
            batch_.run(ss, ids.data());
        } catch (const std::exception& ex) {
            for (size_t k = i; k < std::min(go.size(), i + rows); ++k) {
                go[k]->done = true;
                fail_job(go[k]->job, ex.what(), 500);
            }
        }
    }
    std::lock_guard<std::mutex> lk(mu_);
    stats_.decode_seconds += seconds_since(t0);
}

void Scheduler::loop() {
    std::vector<std::unique_ptr<Seq>> running;
    for (;;) {
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait(lk, [&] { return stopping_ || !queue_.empty() || !running.empty(); });
            if (stopping_) break;
        }
        admit(running);
        for (auto& s : running)
            if (!s->prefilled && !s->done) {
                prefill(*s, running);
                break;  // one prefill per round: the running sequences get a token in between
            }
        decode_round(running, nullptr);
        running.erase(std::remove_if(running.begin(), running.end(), [](const auto& s) { return s->done; }),
                      running.end());
        std::lock_guard<std::mutex> lk(mu_);
        running_ = int64_t(running.size());
    }
    // Stopped: whatever is left ends with an error its client can read.
    for (auto& s : running)
        if (!s->done) fail_job(s->job, "the server is shutting down", 503);
    std::deque<std::shared_ptr<Job>> left;
    {
        std::lock_guard<std::mutex> lk(mu_);
        left.swap(queue_);
        running_ = 0;
    }
    for (auto& j : left) fail_job(j, "the server is shutting down", 503);
}

}  // namespace elastic::server
