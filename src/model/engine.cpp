// Engine: a model's weights moved to a backend once (model.h). Tied embeddings share one matrix.
#include "core/error.h"
#include "model/model.h"

namespace elastic {

Engine::Engine(const Model& m, Backend& be, const Router* r) : model(m), backend(be), router(r) {
    const ModelConfig& c = m.config;
    const ModelWeights& w = m.weights;
    if (router && router->n_layer() != c.n_layer)
        fail("the router has %d layers, the model %d", router->n_layer(), c.n_layer);
    tok_embd = be.upload_matrix(w.tok_embd);
    output = w.output.data == w.tok_embd.data ? tok_embd : be.upload_matrix(w.output);
    out_norm = be.upload_vector(w.out_norm);
    inv_freq = be.upload_vector(m.inv_freq);
    layers.resize(size_t(c.n_layer));
    for (int l = 0; l < c.n_layer; ++l) {
        const LayerWeights& L = w.layers[size_t(l)];
        Layer& d = layers[size_t(l)];
        d.attn_norm = be.upload_vector(L.attn_norm);
        d.ffn_norm = be.upload_vector(L.ffn_norm);
        if (c.qk_norm) {
            d.q_norm = be.upload_vector(L.q_norm);
            d.k_norm = be.upload_vector(L.k_norm);
        }
        d.wq = be.upload_matrix(L.wq);
        d.wk = be.upload_matrix(L.wk);
        d.wv = be.upload_matrix(L.wv);
        d.wo = be.upload_matrix(L.wo);
        d.w_gate = be.upload_matrix(L.w_gate);
        d.w_up = be.upload_matrix(L.w_up);
        d.w_down = be.upload_matrix(L.w_down);
        if (router && router->has_layer(l)) {
            const RouterLayer& rl = router->layer(l);
            if (rl.head_dim() != c.head_dim)
                fail("the router of layer %d takes head_dim %d, the model has %d", l, rl.head_dim(), c.head_dim);
            d.router = be.upload_router(rl, c.n_kv_head);
        }
    }
}

Engine::~Engine() = default;

}  // namespace elastic
