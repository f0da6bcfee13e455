// Runs one eval prompt through a Session: renders the prompt (chat template + answer prefix),
// prefills, decodes greedily (model/generate.h) to the sample's token budget or a stop token, and reports the
// attention statistics of the prefill (Ω_MSR, Ω_ESR, prefill time).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "attention/elastic.h"
#include "eval/sample.h"

namespace elastic {
class Engine;
class Tokenizer;
}  // namespace elastic

namespace elastic::eval {

// The text fed to the model: the chat template around `input` (when s.chat and the model has one)
// followed by the answer prefix (its leading space dropped after an assistant header).
std::string render_prompt(const Tokenizer& tok, const Sample& s);
std::vector<int32_t> prompt_ids(const Tokenizer& tok, const Sample& s);

// What an eval runs on: a model on a backend (with its router) and an attention mode.
struct Target {
    const Engine& engine;
    AttentionSpec spec;
};

struct Generation {
    std::string text;  // the generated continuation (special tokens skipped)
    int64_t prompt_tokens = 0;
    int64_t new_tokens = 0;
    double omega_msr = 0, omega_esr = 0;
    double prefill_seconds = 0, decode_seconds = 0;
    // The prefill's head modes, one letter per KV head (F = FA, S = SSA, X = XA), layers separated
    // by spaces: which heads the router (or the static plan) kept dense for this prompt.
    std::string plan;
};

// extra_stops: more ids that end generation (e.g. "\n" for samsum); min_new_tokens: stop ids are
// masked for the first tokens (HF min_length).
Generation generate(const Target& e, const std::vector<int32_t>& ids, int max_new_tokens,
                    const std::vector<int32_t>& extra_stops = {}, int min_new_tokens = 0);

}  // namespace elastic::eval
