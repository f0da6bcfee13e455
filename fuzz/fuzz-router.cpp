// libFuzzer target for router files: a safetensors input read as layer 0's router (any head_dim);
// an accepted router must run its MLPs on two heads of pooled keys and decide for each.
#include <vector>

#include "attention/router.h"
#include "formats/safetensors.h"
#include "fuzz-common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const std::unique_ptr<elastic::SafetensorsFile> f = elastic::SafetensorsFile::parse(data, size, "fuzz");
        const elastic::Router r = elastic::Router::from_tensors(*f, "model.layers.0.self_attn.");
        const elastic::RouterLayer& l = r.layer(0);
        const int d = l.head_dim();
        const size_t weights = l.fe0.w.size() + l.fe2.w.size() + l.rh0.w.size() + l.rh2.w.size() + l.rh4.w.size();
        if (d <= 0 || d > 4096 || weights > (size_t(1) << 22)) return 0;  // accepted; too big to run per input
        std::vector<float> k(size_t(3) * 2 * size_t(d));
        for (size_t i = 0; i < k.size(); ++i) k[i] = float(int(i % 7) - 3) * 0.25f;
        const elastic::RouterDecision dec = r.route(0, k.data(), 3, 2, d);
        if (dec.full.size() != 2 || dec.prob_fa.size() != 2) __builtin_trap();
    } catch (const elastic::Error&) {
    }
    return 0;
}
