// Server: see server.h. The HTTP threads validate and tokenise, submit a Job and relay its events;
// the model thread (Scheduler) runs every sequence. Each malformed request gets one OpenAI-style
// JSON error ({"error": {"message", "type", "param", "code"}}) with a fitting status, and the
// server keeps serving.
#include "server/server.h"

#include "server/request.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <random>
#include <sstream>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace elastic::server {

namespace {

using json = nlohmann::json;
using clock = std::chrono::steady_clock;

const char* error_type(int status) {
    switch (status) {
        case 401: return "authentication_error";
        case 404: return "not_found_error";
        case 408: return "timeout_error";
        case 413: return "invalid_request_error";
        case 429: return "rate_limit_error";
        case 499: return "cancelled";
        case 503: return "server_unavailable";
        default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

// Output text may hold bytes that are not UTF-8 (a byte-level token cut mid-character by a stop):
// replace them rather than fail the dump.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json error_body(const ApiError& e) {
    json err = {{"message", e.message}, {"type", error_type(e.status)}};
    err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
    err["code"] = e.code.empty() ? json(nullptr) : json(e.code);
    return json{{"error", err}};
}

void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(dump(error_body(e)), "application/json");
}

// Whether the client of `req` has closed its connection: the socket is found by its two addresses
// (cpp-httplib does not hand it to handlers) and peeked; gone or at end of stream means closed.
bool client_gone(const httplib::Request& req) {
    DIR* d = opendir("/proc/self/fd");
    if (!d) return false;
    bool found = false, gone = true;
    while (dirent* e = readdir(d)) {
        char* end = nullptr;
        const long fd = std::strtol(e->d_name, &end, 10);
        if (!end || *end || fd < 0) continue;
        sockaddr_storage peer{}, self{};
        socklen_t pl = sizeof peer, sl = sizeof self;
        if (getpeername(int(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
        if (getsockname(int(fd), reinterpret_cast<sockaddr*>(&self), &sl) != 0) continue;
        auto port_of = [](const sockaddr_storage& a) {
            return a.ss_family == AF_INET ? ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port)
                   : a.ss_family == AF_INET6 ? ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port) : 0;
        };
        auto addr_of = [](const sockaddr_storage& a) {
            char buf[INET6_ADDRSTRLEN] = {0};
            if (a.ss_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, buf, sizeof buf);
            else if (a.ss_family == AF_INET6)
                inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(a).sin6_addr, buf, sizeof buf);
            return std::string(buf);
        };
        if (port_of(peer) != req.remote_port || port_of(self) != req.local_port || addr_of(peer) != req.remote_addr)
            continue;
        found = true;
        char c;
        const ssize_t n = recv(int(fd), &c, 1, MSG_PEEK | MSG_DONTWAIT);
        gone = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
        break;
    }
    closedir(d);
    return !found || gone;
}

// Prometheus histogram with fixed buckets (seconds).
struct Histogram {
    std::vector<double> bounds{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
    std::vector<int64_t> counts = std::vector<int64_t>(bounds.size() + 1, 0);
    double sum = 0;
    int64_t n = 0;
    void add(double v) {
        size_t i = 0;
        while (i < bounds.size() && v > bounds[i]) ++i;
        ++counts[i];
        sum += v;
        ++n;
    }
    void write(std::ostringstream& o, const char* name, const char* help) const {
        o << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
        int64_t c = 0;
        for (size_t i = 0; i < bounds.size(); ++i) {
            c += counts[i];
            o << name << "_bucket{le=\"" << bounds[i] << "\"} " << c << "\n";
        }
        o << name << "_bucket{le=\"+Inf\"} " << n << "\n" << name << "_sum " << sum << "\n" << name << "_count " << n << "\n";
    }
};

char mode_letter(HeadMode m) { return m == HeadMode::FA ? 'F' : m == HeadMode::SSA ? 'S' : 'X'; }

}  // namespace

struct Server::Impl {
    const Engine& e;
    const Tokenizer& tok;
    ServerOptions o;
    Scheduler sched;
    httplib::Server http;
    std::atomic<bool> draining{false};
    std::atomic<int64_t> next_id{1};
    std::mutex metrics_mu;
    std::map<std::string, int64_t> responses;  // "endpoint,status" -> count
    Histogram latency, ttft;
    int port = -1;
    int listen_fd = -1;  // the listening socket, as the socket-options hook saw it (bind() raises its backlog)

    Impl(const Engine& engine, ServerOptions opt)
        : e(engine), tok(engine.model.tok()), o(std::move(opt)), sched(engine, o.scheduler) {
        if (o.ctx <= 0 || o.ctx > e.model.config.max_ctx) o.ctx = e.model.config.max_ctx;
        if (o.max_tokens < 1) fail("serve: --max-tokens must be >= 1");
        routes();
    }

    void count(const std::string& endpoint, int status) {
        std::lock_guard<std::mutex> lk(metrics_mu);
        ++responses[endpoint + "\",code=\"" + std::to_string(status)];
    }

    bool authorised(const httplib::Request& req) const {
        if (o.api_key.empty()) return true;
        const std::string h = req.get_header_value("Authorization");
        const std::string want = "Bearer " + o.api_key;
        if (h.size() != want.size()) return false;
        unsigned diff = 0;  // the same time for every wrong key of the right length
        for (size_t i = 0; i < h.size(); ++i) diff |= unsigned(h[i] ^ want[i]);
        return diff == 0;
    }

    json elastic_usage(const JobRequest& r, const JobResult& res) const {
        int64_t full = 0, sparse = 0;
        json routing = json::array();
        for (const auto& layer : res.stats.modes) {
            std::string row;
            for (HeadMode m : layer) {
                row += mode_letter(m);
                (r.spec.counts_as_sparse(m) ? sparse : full) += 1;
            }
            routing.push_back(row);
        }
        return json{{"attention", r.spec.name.empty() ? "full" : r.spec.name},
                    {"omega_msr", res.stats.omega_msr},
                    {"omega_esr", res.stats.omega_esr},
                    {"kv_bytes", res.kv_bytes},
                    {"heads_full", full},
                    {"heads_sparse", sparse},
                    {"routing", routing},
                    {"ttft_seconds", res.ttft_seconds},
                    {"queue_seconds", res.queue_seconds}};
    }

    json usage(const JobRequest& r, const JobResult& res) const {
        return json{{"prompt_tokens", res.prompt_tokens},
                    {"completion_tokens", res.completion_tokens},
                    {"total_tokens", res.prompt_tokens + res.completion_tokens},
                    {"elastic", elastic_usage(r, res)}};
    }

    void record(const std::string& endpoint, int status, const JobResult* res) {
        count(endpoint, status);
        if (!res) return;
        std::lock_guard<std::mutex> lk(metrics_mu);
        latency.add(res->total_seconds);
        ttft.add(res->ttft_seconds);
    }

    void completion(const httplib::Request& req, httplib::Response& res, bool chat) {
        const std::string endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
        try {
            if (!authorised(req)) throw ApiError{401, "missing or wrong API key (Authorization: Bearer KEY)", "", "invalid_api_key"};
            if (draining) throw ApiError{503, "the server is shutting down", "", ""};
            const ParsedRequest pr = parse_request(req.body, chat, tok, o, uint64_t(next_id.load()));
            const bool stream = pr.stream, include_usage = pr.include_usage;
            auto job = std::make_shared<Job>(pr.job);
            if (!sched.submit(job)) {
                res.set_header("Retry-After", "1");
                throw ApiError{draining ? 503 : 429, draining ? "the server is shutting down" : "the queue is full: try again shortly", "", ""};
            }
            const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
            const int64_t created = int64_t(std::time(nullptr));
            if (stream) stream_response(req, res, job, id, created, chat, include_usage, endpoint);
            else whole_response(req, res, job, id, created, chat, endpoint);
        } catch (const ApiError& e) {
            send_error(res, e);
            count(endpoint, e.status);
        } catch (const std::exception& ex) {
            send_error(res, ApiError{400, ex.what(), "", ""});
            count(endpoint, 400);
        }
    }

    void whole_response(const httplib::Request& req, httplib::Response& res, const std::shared_ptr<Job>& job,
                        const std::string& id, int64_t created, bool chat, const std::string& endpoint) {
        JobEvent ev;
        auto last_check = clock::now();
        for (;;) {
            if (job->next(ev, std::chrono::milliseconds(100)) && ev.kind != JobEvent::Kind::Text) {
                if (ev.kind == JobEvent::Kind::Error) {
                    record(endpoint, ev.status, nullptr);
                    send_error(res, ApiError{ev.status, ev.text, "", ""});
                    return;
                }
                break;  // Done
            }
            if (clock::now() - last_check > std::chrono::milliseconds(250)) {
                last_check = clock::now();
                if (client_gone(req)) job->cancelled = true;  // the model thread ends it and frees its cache
            }
        }
        const JobResult r = job->result();
        json choice = {{"index", 0}, {"finish_reason", ev.finish_reason}};
        if (chat) choice["message"] = {{"role", "assistant"}, {"content", r.text}};
        else {
            choice["text"] = r.text;
            choice["logprobs"] = nullptr;
        }
        json out = {{"id", id},
                    {"object", chat ? "chat.completion" : "text_completion"},
                    {"created", created},
                    {"model", o.model_id},
                    {"choices", json::array({choice})},
                    {"usage", usage(job->req, r)}};
        res.set_content(dump(out), "application/json");
        record(endpoint, 200, &r);
    }

    void stream_response(const httplib::Request& req, httplib::Response& res, const std::shared_ptr<Job>& job,
                         const std::string& id, int64_t created, bool chat, bool include_usage, const std::string& endpoint) {
        res.set_header("Cache-Control", "no-cache");
        auto chunk = [=](json choice_delta, json finish) {
            json choice = {{"index", 0}, {"finish_reason", finish}};
            if (chat) choice["delta"] = std::move(choice_delta);
            else {
                choice["text"] = choice_delta.value("content", "");
                choice["logprobs"] = nullptr;
            }
            return json{{"id", id},
                        {"object", chat ? "chat.completion.chunk" : "text_completion"},
                        {"created", created},
                        {"model", o.model_id},
                        {"choices", json::array({choice})}};
        };
        auto started = std::make_shared<bool>(false);
        auto finished = std::make_shared<bool>(false);
        res.set_chunked_content_provider(
            "text/event-stream",
            [=, &req](size_t, httplib::DataSink& sink) {
                auto send = [&](const json& j) {
                    const std::string s = "data: " + dump(j) + "\n\n";
                    return sink.write(s.data(), s.size());
                };
                if (!*started) {
                    *started = true;
                    if (chat && !send(chunk({{"role", "assistant"}, {"content", ""}}, nullptr))) {
                        job->cancelled = true;
                        return false;
                    }
                }
                JobEvent ev;
                auto waited = clock::now();
                while (!job->next(ev, std::chrono::milliseconds(100))) {
                    if (clock::now() - waited > std::chrono::milliseconds(250)) {
                        waited = clock::now();
                        if (client_gone(req)) {
                            job->cancelled = true;
                            return false;
                        }
                    }
                }
                if (ev.kind == JobEvent::Kind::Text) {
                    if (!send(chunk({{"content", ev.text}}, nullptr))) {
                        job->cancelled = true;
                        return false;
                    }
                    return true;
                }
                *finished = true;
                if (ev.kind == JobEvent::Kind::Error) {
                    record(endpoint, ev.status, nullptr);
                    send(error_body(ApiError{ev.status, ev.text, "", ""}));
                } else {
                    const JobResult r = job->result();
                    json last = chunk(json::object(), ev.finish_reason);
                    last["elastic"] = elastic_usage(job->req, r);
                    send(last);
                    if (include_usage) {
                        json u = chunk(json::object(), nullptr);
                        u["choices"] = json::array();
                        u["usage"] = usage(job->req, r);
                        send(u);
                    }
                    record(endpoint, 200, &r);
                }
                const std::string done = "data: [DONE]\n\n";
                sink.write(done.data(), done.size());
                sink.done();
                return true;
            },
            [job, finished](bool) {
                if (!*finished) job->cancelled = true;  // the client left mid-stream
            });
    }

    std::string metrics() {
        const SchedulerStats s = sched.stats();
        std::ostringstream m;
        m << "# HELP elastic_requests_total Responses by endpoint and status code.\n# TYPE elastic_requests_total counter\n";
        {
            std::lock_guard<std::mutex> lk(metrics_mu);
            for (const auto& [k, v] : responses) m << "elastic_requests_total{endpoint=\"" << k << "\"} " << v << "\n";
        }
        m << "# HELP elastic_prompt_tokens_total Prompt tokens prefilled.\n# TYPE elastic_prompt_tokens_total counter\n"
          << "elastic_prompt_tokens_total " << s.prompt_tokens << "\n"
          << "# HELP elastic_completion_tokens_total Tokens generated.\n# TYPE elastic_completion_tokens_total counter\n"
          << "elastic_completion_tokens_total " << s.completion_tokens << "\n"
          << "# HELP elastic_queue_depth Requests waiting for a decoding slot.\n# TYPE elastic_queue_depth gauge\n"
          << "elastic_queue_depth " << s.queued << "\n"
          << "# HELP elastic_running Sequences decoding now.\n# TYPE elastic_running gauge\n"
          << "elastic_running " << s.running << "\n"
          << "# HELP elastic_jobs_cancelled_total Requests ended by a client leaving.\n# TYPE elastic_jobs_cancelled_total counter\n"
          << "elastic_jobs_cancelled_total " << s.cancelled << "\n"
          << "# HELP elastic_omega_msr_mean Mean Omega_MSR (share of sparse KV heads) over all prefills.\n"
          << "# TYPE elastic_omega_msr_mean gauge\n"
          << "elastic_omega_msr_mean " << (s.prefills ? s.omega_msr_sum / double(s.prefills) : 0.0) << "\n"
          << "# HELP elastic_prefills_total Prompts prefilled.\n# TYPE elastic_prefills_total counter\n"
          << "elastic_prefills_total " << s.prefills << "\n";
        std::lock_guard<std::mutex> lk(metrics_mu);
        latency.write(m, "elastic_request_seconds", "Time from submission to the last token.");
        ttft.write(m, "elastic_time_to_first_token_seconds", "Time from submission to the first token.");
        return m.str();
    }

    void routes() {
        const int threads = o.http_threads > 0 ? o.http_threads : o.scheduler.parallel + o.scheduler.queue + 16;
        http.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
        http.set_payload_max_length(o.max_body);
        http.set_read_timeout(30, 0);
        http.set_write_timeout(30, 0);
        http.set_keep_alive_timeout(5);
        // cpp-httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed when the system's
        // libcpp-httplib was built). When more clients connect than that while the accept thread is not
        // running (a busy machine), the kernel drops the last ACK of their handshakes; a client that has
        // already sent its request can then get a reset instead of an answer (once its half-open entry is
        // dropped, its retransmission fails the SYN-cookie check). The hook remembers the socket so that
        // bind() can raise the backlog: such connections then wait in the accept queue, and each request is
        // answered by a handler (or refused with a JSON 429/503), never reset.
        http.set_socket_options([this](socket_t sock) {
            httplib::default_socket_options(sock);  // what the hook replaces (SO_REUSEPORT or SO_REUSEADDR)
            listen_fd = int(sock);  // the last socket tried is the one that bound
        });
        http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
            if (!res.body.empty()) return;  // a handler already wrote its error
            const int st = res.status;
            std::string msg = st == 404 || st == 405 ? "no route " + req.method + " " + req.path
                              : st == 413 ? "the body is larger than this server's limit of " + std::to_string(o.max_body) + " bytes"
                              : st == 405 ? "method not allowed"
                                          : "bad request (" + req.method + " " + req.path + ")";
            send_error(res, ApiError{st, msg, "", ""});
            res.status = st;
            count(req.path, st);
        });
        http.set_exception_handler([this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
            std::string msg = "internal error";
            try {
                if (ep) std::rethrow_exception(ep);
            } catch (const std::exception& ex) {
                msg = ex.what();
            } catch (...) {
            }
            send_error(res, ApiError{500, msg, "", ""});
            count(req.path, 500);
        });
        http.Get("/", [](const httplib::Request&, httplib::Response& res) {
            res.set_content(chat_page_html(), "text/html; charset=utf-8");
        });
        http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
            const SchedulerStats s = sched.stats();
            res.status = draining ? 503 : 200;
            res.set_content(dump(json{{"status", draining ? "draining" : "ok"}, {"running", s.running}, {"queued", s.queued}}),
                            "application/json");
        });
        http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
            res.set_content(metrics(), "text/plain; version=0.0.4");
        });
        http.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
            if (!authorised(req)) {
                send_error(res, ApiError{401, "missing or wrong API key (Authorization: Bearer KEY)", "", "invalid_api_key"});
                return;
            }
            json m = {{"id", o.model_id},
                      {"object", "model"},
                      {"created", 0},
                      {"owned_by", "elastic"},
                      {"elastic", {{"attention", o.spec.name.empty() ? "full" : o.spec.name},
                                   {"router", o.have_router},
                                   {"context", o.ctx},
                                   {"layers", e.model.config.n_layer},
                                   {"kv_heads", e.model.config.n_kv_head}}}};
            res.set_content(dump(json{{"object", "list"}, {"data", json::array({m})}}), "application/json");
        });
        http.Post("/v1/chat/completions",
                  [this](const httplib::Request& req, httplib::Response& res) { completion(req, res, true); });
        http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { completion(req, res, false); });
    }
};

Server::Server(const Engine& engine, ServerOptions o) : impl_(std::make_unique<Impl>(engine, std::move(o))) {}
Server::~Server() {
    impl_->http.stop();
    impl_->sched.stop();
}

int Server::bind() {
    Impl& s = *impl_;
    const int port = s.o.port == 0 ? s.http.bind_to_any_port(s.o.host) : (s.http.bind_to_port(s.o.host, s.o.port) ? s.o.port : -1);
    if (port < 0) fail("serve: cannot listen on %s:%d (in use, or not an address of this machine)", s.o.host.c_str(), s.o.port);
    // listen() again on a listening socket only changes its backlog (the kernel caps it at
    // net.core.somaxconn); see the socket-options hook in routes() for why 5 is too few.
    if (s.listen_fd >= 0 && ::listen(s.listen_fd, SOMAXCONN) != 0)
        fail("serve: cannot raise the listen backlog on %s:%d: %s", s.o.host.c_str(), port, std::strerror(errno));
    s.port = port;
    return port;
}

void Server::run() { impl_->http.listen_after_bind(); }

bool Server::draining() const { return impl_->draining; }

void Server::shutdown(double drain_seconds) {
    Impl& s = *impl_;
    s.draining = true;
    const auto t0 = clock::now();
    while (s.sched.in_flight() > 0 && std::chrono::duration<double>(clock::now() - t0).count() < drain_seconds)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    s.sched.stop();  // what is left gets a 503 event
    // Give the handlers a moment to send their last events before the sockets close.
    const auto t1 = clock::now();
    while (s.sched.in_flight() > 0 && clock::now() - t1 < std::chrono::seconds(2))
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    s.http.stop();
}

}  // namespace elastic::server
