// `elastic serve`: the OpenAI-compatible server (src/server). Binds to loopback by default;
// SIGINT / SIGTERM drain the requests in flight, then exit.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <thread>

#include "attention-options.h"
#include "backend-options.h"
#include "commands.h"
#include "core/error.h"
#include "model/model.h"

#ifdef ELASTIC_HAVE_SERVER
#include "server/server.h"
#endif

namespace elastic::cli {

namespace {

struct ServeOptions {
    std::string model, alias, api_key;
    std::string host = "127.0.0.1";
    int port = 8080, parallel = 4, queue = 64, threads = 0, max_tokens = 4096, default_max_tokens = 256;
    int64_t ctx = 0;
    double timeout = 600, drain = 30;
    size_t max_body = 4u << 20;
    AttentionOptions attn;
    BackendOptions backend;
};

#ifdef ELASTIC_HAVE_SERVER
int g_signal_pipe[2] = {-1, -1};
volatile sig_atomic_t g_signals = 0;
extern "C" void on_signal(int sig) {
    if (g_signals++ > 0) _exit(128 + sig);  // a second Ctrl-C does not wait for the drain
    const unsigned char b = static_cast<unsigned char>(sig);
    (void)!write(g_signal_pipe[1], &b, 1);  // async-signal-safe
}

void serve(const ServeOptions& o) {
    // SIGINT / SIGTERM: the handler only writes the signal's number to a pipe that a waiting thread
    // reads (any thread may take the signal: OpenBLAS starts its threads before main).
    if (pipe(g_signal_pipe) != 0) fail("serve: pipe: %s", std::strerror(errno));
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);  // a client that leaves must not end the server

    std::fprintf(stderr, "elastic serve: loading %s\n", o.model.c_str());
    auto model = Model::load(o.model);
    (void)model->tok();  // one clear error now for a model without a tokenizer
    std::unique_ptr<Router> router;
    const AttentionSpec spec = o.attn.resolve(*model, router);
    auto backend = o.backend.make(o.threads, *model);
    Engine engine(*model, *backend, router.get());

    server::ServerOptions so;
    so.host = o.host;
    so.port = o.port;
    so.api_key = !o.api_key.empty() ? o.api_key : std::getenv("ELASTIC_API_KEY") ? std::getenv("ELASTIC_API_KEY") : "";
    std::string id = o.alias;
    if (id.empty()) {
        id = o.model;
        while (id.size() > 1 && id.back() == '/') id.pop_back();
        id = id.substr(id.find_last_of('/') + 1);
    }
    so.model_id = id;
    so.ctx = o.ctx;
    so.max_tokens = o.max_tokens;
    so.default_max_tokens = o.default_max_tokens;
    so.max_body = o.max_body;
    so.timeout_seconds = o.timeout;
    so.spec = spec;
    so.have_router = router != nullptr;
    so.scheduler.parallel = o.parallel;
    so.scheduler.queue = o.queue;
    server::Server srv(engine, so);
    const int port = srv.bind();
    std::fprintf(stderr,
                 "elastic serve: http://%s:%d  model %s | attention %s | backend %s | %d parallel, queue %d | context %lld\n",
                 o.host.c_str(), port, id.c_str(), spec.name.empty() ? "full" : spec.name.c_str(), backend->name(),
                 o.parallel, o.queue, (long long)(o.ctx > 0 ? o.ctx : model->config.max_ctx));
    std::fflush(stderr);
    std::thread waiter([&] {
        unsigned char sig = 0;
        while (read(g_signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
        }
        if (sig == 0) return;  // run() ended on its own
        std::fprintf(stderr, "elastic serve: %s: draining the requests in flight (up to %.0f s)\n",
                     sig == SIGINT ? "SIGINT" : "SIGTERM", o.drain);
        srv.shutdown(o.drain);
    });
    srv.run();
    if (!srv.draining()) {  // run() ended on its own: release the waiter
        const unsigned char zero = 0;
        (void)!write(g_signal_pipe[1], &zero, 1);
    }
    waiter.join();
    std::fprintf(stderr, "elastic serve: stopped\n");
}
#else
void serve(const ServeOptions&) {
    fail("serve: this build has no HTTP server (cpp-httplib was not found: apt install libcpp-httplib-dev, then rebuild)");
}
#endif

}  // namespace

void add_serve(CLI::App& app) {
    auto o = std::make_shared<ServeOptions>();
    CLI::App* c = app.add_subcommand("serve", "OpenAI-compatible HTTP server with per-request elastic routing");
    c->add_option("-m,--model", o->model, "GGUF file or HF directory")->required();
    c->add_option("--host", o->host, "Address to listen on (loopback by default)")->capture_default_str();
    c->add_option("--port", o->port, "Port (0: any free one, printed at start)")->capture_default_str()->check(CLI::Range(0, 65535));
    c->add_option("--parallel", o->parallel, "Sequences decoding at once")->capture_default_str()->check(CLI::Range(1, 1024));
    c->add_option("--queue", o->queue, "Requests waiting beyond --parallel; more get 429")->capture_default_str()->check(CLI::Range(0, 100000));
    c->add_option("--ctx", o->ctx, "Tokens per request, prompt + completion (default: the model's context)")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
    c->add_option("--max-tokens", o->max_tokens, "Largest max_tokens a request may ask for")->capture_default_str()->check(CLI::Range(1, 1 << 30));
    c->add_option("--default-max-tokens", o->default_max_tokens, "max_tokens of a request that gives none")->capture_default_str()->check(CLI::Range(1, 1 << 30));
    c->add_option("--max-body", o->max_body, "Largest request body in bytes (413 above)")->capture_default_str()->check(CLI::Range(size_t(1024), size_t(1) << 32));
    c->add_option("--timeout", o->timeout, "Seconds per request from arrival to last token (0: none)")->capture_default_str()->check(CLI::Range(0.0, 1e7));
    c->add_option("--drain", o->drain, "On SIGTERM: seconds to let requests in flight finish")->capture_default_str()->check(CLI::Range(0.0, 1e5));
    c->add_option("--api-key", o->api_key, "Require 'Authorization: Bearer KEY' on /v1/* (or set ELASTIC_API_KEY)");
    c->add_option("--alias", o->alias, "Model name in /v1/models and responses (default: the file name)");
    c->add_option("-t,--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(1, 1 << 20));
    o->attn.add_to(c);
    o->backend.add_to(c);
    c->callback([o] { serve(*o); });
}

}  // namespace elastic::cli
