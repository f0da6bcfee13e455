// `elastic random-model`: an HF model directory with random weights, shaped like Qwen3-8B or
// Llama-3.1-8B (or tiny), for end-to-end benchmarks where the real weights cannot be downloaded.
#include <cstdio>

#include "commands.h"
#include "core/error.h"
#include "model/random-model.h"

namespace elastic::cli {

void add_random_model(CLI::App& app) {
    auto o = std::make_shared<RandomModelSpec>();
    auto shard_mb = std::make_shared<double>(5000.0);
    CLI::App* c = app.add_subcommand("random-model", "Write an HF model directory with random weights (for benchmarks)");
    c->add_option("--arch", o->arch, "Preset: qwen3-8b, llama-3.1-8b or tiny-qwen3 (64 wide, 2 layers, Qwen3 vocabulary)")
        ->capture_default_str();
    c->add_option("-o,--out", o->out, "Output directory (missing or empty, unless --force)")->required();
    c->add_option("--tokenizer", o->tokenizer,
                  "tokenizer.json (or a directory holding one) to copy, with the tokenizer_config.json beside it")
        ->required();
    c->add_option("--dtype", o->dtype, "Weight type: bf16 or f32")->capture_default_str();
    c->add_option("--seed", o->seed, "Random seed")->capture_default_str();
    c->add_option("--layers", o->layers, "Override the preset's number of layers");
    c->add_option("--vocab", o->vocab, "Override the preset's vocabulary size (at least the tokenizer's)");
    c->add_option("--heads", o->heads, "Override the preset's query heads");
    c->add_option("--kv-heads", o->kv_heads, "Override the preset's key/value heads (must divide the query heads)");
    c->add_option("--shard-mb", *shard_mb, "Largest shard in MB (10^6 bytes)")->capture_default_str();
    c->add_flag("--force", o->force, "Write into a non-empty directory (its config.json and model*.safetensors* are removed first)");
    c->footer(
        "Writes config.json, generation_config.json, tokenizer.json (+ tokenizer_config.json) and sharded\n"
        "safetensors (model-0000i-of-0000N.safetensors + model.safetensors.index.json) that `elastic run`,\n"
        "`bench model` and `router-init` load like a downloaded model. Matrices are near-normal with std 0.02,\n"
        "norm weights 1; the same seed gives the same files. Weights are generated while they are written\n"
        "(memory: a few 64 MB buffers); one progress line per shard on stderr.\n"
        "Example: elastic random-model --arch qwen3-8b --tokenizer qwen3/tokenizer.json -o /tmp/qwen3-8b-random");
    c->callback([o, shard_mb] {
        if (!(*shard_mb > 0)) fail("random-model: --shard-mb must be positive");
        o->max_shard_bytes = uint64_t(*shard_mb * 1e6);
        if (o->max_shard_bytes == 0) o->max_shard_bytes = 1;
        write_random_model(*o, [](const std::string& line) {
            std::fprintf(stderr, "%s\n", line.c_str());
            std::fflush(stderr);
        });
    });
}

}  // namespace elastic::cli
