// libFuzzer target for the request bodies of `elastic serve` (server/request.h): input = one byte
// choosing the endpoint (even: chat, odd: completions), then the body. Every body is either
// accepted (a job within the limits) or refused with one ApiError of a 4xx status; anything else is
// a bug. The real tokenizer (SmolLM2's chat template) renders and tokenises the prompts.
#include "fuzz-common.h"
#include "server/request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const elastic::Tokenizer& tok = elastic::fuzz::real_tokenizer();
    static const elastic::server::ServerOptions opts = [] {
        elastic::server::ServerOptions o;
        o.ctx = 2048;
        o.max_tokens = 512;
        o.spec = elastic::AttentionSpec::parse("fa-ssa");
        o.have_router = true;
        return o;
    }();
    const bool chat = (data[0] & 1) == 0;
    const std::string body = elastic::fuzz::as_string(data + 1, size - 1);
    try {
        const elastic::server::ParsedRequest p = elastic::server::parse_request(body, chat, tok, opts, 1);
        const elastic::server::JobRequest& j = p.job;
        if (j.prompt.empty() || int64_t(j.prompt.size()) >= opts.ctx || j.max_tokens < 1 || j.max_tokens > opts.max_tokens ||
            int64_t(j.prompt.size()) + j.max_tokens > opts.ctx || j.stop.size() > 4)
            std::abort();  // accepted outside the limits
        for (int32_t id : j.prompt)
            if (id < 0 || id >= tok.vocab_size()) std::abort();
    } catch (const elastic::server::ApiError& e) {
        if (e.status < 400 || e.status >= 500 || e.message.empty()) std::abort();
    }
    return 0;
}
