// Benchmark of the fused hybrid prefill kernel and the lean-cache decode (DESIGN.md §4 shapes:
// 32 query / 8 KV heads, d 128, bf16, batch 1). Prefill: per sequence length and Ω_MSR (share of
// KV heads in SSA, sink 128 / local 2048, the rest FA), the median of ≥ 20 timed launches
// (cudaEvent, after warm-up, inputs rotated over several buffers so L2 does not hold them),
// TFLOP/s over attended pairs (4·d FLOPs per pair: QKᵀ and PV), the attended density, and our
// fraction of the ideal t_dense × ((1 − Ω) + Ω · density_SSA) with t_dense our own Ω = 0 time.
// Decode: one token at context N, all-FA vs FA-SSA, time, tok/s of one layer's attention,
// KV bytes read and achieved GB/s.
//
//   build-cuda/bin/bench-attention-cuda [--seqs 8192,32768,131072] [--omegas 0,0.25,0.5,0.75,1]
//       [--iters 20] [--warmup 5] [--decode-ctx 32768,131072] [--decode-omega 0.75] [--json out.json]
//       [--block-m 64|128] [--block-n 32|64] [--heads 32 --kv-heads 8 --head-dim 128 --sink 128 --local 2048]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "attention/hybrid-attention.h"
#include "cuda/attention-common.cuh"
#include "cuda/attention.h"

using namespace elastic;

namespace {

__global__ void fill_random(__nv_bfloat16* x, int64_t n, uint32_t seed) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 2654435761u ^ seed;
        h ^= h >> 16;
        h *= 2246822519u;
        h ^= h >> 13;
        x[i] = __float2bfloat16((float(h & 0xffffff) / float(0x1000000) - 0.5f) * 3.46f);  // var ≈ 1
    }
}
__global__ void fill_random_f32(float* x, int64_t n, uint32_t seed) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 2654435761u ^ seed;
        h ^= h >> 16;
        h *= 2246822519u;
        h ^= h >> 13;
        x[i] = (float(h & 0xffffff) / float(0x1000000) - 0.5f) * 3.46f;
    }
}

std::vector<double> parse_list(const char* s) {
    std::vector<double> v;
    for (const char* p = s; *p;) {
        v.push_back(std::atof(p));
        const char* c = std::strchr(p, ',');
        if (!c) break;
        p = c + 1;
    }
    return v;
}

double median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

LayerPlan fa_ssa_plan(int n_kv, double omega) {
    LayerPlan plan;
    const int n_ssa = int(std::lround(omega * n_kv));
    for (int g = 0; g < n_kv; ++g) plan.mode.push_back(g < n_kv - n_ssa ? HeadMode::FA : HeadMode::SSA);
    plan.xa.resize(size_t(n_kv));
    return plan;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<double> seqs = {8192, 32768, 131072}, omegas = {0, 0.25, 0.5, 0.75, 1}, dctx = {32768, 131072};
    int iters = 20, warmup = 5, Hq = 32, Hkv = 8, d = 128, block_m = 0, block_n = 0;
    double dec_omega = 0.75;
    const char* json = nullptr;
    StreamingWindow win{128, 2048};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> const char* {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "missing value for %s\n", a.c_str());
                std::exit(1);
            }
            return argv[++i];
        };
        if (a == "--seqs") seqs = parse_list(next());
        else if (a == "--omegas") omegas = parse_list(next());
        else if (a == "--iters") iters = std::max(20, std::atoi(next()));
        else if (a == "--warmup") warmup = std::atoi(next());
        else if (a == "--decode-ctx") dctx = parse_list(next());
        else if (a == "--decode-omega") dec_omega = std::atof(next());
        else if (a == "--heads") Hq = std::atoi(next());
        else if (a == "--kv-heads") Hkv = std::atoi(next());
        else if (a == "--head-dim") d = std::atoi(next());
        else if (a == "--sink") win.sink = std::atoll(next());
        else if (a == "--local") win.local = std::atoll(next());
        else if (a == "--json") json = next();
        else if (a == "--block-m") block_m = std::atoi(next());  // 64 / 128 (0: the kernel's choice)
        else if (a == "--block-n") block_n = std::atoi(next());  // 32 / 64 (0: the kernel's choice)
        else {
            std::fprintf(stderr, "unknown argument %s\n", a.c_str());
            return 1;
        }
    }
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device %s, %d SMs; %d/%d heads, d %d, bf16, batch 1, sink %lld local %lld\n", prop.name,
                prop.multiProcessorCount, Hq, Hkv, d, (long long)win.sink, (long long)win.local);
    std::string js = "{\"device\": \"" + std::string(prop.name) + "\", \"block_m\": " + std::to_string(block_m) + ", \"block_n\": " + std::to_string(block_n) +
                     ", \"heads\": " + std::to_string(Hq) + ", \"kv_heads\": " + std::to_string(Hkv) +
                     ", \"head_dim\": " + std::to_string(d) + ", \"prefill\": [";
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreate(&s));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    const float scale = 1.0f / std::sqrt(float(d));
    bool first_rec = true;

    std::printf("\n%8s %6s %10s %9s %9s %8s %10s %9s\n", "seq", "Ω", "ms", "min", "TFLOP/s", "density", "ideal ms",
                "of ideal");
    for (double sd : seqs) {
        const int64_t T = int64_t(sd);
        const int64_t nq = T * Hq * d, nk = T * Hkv * d;
        const double set_bytes = double(2 * nq + 2 * nk) * 2;
        const int n_rot = std::max(1, std::min(4, int(std::ceil(400e6 / set_bytes))));
        std::vector<__nv_bfloat16*> q(n_rot), k(n_rot), v(n_rot), o(n_rot);
        for (int r = 0; r < n_rot; ++r) {
            CUDA_CHECK(cudaMalloc(&q[r], size_t(nq) * 2));
            CUDA_CHECK(cudaMalloc(&k[r], size_t(nk) * 2));
            CUDA_CHECK(cudaMalloc(&v[r], size_t(nk) * 2));
            CUDA_CHECK(cudaMalloc(&o[r], size_t(nq) * 2));
            fill_random<<<1024, 256, 0, s>>>(q[r], nq, 17u * r + 1);
            fill_random<<<1024, 256, 0, s>>>(k[r], nk, 17u * r + 2);
            fill_random<<<1024, 256, 0, s>>>(v[r], nk, 17u * r + 3);
        }
        const double pairs_fa = double(cpu::attended_pairs(HeadMode::FA, win, nullptr, 1, T));
        const double pairs_ssa = double(cpu::attended_pairs(HeadMode::SSA, win, nullptr, 1, T));
        const double dens_ssa = pairs_ssa / pairs_fa;
        double t_dense = 0;
        for (double om : omegas) {
            const LayerPlan plan = fa_ssa_plan(Hkv, om);
            auto dp = cuda::upload_plan(plan, T, 128, s);
            double pairs = 0;
            for (int g = 0; g < Hkv; ++g) pairs += (plan.mode[size_t(g)] == HeadMode::SSA ? pairs_ssa : pairs_fa) * (Hq / Hkv);
            cuda::HybridParams p;
            p.n_head = Hq;
            p.n_kv_head = Hkv;
            p.head_dim = d;
            p.scale = scale;
            p.win = win;
            p.plan = dp.get();
            p.force_block_m = block_m;
            p.force_block_n = block_n;
            std::vector<float> ms;
            for (int it = 0; it < warmup + iters; ++it) {
                const int r = it % n_rot;
                p.q = q[r];
                p.k = k[r];
                p.v = v[r];
                p.out = o[r];
                CUDA_CHECK(cudaEventRecord(e0, s));
                cuda::hybrid_prefill(p, s);
                CUDA_CHECK(cudaEventRecord(e1, s));
                CUDA_CHECK(cudaEventSynchronize(e1));
                float t = 0;
                CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
                if (it >= warmup) ms.push_back(t);
            }
            const double med = median(ms), mn = *std::min_element(ms.begin(), ms.end());
            const double density = pairs / (pairs_fa * Hq);
            if (om == 0) t_dense = med;
            const double ideal = t_dense > 0 ? t_dense * ((1 - om) + om * dens_ssa) : NAN;
            const double tflops = pairs * 4.0 * d / (med * 1e-3) / 1e12;
            std::printf("%8lld %6.2f %10.3f %9.3f %9.1f %8.3f %10.3f %8.1f%%\n", (long long)T, om, med, mn, tflops,
                        density, ideal, 100.0 * ideal / med);
            char buf[512];
            std::snprintf(buf, sizeof buf,
                          "%s{\"seq\": %lld, \"omega\": %.4f, \"ms_median\": %.5f, \"ms_min\": %.5f, \"ms_max\": %.5f, "
                          "\"tflops\": %.2f, \"density\": %.5f, \"ideal_ms\": %.5f, \"fraction_of_ideal\": %.4f}",
                          first_rec ? "" : ", ", (long long)T, om, med, mn, double(*std::max_element(ms.begin(), ms.end())),
                          tflops, density, ideal, ideal / med);
            js += buf;
            first_rec = false;
        }
        for (int r = 0; r < n_rot; ++r) {
            cudaFree(q[r]);
            cudaFree(k[r]);
            cudaFree(v[r]);
            cudaFree(o[r]);
        }
    }
    js += "], \"decode\": [";

    std::printf("\n%8s %8s %10s %10s %12s %10s %6s\n", "context", "config", "ms", "tok/s", "KV MB read", "GB/s", "splits");
    first_rec = true;
    for (double cd : dctx) {
        const int64_t N = int64_t(cd);
        float *kf = nullptr, *vf = nullptr, *qd = nullptr, *od = nullptr;
        CUDA_CHECK(cudaMalloc(&kf, size_t(N * Hkv * d) * 4));
        CUDA_CHECK(cudaMalloc(&vf, size_t(N * Hkv * d) * 4));
        CUDA_CHECK(cudaMalloc(&qd, size_t(Hq * d) * 4));
        CUDA_CHECK(cudaMalloc(&od, size_t(Hq * d) * 4));
        fill_random_f32<<<1024, 256, 0, s>>>(kf, N * Hkv * d, 5);
        fill_random_f32<<<1024, 256, 0, s>>>(vf, N * Hkv * d, 6);
        fill_random_f32<<<64, 256, 0, s>>>(qd, Hq * d, 7);
        for (double om : {0.0, dec_omega}) {
            const LayerPlan plan = fa_ssa_plan(Hkv, om);
            auto cache = cuda::new_layer_cache(plan, win, N, Hkv, d);
            cuda::cache_store_prefill(*cache, kf, vf, N, s);
            double keys = 0;
            for (int g = 0; g < Hkv; ++g)
                keys += plan.mode[size_t(g)] == HeadMode::SSA ? double(std::min<int64_t>(N, win.sink + win.local)) : double(N);
            const double bytes = keys * d * 2 /*K,V*/ * 2 /*bf16*/;
            std::vector<float> ms;
            for (int it = 0; it < warmup + 3 * iters; ++it) {
                CUDA_CHECK(cudaEventRecord(e0, s));
                cuda::attn_decode(qd, *cache, N - 1, od, Hq, scale, s);
                CUDA_CHECK(cudaEventRecord(e1, s));
                CUDA_CHECK(cudaEventSynchronize(e1));
                float t = 0;
                CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
                if (it >= warmup) ms.push_back(t);
            }
            const double med = median(ms);
            const char* name = om == 0 ? "full" : "fa-ssa";
            std::printf("%8lld %8s %10.4f %10.0f %12.1f %10.0f %6d   (cache %.1f MB)\n", (long long)N, name, med,
                        1e3 / med, bytes / 1e6, bytes / (med * 1e-3) / 1e9, cuda::decode_splits(*cache),
                        double(cuda::cache_bytes(*cache)) / 1e6);
            char buf[512];
            std::snprintf(buf, sizeof buf,
                          "%s{\"context\": %lld, \"config\": \"%s\", \"omega\": %.3f, \"ms_median\": %.5f, "
                          "\"tok_per_s\": %.1f, \"kv_bytes_read\": %.0f, \"gb_per_s\": %.1f, \"cache_bytes\": %zu}",
                          first_rec ? "" : ", ", (long long)N, name, om, med, 1e3 / med, bytes,
                          bytes / (med * 1e-3) / 1e9, cuda::cache_bytes(*cache));
            js += buf;
            first_rec = false;
        }
        cudaFree(kf);
        cudaFree(vf);
        cudaFree(qd);
        cudaFree(od);
    }
    js += "]}\n";
    if (json) {
        FILE* f = std::fopen(json, "w");
        if (!f) {
            std::fprintf(stderr, "cannot write %s\n", json);
            return 1;
        }
        std::fputs(js.c_str(), f);
        std::fclose(f);
    }
    return 0;
}
