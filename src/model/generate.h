// The generation loop, written once: prefill a prompt, then sample and decode token by token until
// a stop id, the token budget or the session's capacity. Used by run, eval, bench and inspect.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/model.h"
#include "model/sampler.h"

namespace elastic {

struct GenerateOptions {
    int max_new_tokens = 128;
    std::vector<int32_t> stop_ids;  // end generation (not part of the result)
    int min_new_tokens = 0;         // stop ids are banned for the first tokens (HF min_length)
    int32_t vocab_limit = 0;        // only ids [0, limit): a padded vocabulary's extra rows; 0 = all
    // Prefill all but the last prompt token, then run that one as a decode step: the first new
    // token then comes from a decode step (observers of decode steps see it).
    bool decode_last_prompt_token = false;
    // Copy every step's logits to the host (Session::last_logits() valid in the callback); off,
    // greedy and top-k sampling leave them on the backend.
    bool host_logits = false;
};

enum class StopReason { StopToken, MaxTokens, Context, Callback };
const char* stop_reason_name(StopReason r);

struct GenerateResult {
    std::vector<int32_t> tokens;  // the new tokens, stop id excluded
    StopReason reason = StopReason::MaxTokens;
    double prefill_seconds = 0, decode_seconds = 0;  // wall time of the prompt and of the new tokens
};

// Called for every sampled id (is_stop: it ends generation and is not kept); return false to stop
// after this token.
using TokenFn = std::function<bool(int32_t id, bool is_stop)>;

// s must be empty (pos() == 0) and hold prompt + max_new_tokens, or generation stops at its capacity.
GenerateResult generate(Session& s, const std::vector<int32_t>& prompt, Sampler& sampler, const GenerateOptions& o,
                        const TokenFn& on_token = nullptr);

}  // namespace elastic
