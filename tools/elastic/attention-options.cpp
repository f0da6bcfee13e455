#include "attention-options.h"

#include <sys/stat.h>

#include "core/error.h"
#include "formats/safetensors.h"
#include "model/model.h"

namespace elastic::cli {

void AttentionOptions::add_to(CLI::App* c) {
    c->add_option("--attention", mode,
                  "full | ssa | xa | fa-ssa | fa-xa | xa-ssa | static:FILE | msr:X (default: fa-ssa with a router, else full)");
    c->add_option("--router", router, "Router weights: a safetensors file or checkpoint directory (default: the model's own)");
    c->add_option("--sink", sink, "Streaming heads: sink tokens")->capture_default_str();
    c->add_option("--local", local, "Streaming heads: local window tokens")->capture_default_str();
    c->add_option("--xa-block", xa_block, "XAttention block size (64 or 128)")->capture_default_str();
    c->add_option("--xa-threshold", xa_threshold, "XAttention mass threshold")->capture_default_str();
    c->add_option("--msr", msr, "With static:FILE: share of the lowest-scoring heads made sparse");
}

namespace {
bool has_routers(const std::string& path) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
    auto ck = SafetensorsCheckpoint::open(path);
    return ck->find_tensor("model.layers.0.self_attn.mask_allocator.cls_feat_extractor.0.weight") != nullptr;
}
}  // namespace

AttentionSpec AttentionOptions::resolve(const Model& m, std::unique_ptr<Router>& r) const {
    if (sink < 0 || local < 1) fail("--sink must be >= 0 and --local >= 1");
    if (xa_block != 64 && xa_block != 128) fail("--xa-block must be 64 or 128");
    if (!(xa_threshold > 0 && xa_threshold <= 1)) fail("--xa-threshold must be in (0, 1]");
    std::string router_path = router;
    if (router_path.empty() && has_routers(m.path)) router_path = m.path;
    const std::string name = !mode.empty() ? mode : router_path.empty() ? "full" : "fa-ssa";
    AttentionSpec spec = AttentionSpec::parse(name, msr);
    spec.win.sink = sink;
    spec.win.local = local;
    spec.xa.block = xa_block;
    spec.xa.threshold = xa_threshold;
    if (spec.needs_router()) {
        if (router_path.empty()) fail("--attention %s needs a router: give --router PATH", name.c_str());
        r = std::make_unique<Router>(Router::load(router_path, m.config.n_layer, m.config.head_dim));
    }
    return spec;
}

}  // namespace elastic::cli
