#include "eval/generate.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "core/error.h"
#include "model/model.h"

namespace elastic::eval {

std::string render_prompt(const Tokenizer& tok, const Sample& s) {
    if (s.chat && tok.chat_template() != ChatTemplate::None) {
        std::string prefix = s.answer_prefix;
        if (!prefix.empty() && prefix[0] == ' ') prefix.erase(0, 1);
        return tok.apply_chat_template({{"user", s.input}}, true) + prefix;
    }
    return s.input + s.answer_prefix;
}

std::vector<int32_t> prompt_ids(const Tokenizer& tok, const Sample& s) { return tok.encode(render_prompt(tok, s)); }

Generation generate(const Engine& e, const std::vector<int32_t>& ids, int max_new_tokens, const std::vector<int32_t>& extra_stops,
                    int min_new_tokens) {
    const ModelConfig& c = e.model.config;
    if (ids.empty()) fail("eval: empty prompt");
    const int64_t cap = std::min<int64_t>(c.max_ctx, int64_t(ids.size()) + max_new_tokens);
    if (int64_t(ids.size()) > c.max_ctx)
        fail("eval: a prompt of %zu tokens exceeds the model's context of %d", ids.size(), c.max_ctx);
    Session s(e.model, e.backend, cap, e.spec, e.router);
    Generation g;
    g.prompt_tokens = int64_t(ids.size());
    s.forward(ids.data(), int64_t(ids.size()));
    const AttentionStats& st = s.stats();
    g.omega_msr = st.omega_msr;
    g.omega_esr = st.omega_esr;
    g.prefill_seconds = st.prefill_seconds;
    const auto t0 = std::chrono::steady_clock::now();
    const Tokenizer& tok = e.model.tok();
    std::vector<int32_t> stops = tok.stop_ids();
    stops.insert(stops.end(), extra_stops.begin(), extra_stops.end());
    std::vector<int32_t> out;
    std::vector<float> logits;
    for (int i = 0; i < max_new_tokens; ++i) {
        logits = s.last_logits();
        if (i < min_new_tokens)
            for (int32_t id : stops)
                if (id >= 0 && id < c.vocab) logits[size_t(id)] = -std::numeric_limits<float>::infinity();
        // Only ids the tokenizer has (a padded vocabulary's extra rows decode to nothing).
        const int32_t next = int32_t(std::max_element(logits.begin(), logits.begin() + tok.vocab_size()) - logits.begin());
        if (std::find(stops.begin(), stops.end(), next) != stops.end()) break;
        out.push_back(next);
        if (s.pos() >= cap || i + 1 == max_new_tokens) break;
        s.forward(&next, 1);
    }
    g.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    g.new_tokens = int64_t(out.size());
    g.text = tok.decode(out, /*skip_special=*/true);
    return g;
}

}  // namespace elastic::eval
