// generate(): see generate.h.
#include "model/generate.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace elastic {

const char* stop_reason_name(StopReason r) {
    switch (r) {
        case StopReason::StopToken: return "stop token";
        case StopReason::MaxTokens: return "token budget";
        case StopReason::Context: return "context full";
        case StopReason::Callback: return "stopped by caller";
    }
    return "?";
}

GenerateResult generate(Session& s, const std::vector<int32_t>& prompt, Sampler& sampler, const GenerateOptions& o,
                        const TokenFn& on_token) {
    if (prompt.empty()) fail("generate: empty prompt");
    if (s.pos() != 0) fail("generate: the session already holds %lld tokens", (long long)s.pos());
    if (int64_t(prompt.size()) > s.capacity())
        fail("generate: the prompt has %zu tokens, more than the context of %lld", prompt.size(), (long long)s.capacity());
    using clock = std::chrono::steady_clock;
    // Greedy / top-k / top-p choose on the backend: the logits need not come to the host (top-p
    // fetches them itself when its nucleus is too wide for the backend).
    s.set_host_logits(o.host_logits ||
                      !(sampler.uses_candidates(Backend::kMaxCandidates - int(o.stop_ids.size())) || sampler.uses_sorted()));
    GenerateResult r;
    const auto t0 = clock::now();
    const int64_t n = int64_t(prompt.size());
    if (o.decode_last_prompt_token && n > 1) {
        s.forward(prompt.data(), n - 1);
        s.forward(&prompt.back(), 1);
    } else {
        s.forward(prompt.data(), n);
    }
    const auto t1 = clock::now();
    r.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    r.reason = StopReason::MaxTokens;
    for (int i = 0; i < o.max_new_tokens; ++i) {
        const bool ban = i < o.min_new_tokens;
        const int32_t next = s.sample_next(sampler, o.vocab_limit, ban ? o.stop_ids : std::vector<int32_t>{});
        const bool stop = std::find(o.stop_ids.begin(), o.stop_ids.end(), next) != o.stop_ids.end();
        const bool go_on = on_token ? on_token(next, stop) : true;
        if (stop) {
            r.reason = StopReason::StopToken;
            break;
        }
        r.tokens.push_back(next);
        if (!go_on) {
            r.reason = StopReason::Callback;
            break;
        }
        if (i + 1 == o.max_new_tokens) break;
        if (s.pos() >= s.capacity()) {
            r.reason = StopReason::Context;
            break;
        }
        s.forward(&next, 1);
    }
    r.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
    return r;
}

}  // namespace elastic
