// Internal to the data builder: one task's sample before its final length check. A draft is an
// instruction (head), context units joined by `sep`, a question (tail) and the answer (raw drafts:
// no head or tail, the units are the text the answer continues); units marked
// `keep` (needles, the sentence being continued) are never dropped when the sample must shrink.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "eval/random.h"
#include "train/data.h"

namespace elastic::train::detail {

struct Draft {
    std::string head, tail, answer, sep = "\n\n";
    std::vector<std::string> units;
    std::vector<bool> keep;
    bool drop_front = false;  // shrink by dropping the first droppable unit (else the last)
    SampleFormat format = SampleFormat::Chat;
    std::string prompt() const;
};

// What generators share: the tokenizer, the sources and the token counts of prose paragraphs.
class TaskContext {
public:
    TaskContext(const Tokenizer& tok, const TrainSources& src) : tok(tok), src(src), par_tokens_(src.paragraphs.size(), -1) {}
    int64_t tokens(const std::string& text) const;  // plain text, no specials
    int64_t paragraph_tokens(size_t i);              // cached
    int64_t fixed_tokens(const Draft& d) const;     // the sample with no context units

    const Tokenizer& tok;
    const TrainSources& src;

private:
    std::vector<int32_t> par_tokens_;
};

// A draft of about `target` tokens (as sample_tokens counts) for `task` (data-sensitive.cpp,
// data-robust.cpp).
Draft make_sensitive_draft(const std::string& task, int64_t target, eval::Rng& r, TaskContext& ctx);
Draft make_robust_draft(const std::string& task, int64_t target, eval::Rng& r, TaskContext& ctx);

}  // namespace elastic::train::detail
