// `elastic serve`: an OpenAI-compatible HTTP server (cpp-httplib) over the Scheduler. Endpoints:
// GET /v1/models, POST /v1/chat/completions and /v1/completions (SSE streaming or not), GET /health,
// GET /metrics (Prometheus text), GET / (a chat page that draws each answer's routing map).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "attention/elastic.h"
#include "model/model.h"
#include "server/scheduler.h"

namespace elastic::server {

struct ServerOptions {
    std::string host = "127.0.0.1";
    int port = 8080;                     // 0: any free port (bind() returns it)
    std::string api_key;                 // non-empty: /v1/* needs "Authorization: Bearer KEY"
    std::string model_id;                // the name /v1/models lists and responses carry
    int64_t ctx = 0;                     // tokens per request (prompt + completion); 0: the model's
    int max_tokens = 4096;               // largest max_tokens a request may ask for
    int default_max_tokens = 256;        // when a request gives none
    size_t max_body = 4u << 20;          // bytes; larger bodies get 413
    double timeout_seconds = 600;        // per request, submission to last token; 0: none
    int http_threads = 0;                // 0: parallel + queue + 16
    AttentionSpec spec;                  // the default attention of every request
    bool have_router = false;            // routed modes may be asked for per request
    SchedulerOptions scheduler;
};

class Server {
public:
    Server(const Engine& engine, ServerOptions o);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Binds the listening socket; returns the port (the chosen one for port 0). Error if it cannot.
    int bind();
    // Serves until shutdown(); call after bind().
    void run();
    // Refuses new requests (503), waits up to drain_seconds for those in flight, then stops run().
    void shutdown(double drain_seconds);
    bool draining() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The page served at `/` (page.cpp).
const char* chat_page_html();

}  // namespace elastic::server
