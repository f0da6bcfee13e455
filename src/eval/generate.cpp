#include "eval/generate.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "attention/plan.h"
#include "core/error.h"
#include "model/generate.h"
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

Generation generate(const Target& e, const std::vector<int32_t>& ids, int max_new_tokens, const std::vector<int32_t>& extra_stops,
                    int min_new_tokens) {
    const ModelConfig& c = e.engine.model.config;
    if (ids.empty()) fail("eval: empty prompt");
    if (int64_t(ids.size()) > c.max_ctx)
        fail("eval: a prompt of %zu tokens exceeds the model's context of %d", ids.size(), c.max_ctx);
    const int64_t cap = std::min<int64_t>(c.max_ctx, int64_t(ids.size()) + max_new_tokens);
    Session s(e.engine, cap, e.spec);
    const Tokenizer& tok = e.engine.model.tok();
    GenerateOptions o;
    o.max_new_tokens = max_new_tokens;
    o.stop_ids = tok.stop_ids();
    o.stop_ids.insert(o.stop_ids.end(), extra_stops.begin(), extra_stops.end());
    o.min_new_tokens = min_new_tokens;
    o.vocab_limit = tok.vocab_size();  // a padded vocabulary's extra rows decode to nothing
    Sampler greedy(SamplerParams{});
    const GenerateResult r = generate(s, ids, greedy, o);
    Generation g;
    g.prompt_tokens = int64_t(ids.size());
    g.omega_msr = s.stats().omega_msr;
    g.omega_esr = s.stats().omega_esr;
    g.prefill_seconds = s.stats().prefill_seconds;
    g.decode_seconds = r.decode_seconds;
    g.new_tokens = int64_t(r.tokens.size());
    for (const auto& layer : s.stats().modes) {
        if (!g.plan.empty()) g.plan += ' ';
        for (HeadMode m : layer) g.plan += head_mode_name(m)[0];  // FA, SSA, XA -> F, S, X
    }
    g.text = tok.decode(r.tokens, /*skip_special=*/true);
    return g;
}

}  // namespace elastic::eval
