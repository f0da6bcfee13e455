// `elastic serve` (src/server) and the batched decode under it (DecodeBatch). The server runs in
// this process on a free loopback port over a tiny random Qwen3 (real Qwen3 tokenizer and chat
// template from ../shared) with untrained routers, and the tests talk to it over HTTP. The real
// model's turn is tests/serve/test_openai.py.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "attention/elastic.h"
#include "attention/router.h"
#include "model/model.h"
#include "model/random-model.h"
#include "test-helpers.h"
#ifdef ELASTIC_HAVE_SERVER
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "server/server.h"
#endif

namespace elastic {
namespace {

using test::source_path;

// The tiny model and its router, made once for the whole suite.
struct Fixture {
    std::string dir;
    std::unique_ptr<Model> model;
    std::unique_ptr<Router> router;
    std::unique_ptr<Backend> backend;
    std::unique_ptr<Engine> engine;
};

Fixture& fixture() {
    static Fixture f = [] {
        Fixture x;
        char tmpl[] = "/tmp/elastic-serve-test-XXXXXX";
        x.dir = mkdtemp(tmpl);
        static std::string cleanup;
        cleanup = x.dir;
        std::atexit([] { std::filesystem::remove_all(cleanup); });
        RandomModelSpec s;
        s.arch = "tiny-qwen3";
        s.tokenizer = source_path("../shared/fixtures/tokenizers/qwen3");
        s.out = x.dir + "/model";
        write_random_model(s);
        x.model = Model::load(s.out);
        const std::string rp = x.dir + "/router.safetensors";
        const std::string cmd = std::string(ELASTIC_BINARY_DIR) + "/bin/elastic router-init -m " + s.out + " -o " + rp +
                                " --seed 3 > /dev/null 2>&1";
        if (std::system(cmd.c_str()) != 0) throw std::runtime_error("router-init failed");
        x.router = std::make_unique<Router>(Router::load(rp, x.model->config.n_layer, x.model->config.head_dim));
        x.backend = make_cpu_backend(1);
        x.engine = std::make_unique<Engine>(*x.model, *x.backend, x.router.get());
        return x;
    }();
    return f;
}

// Stacked decode rows give each session exactly its single-row decode: same sampled ids and the
// same logits bit for bit, for sessions at different positions, full and lean (fa-ssa, rings that
// wrap) caches, on bf16 weights (fp32 dot products) and on Q4_1 (int8 dot products).
TEST(DecodeBatch, EqualsSingleSessionDecodeBitForBit) {
    Fixture& f = fixture();
    const std::string q4 = f.dir + "/tiny-q4_1.gguf";
    const std::string cmd = std::string(ELASTIC_BINARY_DIR) + "/bin/elastic convert " + f.dir + "/model " + q4 +
                            " --type q4_1 --force > /dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    auto quant = Model::load(q4);
    for (const Model* m : {f.model.get(), quant.get()}) {
        auto be = make_cpu_backend(2);
        Engine eng(*m, *be, f.router.get());
        DecodeBatch batch(eng);
        ASSERT_EQ(batch.max_rows(), 4);
        for (const char* mode : {"full", "fa-ssa"}) {
            AttentionSpec spec = AttentionSpec::parse(mode);
            spec.win.sink = 4;
            spec.win.local = 8;
            const std::vector<int> lens = {5, 17, 30, 9};
            std::vector<std::unique_ptr<Session>> alone, batched;
            for (size_t i = 0; i < lens.size(); ++i) {
                std::vector<int32_t> prompt;
                for (int t = 0; t < lens[i]; ++t) prompt.push_back(int32_t((t * 7919 + int(i) * 104729) % 5000 + 10));
                for (auto* set : {&alone, &batched}) {
                    set->push_back(std::make_unique<Session>(eng, 128, spec));
                    set->back()->forward(prompt.data(), int64_t(prompt.size()));
                }
            }
            Sampler greedy(SamplerParams{});
            for (int step = 0; step < 12; ++step) {
                std::vector<Session*> ss;
                std::vector<int32_t> ids;
                for (size_t i = 0; i < lens.size(); ++i) {
                    const int32_t a = alone[i]->sample_next(greedy), b = batched[i]->sample_next(greedy);
                    ASSERT_EQ(a, b) << m->path << " " << mode << " session " << i << " step " << step;
                    ASSERT_EQ(std::memcmp(alone[i]->last_logits().data(), batched[i]->last_logits().data(),
                                          alone[i]->last_logits().size() * sizeof(float)),
                              0)
                        << m->path << " " << mode << " session " << i << " step " << step;
                    alone[i]->forward(&a, 1);
                    ss.push_back(batched[i].get());
                    ids.push_back(b);
                }
                batch.run(ss, ids.data());
            }
        }
    }
}

#ifdef ELASTIC_HAVE_SERVER
using json = nlohmann::json;

// A server on a free port, serving from a thread for the life of the object.
struct Running {
    std::unique_ptr<server::Server> srv;
    std::thread th;
    int port = 0;
    explicit Running(server::ServerOptions o) {
        o.port = 0;
        o.model_id = "tiny";
        o.spec = AttentionSpec::parse(o.spec.name.empty() ? "fa-ssa" : o.spec.name);
        o.spec.win.sink = 4;
        o.spec.win.local = 16;
        o.have_router = true;
        srv = std::make_unique<server::Server>(*fixture().engine, o);
        port = srv->bind();
        th = std::thread([this] { srv->run(); });
    }
    ~Running() {
        srv->shutdown(5);
        th.join();
    }
    httplib::Client client() const {
        httplib::Client c("127.0.0.1", port);
        c.set_read_timeout(120, 0);
        return c;
    }
};

server::ServerOptions opts(int parallel = 4, int queue = 16) {
    server::ServerOptions o;
    o.scheduler.parallel = parallel;
    o.scheduler.queue = queue;
    return o;
}

json post(const Running& r, const std::string& path, const json& body, int* status = nullptr) {
    auto c = r.client();
    auto res = c.Post(path.c_str(), body.dump(), "application/json");
    if (!res) return json{{"transport_error", int(res.error())}};
    if (status) *status = res->status;
    return json::parse(res->body);
}

std::string complete(const Running& r, const std::string& prompt, int max_tokens = 20) {
    int st = 0;
    json j = post(r, "/v1/completions", {{"prompt", prompt}, {"temperature", 0}, {"max_tokens", max_tokens}}, &st);
    EXPECT_EQ(st, 200) << j.dump();
    return j["choices"][0]["text"].get<std::string>();
}

const std::vector<std::string> kPrompts = {
    "The quick brown fox", "In a hole in the ground there lived", "def fibonacci(n):", "1, 2, 3, 4,",
    "Once upon a time, in a kingdom far away, there was a long story about many things", "Hello", "Paris is",
    "The answer is"};

// Continuous batching must not change what a request gets: at temperature 0, eight requests sent
// together (four decoding at once, prefills interleaved with decode rounds) return exactly what
// each returns alone.
TEST(Serve, BatchedOutputEqualsSingle) {
    std::vector<std::string> alone;
    {
        Running r(opts(1, 16));
        for (const auto& p : kPrompts) alone.push_back(complete(r, p, 24));
    }
    Running r(opts(4, 16));
    std::vector<std::string> together(kPrompts.size());
    std::vector<std::thread> th;
    for (size_t i = 0; i < kPrompts.size(); ++i) th.emplace_back([&, i] { together[i] = complete(r, kPrompts[i], 24); });
    for (auto& t : th) t.join();
    for (size_t i = 0; i < kPrompts.size(); ++i) {
        EXPECT_FALSE(alone[i].empty()) << kPrompts[i];
        EXPECT_EQ(together[i], alone[i]) << kPrompts[i];
    }
}

// Streaming (SSE) gives the same text as the whole response, ends with [DONE], and its last chunk
// carries the routing map: one row per layer, one letter per KV head.
TEST(Serve, StreamEqualsWholeAndCarriesTheRoutingMap) {
    Running r(opts());
    const json req = {{"prompt", "The quick brown fox"}, {"temperature", 0}, {"max_tokens", 16}};
    const std::string whole = complete(r, "The quick brown fox", 16);
    json sreq = req;
    sreq["stream"] = true;
    sreq["stream_options"] = {{"include_usage", true}};
    auto c = r.client();
    auto res = c.Post("/v1/completions", sreq.dump(), "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_NE(res->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
    std::string text, body = res->body;
    json last, usage;
    bool done = false;
    for (size_t at = 0; (at = body.find("data: ", at)) != std::string::npos;) {
        const size_t end = body.find("\n\n", at);
        const std::string data = body.substr(at + 6, end - at - 6);
        at = end;
        if (data == "[DONE]") {
            done = true;
            continue;
        }
        json j = json::parse(data);
        if (j.contains("usage")) usage = j["usage"];
        else {
            text += j["choices"][0]["text"].get<std::string>();
            if (!j["choices"][0]["finish_reason"].is_null()) last = j;
        }
    }
    EXPECT_TRUE(done);
    EXPECT_EQ(text, whole);
    ASSERT_TRUE(last.contains("elastic")) << last.dump();
    const Model& m = *fixture().model;
    ASSERT_EQ(last["elastic"]["routing"].size(), size_t(m.config.n_layer));
    for (const auto& row : last["elastic"]["routing"]) EXPECT_EQ(row.get<std::string>().size(), size_t(m.config.n_kv_head));
    EXPECT_EQ(usage["completion_tokens"].get<int>() + usage["prompt_tokens"].get<int>(), usage["total_tokens"].get<int>());
    EXPECT_EQ(usage["elastic"]["heads_full"].get<int>() + usage["elastic"]["heads_sparse"].get<int>(),
              m.config.n_layer * m.config.n_kv_head);
}

// Chat: the chat template from tokenizer_config.json, OpenAI's response shape, and a per-request
// attention override that the loaded router allows (msr forces Ω_MSR).
TEST(Serve, ChatAndPerRequestAttention) {
    Running r(opts());
    int st = 0;
    json j = post(r, "/v1/chat/completions",
                  {{"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}}},
                   {"temperature", 0},
                   {"max_tokens", 5},
                   {"elastic", {{"msr", 0.5}}}},
                  &st);
    ASSERT_EQ(st, 200) << j.dump();
    EXPECT_EQ(j["object"], "chat.completion");
    EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
    EXPECT_NEAR(j["usage"]["elastic"]["omega_msr"].get<double>(), 0.5, 0.5 / fixture().model->config.n_kv_head + 1e-9);
    json full = post(r, "/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 2}, {"elastic", {{"attention", "full"}}}}, &st);
    ASSERT_EQ(st, 200) << full.dump();
    EXPECT_EQ(full["usage"]["elastic"]["omega_msr"].get<double>(), 0.0);
    EXPECT_EQ(full["usage"]["elastic"]["heads_sparse"].get<int>(), 0);
}

// Every malformed request gets one OpenAI-style error with the right status, and the server
// keeps serving afterwards.
TEST(Serve, MalformedRequestsGetOneErrorEach) {
    server::ServerOptions o = opts();
    o.max_body = 64 * 1024;
    o.max_tokens = 100;
    o.ctx = 256;
    Running r(o);
    auto c = r.client();
    struct Case {
        std::string body;
        int status;
        std::string needle;
    };
    const std::string big(100 * 1024, 'a');
    const std::vector<Case> cases = {
        {"{bad", 400, "not valid JSON"},
        {"[1,2]", 400, "JSON object"},
        {R"({"prompt": 5})", 400, "'prompt' must be"},
        {R"({"prompt": "x", "max_tokens": "ten"})", 400, "'max_tokens' must be an integer"},
        {R"({"prompt": "x", "max_tokens": 1e300})", 400, "max_tokens"},
        {R"({"prompt": "x", "max_tokens": 123456789012345678901234567890})", 400, "max_tokens"},
        {R"({"prompt": "x", "max_tokens": 101})", 400, "limit of 100"},
        {R"({"prompt": "x", "temperature": -1})", 400, "'temperature' must be between"},
        {R"({"prompt": "x", "n": 2})", 400, "n"},
        {R"({"prompt": "x", "stop": [1]})", 400, "'stop'"},
        {R"({"prompt": "x", "stream": "yes"})", 400, "'stream' must be true or false"},
        {R"({"prompt": "x", "elastic": {"attention": "static:/etc/passwd"}})", 400, "refused"},
        {R"({"prompt": [999999999]})", 400, "token ids"},
        {std::string("{\"prompt\": \"\xff\xfe\"}"), 400, "UTF-8"},
        {R"({"prompt": ")" + big + R"("})", 413, "larger than"},
        {R"({"prompt": ")" + std::string(3000, 'x') + R"( "})", 400, "context_length_exceeded"},
    };
    for (const Case& k : cases) {
        auto res = c.Post("/v1/completions", k.body, "application/json");
        ASSERT_TRUE(res) << k.body.substr(0, 80);
        EXPECT_EQ(res->status, k.status) << k.body.substr(0, 80) << " -> " << res->body;
        json j = json::parse(res->body, nullptr, false);
        ASSERT_TRUE(j.is_object() && j.contains("error")) << res->body;
        EXPECT_NE(j.dump().find(k.needle), std::string::npos) << k.body.substr(0, 80) << " -> " << res->body;
    }
    auto chat = c.Post("/v1/chat/completions", R"({"messages": [{"role": "robot", "content": "x"}]})", "application/json");
    ASSERT_TRUE(chat);
    EXPECT_EQ(chat->status, 400);
    EXPECT_NE(chat->body.find("messages[0].role"), std::string::npos) << chat->body;
    auto nf = c.Get("/v2/nothing");
    ASSERT_TRUE(nf);
    EXPECT_EQ(nf->status, 404);
    EXPECT_NE(nf->body.find("\"error\""), std::string::npos);
    EXPECT_FALSE(complete(r, "still serving", 4).empty());
}

// API key: /v1/* needs the Bearer key (401 without it); /health stays open.
TEST(Serve, ApiKey) {
    server::ServerOptions o = opts();
    o.api_key = "sekret";
    Running r(o);
    auto c = r.client();
    auto no = c.Get("/v1/models");
    ASSERT_TRUE(no);
    EXPECT_EQ(no->status, 401);
    EXPECT_NE(no->body.find("invalid_api_key"), std::string::npos);
    auto wrong = c.Get("/v1/models", {{"Authorization", "Bearer sekreT"}});
    ASSERT_TRUE(wrong);
    EXPECT_EQ(wrong->status, 401);
    auto yes = c.Get("/v1/models", {{"Authorization", "Bearer sekret"}});
    ASSERT_TRUE(yes);
    EXPECT_EQ(yes->status, 200);
    EXPECT_EQ(json::parse(yes->body)["data"][0]["id"], "tiny");
    auto health = c.Get("/health");
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);
}

// A full queue answers 429 with Retry-After; a client that leaves cancels its generation (the
// sequence is freed: nothing is left running); /metrics counts both.
TEST(Serve, QueueFullAndCancel) {
    Running r(opts(1, 0));
    std::atomic<bool> stop{false};
    std::thread slow([&] {
        auto c = r.client();
        // Streams 2000 tokens unless the receiver gives up, which it does once `stop` is set.
        httplib::Request req;
        req.method = "POST";
        req.path = "/v1/completions";
        req.body = json{{"prompt", "count"}, {"max_tokens", 2000}, {"stream", true}, {"temperature", 0}}.dump();
        req.set_header("Content-Type", "application/json");
        req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return !stop.load(); };
        httplib::Response res;
        httplib::Error err;
        c.send(req, res, err);
    });
    auto c = r.client();
    int running = 0;
    for (int i = 0; i < 200 && running == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        running = json::parse(c.Get("/health")->body)["running"].get<int>();
    }
    ASSERT_EQ(running, 1);
    auto busy = c.Post("/v1/completions", R"({"prompt": "x", "max_tokens": 2})", "application/json");
    ASSERT_TRUE(busy);
    EXPECT_EQ(busy->status, 429) << busy->body;
    EXPECT_EQ(busy->get_header_value("Retry-After"), "1");
    stop = true;
    slow.join();
    for (int i = 0; i < 200 && running != 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        running = json::parse(c.Get("/health")->body)["running"].get<int>();
    }
    EXPECT_EQ(running, 0);
    const std::string m = c.Get("/metrics")->body;
    EXPECT_NE(m.find("elastic_jobs_cancelled_total 1"), std::string::npos) << m;
    EXPECT_NE(m.find("code=\"429\"} 1"), std::string::npos) << m;
    EXPECT_FALSE(complete(r, "after", 3).empty());
}

// Shutdown drains: a request in flight still completes; new ones get 503.
TEST(Serve, ShutdownDrainsInFlight) {
    auto r = std::make_unique<Running>(opts(2, 4));
    std::string text;
    int status = 0;
    std::thread inflight([&] {
        json j = post(*r, "/v1/completions", {{"prompt", "drain"}, {"max_tokens", 60}, {"temperature", 0}}, &status);
        if (status == 200) text = j["choices"][0]["text"];
    });
    auto c = r->client();
    for (int i = 0; i < 200; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        if (json::parse(c.Get("/health")->body)["running"].get<int>() > 0) break;
    }
    std::thread down([&] { r->srv->shutdown(30); });
    // Wait for the drain to begin (not a fixed sleep: on a loaded machine the thread may start late).
    for (int i = 0; i < 500 && !r->srv->draining(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_TRUE(r->srv->draining());
    auto late = c.Post("/v1/completions", R"({"prompt": "x", "max_tokens": 2})", "application/json");
    if (late) {  // (or refused outright once the socket closed)
        EXPECT_EQ(late->status, 503) << late->body;
    }
    down.join();
    inflight.join();
    EXPECT_EQ(status, 200);
    EXPECT_FALSE(text.empty());
    r->th.join();
    r->th = std::thread([] {});
}

#endif  // ELASTIC_HAVE_SERVER

}  // namespace
}  // namespace elastic
