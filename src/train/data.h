// The router training mix (DESIGN.md §1.4): task-labelled (prompt, answer) pairs built offline from
// a seed and text installed on the machine. Sparsity-sensitive tasks need tokens far back in the
// context (retrieval, multi-hop variables, QA over a haystack); sparsity-robust tasks need mostly
// local context (continuation of prose, a summary-like lead sentence, next line of code).
// Templates, keys, values and haystack sources are disjoint from src/eval's (docs/training-data.md).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace elastic {
class Tokenizer;
}

namespace elastic::train {

// Real prose other than eval's /usr/share/common-licenses, and the headers eval's code corpus
// leaves out of /usr/include (eval reads only its first kEvalCodeBytes).
constexpr const char* kDefaultTrainProseDir = "/usr/share/doc";
constexpr const char* kDefaultTrainCodeDir = "/usr/include";
constexpr size_t kEvalCodeBytes = 8u << 20;  // tools/elastic/cmd-eval.cpp: load_corpus(code_dir, ..., 8 MiB)

// How a sample is fed: Chat wraps the prompt in the model's chat template and ends the answer with
// the end-of-turn id (instructions, RULER-like prompts); Raw is plain text continued by the answer,
// as eval's robust tasks feed it (ppl-prose, ppl-code, code-next-line: no template, no BOS).
enum class SampleFormat { Chat, Raw };

struct TextSample {
    std::string prompt, answer, task;
    std::string category;  // "sensitive" or "robust"
    SampleFormat format = SampleFormat::Chat;
};

struct DataBuildOptions {
    int64_t tokens = 1000000;  // total tokens to write (prompt + answer, as sample_tokens counts)
    int64_t max_seq = 4096;    // every sample's tokens <= max_seq
    int64_t min_seq = 0;       // 0: max_seq / 8; lengths are drawn uniformly in [min_seq, max_seq]
    uint64_t seed = 0;
    double sensitive_share = 0.5;  // share of tokens from sparsity-sensitive tasks
    std::string prose_dir = kDefaultTrainProseDir, code_dir = kDefaultTrainCodeDir;
    size_t max_source_bytes = 48u << 20;  // per source, read in path order
};

const std::vector<std::string>& sensitive_train_tasks();  // kv-single, kv-multi, var-chain, haystack-qa
// prose-continue, prose-lead, code-complete (chat), prose-raw, code-raw (raw)
const std::vector<std::string>& robust_train_tasks();
// "sensitive" or "robust"; throws Error for an unknown task.
const std::string& task_category(const std::string& task);

// Tokens the trainer feeds for a sample (render_sample's prompt and answer ids together).
int64_t sample_tokens(const Tokenizer& tok, const TextSample& s);
// The token ids a sample trains on, as sample_tokens counts them. Chat: the prompt in the model's
// chat template (when it has one) as a user turn, then the answer and the end-of-turn id (the first
// stop id). Raw: the prompt's text tokens as eval's raw path encodes plain text (no BOS, no
// template, special-token text not parsed), then the answer's, and no end-of-turn id. The trainer
// and the length bound of `data build` use this one rendering.
void render_sample(const Tokenizer& tok, const TextSample& s, std::vector<int32_t>& prompt_ids, std::vector<int32_t>& answer_ids);

// The text a mix is drawn from, after leaving out everything eval reads.
struct TrainSources {
    std::vector<std::string> prose_files, code_files;  // paths read, sorted
    std::vector<std::string> paragraphs;  // prose paragraphs, in file order, deduplicated
    std::vector<uint32_t> paragraph_doc;  // index into prose_files
    std::string code;                     // code files joined by blank lines
    size_t dropped_eval_overlap = 0;      // paragraphs left out because they share a 12-word run with eval's prose
};
// Throws Error when a directory is missing or holds too little usable text for max_seq.
TrainSources load_train_sources(const DataBuildOptions& o);
// Paths eval reads with its default corpora (canonical), for the disjointness checks.
std::vector<std::string> eval_source_files();

struct BuildStats {
    int64_t samples = 0, tokens = 0, sensitive_tokens = 0;
    std::map<std::string, int64_t> per_task;
};
using SampleSink = std::function<void(const TextSample&, int64_t tokens, const BuildStats& so_far)>;
// Streams samples until `tokens` are reached; the same options give the same samples in the same order.
BuildStats build_training_mix(const DataBuildOptions& o, const Tokenizer& tok, const TrainSources& src, const SampleSink& sink);
std::vector<TextSample> build_training_mix(const DataBuildOptions& o, const Tokenizer& tok);

// One JSONL line (no newline): {"prompt":…,"answer":…,"task":…,"category":…}, then "format":"raw"
// for a raw sample (a chat sample has no format field, so chat-only files keep their bytes).
std::string to_json_line(const TextSample& s);

// One line of the format: "" and s filled, or the reason the line is bad (not JSON, not an object,
// a missing or non-string field, an unknown category, a "format" other than the string "chat" or
// "raw"; an absent format is chat). Shared by both readers.
std::string parse_text_sample(const std::string& line, TextSample& s);

// Reads a JSONL mix. A line that is not a JSON object, lacks a string field, has an unknown category
// or is longer than max_seq tokens is an Error naming the file and line; with skip_bad it is skipped
// and counted in *skipped instead. Blank lines are ignored.
std::vector<TextSample> read_training_data(const std::string& path, int64_t max_seq, const Tokenizer& tok, bool skip_bad,
                                            int64_t* skipped);

}  // namespace elastic::train
