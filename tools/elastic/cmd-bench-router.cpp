// `elastic bench router`: the router of one layer on the GPU (cuda::router_logits), the fused
// single-launch kernel against the cuBLAS path (pooling kernel + 5 GEMMs + 5 bias kernels), at a
// model's shape (default Qwen3-8B: 8 KV heads, head_dim 128, the released routers' 4d widths, T
// 32768 bf16 keys). Three figures per path, median over reps:
//   device ms   CUDA events around --iters back-to-back queued calls (no copy, no sync)
//   graph       the same --iters calls captured once as a CUDA graph and replayed (fused only): the
//               kernel's time without the host's launch rate
//   host ms     wall time per full call as the forward makes it: launch(es), the one copy of the
//               logits into pinned memory and the stream sync
// Each call uses a different copy of the router weights (enough copies to pass 128 MiB) so the
// weights come from DRAM, as in a forward where the layers' matmuls flush the L2. With
// ELASTIC_ROUTER_TRACE=1 one more call per cluster size runs alone and its per-CTA stamps are printed
// (cuda::router_trace_summary).
//
//   elastic bench router --backend cuda
//   elastic bench router --kv-heads 8 --head-dim 128 --seq 32768 --cluster 1,2,4,8,16 --json
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"

#ifdef ELASTIC_HAVE_CUDA
#include <cuda_runtime.h>

#include "cuda/cuda-check.h"
#include "cuda/ops.h"
#endif

namespace elastic::cli {

namespace {

struct RouterBenchOptions {
    std::string backend = "cuda", dtype = "bf16", clusters = "0";
    int kv_heads = 8, head_dim = 128, window = 100, n_out = 2, reps = 7, iters = 200;
    int64_t seq = 32768;
    bool json = false;
};

#ifdef ELASTIC_HAVE_CUDA
double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void bench_router(const RouterBenchOptions& o) {
    int dev = 0;
    if (o.backend.rfind("cuda", 0) != 0) fail("bench router: runs on the GPU only (--backend cuda[:N])");
    if (o.backend.size() > 5) dev = std::atoi(o.backend.c_str() + 5);
    if (o.kv_heads < 1 || o.head_dim < 1 || o.seq < 1 || o.window < 1 || o.reps < 1 || o.iters < 1)
        fail("bench router: --kv-heads, --head-dim, --seq, --window, --reps and --iters must be at least 1");
    if (o.n_out != 1 && o.n_out != 2) fail("bench router: --out is 1 or 2");
    DType tk = DType::BF16;
    if (o.dtype == "fp16") tk = DType::F16;
    else if (o.dtype == "fp32") tk = DType::F32;
    else if (o.dtype != "bf16") fail("bench router: --dtype is bf16, fp16 or fp32");
    std::vector<int> clusters;
    {
        std::stringstream ss(o.clusters);
        std::string item;
        while (std::getline(ss, item, ',')) clusters.push_back(std::atoi(item.c_str()));
        for (int c : clusters)
            if (c != 0 && c != 1 && c != 2 && c != 4 && c != 8 && c != 16)
                fail("bench router: --cluster values are 0 (default), 1, 2, 4, 8 or 16");
        if (clusters.empty()) clusters.push_back(0);
    }
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || dev >= n_dev) fail("bench router: no CUDA device %d", dev);
    CUDA_CHECK(cudaSetDevice(dev));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));

    const int H = o.kv_heads, d = o.head_dim;
    const int ins[5] = {d, 4 * d, d, 4 * d, d}, outs[5] = {4 * d, d, 4 * d, d, o.n_out};
    auto pad4 = [](size_t n) { return (n + 3) / 4 * 4; };
    size_t per = 0;
    for (int l = 0; l < 5; ++l) per += pad4(size_t(ins[l]) * outs[l]) + pad4(size_t(outs[l]));
    const int copies = int(std::max<size_t>(1, (size_t(128) << 20) / (per * sizeof(float)) + 1));
    std::mt19937_64 rng(1);
    std::vector<float> host(per);
    {
        size_t off = 0;
        for (int l = 0; l < 5; ++l) {
            std::normal_distribution<float> nd(0.0f, 1.5f / std::sqrt(float(ins[l])));
            for (size_t i = 0; i < size_t(ins[l]) * outs[l]; ++i) host[off + i] = nd(rng);
            off += pad4(size_t(ins[l]) * outs[l]);
            for (int i = 0; i < outs[l]; ++i) host[off + size_t(i)] = 0.01f * float(i % 7);
            off += pad4(size_t(outs[l]));
        }
    }
    float* wblock = cuda::device_alloc<float>(per * size_t(copies), "router benchmark weights");
    struct Lin {
        cuda::RouterLinearDev L[5];
    };
    std::vector<Lin> routers(static_cast<size_t>(copies));
    for (int c = 0; c < copies; ++c) {
        float* p = wblock + size_t(c) * per;
        CUDA_CHECK(cudaMemcpy(p, host.data(), per * sizeof(float), cudaMemcpyHostToDevice));
        for (int l = 0; l < 5; ++l) {
            routers[size_t(c)].L[l] = {p, p + pad4(size_t(ins[l]) * outs[l]), ins[l], outs[l]};
            p += pad4(size_t(ins[l]) * outs[l]) + pad4(size_t(outs[l]));
        }
    }
    // Keys: random fp32 converted on the device.
    const size_t nk = size_t(o.seq) * size_t(H) * size_t(d);
    void* k = cuda::device_alloc<uint8_t>(nk * cuda::elem_bytes(tk), "router benchmark keys");
    {
        std::vector<float> hk(nk);
        std::normal_distribution<float> nd;
        for (float& f : hk) f = nd(rng);
        float* kf = cuda::device_alloc<float>(nk, "router benchmark keys (fp32)");
        CUDA_CHECK(cudaMemcpy(kf, hk.data(), nk * sizeof(float), cudaMemcpyHostToDevice));
        cuda::convert(kf, DType::F32, k, tk, int64_t(nk), nullptr);
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaFree(kf));
    }
    auto lin = [&](int c) -> const cuda::RouterLinearDev(&)[5] { return routers[size_t(c)].L; };
    float* scratch = cuda::device_alloc<float>(cuda::router_scratch_floats(lin(0), H, d), "router benchmark scratch");
    float* pinned = nullptr;
    CUDA_CHECK(cudaMallocHost(&pinned, size_t(H) * o.n_out * sizeof(float)));
    std::vector<float> logits(size_t(H) * o.n_out);
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreate(&s));
    cublasHandle_t h;
    CUBLAS_CHECK(cublasCreate(&h));
    CUBLAS_CHECK(cublasSetStream(h, s));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));

    // queue(c): one call's device work on router copy c; full(c): the whole call with copy + sync.
    auto device_ms = [&](const std::function<void(int)>& queue) {
        for (int c = 0; c < copies; ++c) queue(c);  // warm-up
        std::vector<double> ms;
        for (int r = 0; r < o.reps; ++r) {
            CUDA_CHECK(cudaEventRecord(e0, s));
            for (int i = 0; i < o.iters; ++i) queue(i % copies);
            CUDA_CHECK(cudaEventRecord(e1, s));
            CUDA_CHECK(cudaEventSynchronize(e1));
            float t = 0;
            CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
            ms.push_back(double(t) / o.iters);
        }
        return median(ms);
    };
    // The same calls captured once as a CUDA graph and replayed: the device time without the host's
    // launch rate (a queue of cluster launches may not outrun a kernel of a few µs).
    auto graph_ms = [&](const std::function<void(int)>& queue) {
        cudaGraph_t g;
        cudaGraphExec_t ge;
        CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        for (int i = 0; i < o.iters; ++i) queue(i % copies);
        CUDA_CHECK(cudaStreamEndCapture(s, &g));
        CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
        CUDA_CHECK(cudaGraphLaunch(ge, s));  // warm-up
        std::vector<double> ms;
        for (int r = 0; r < o.reps; ++r) {
            CUDA_CHECK(cudaEventRecord(e0, s));
            CUDA_CHECK(cudaGraphLaunch(ge, s));
            CUDA_CHECK(cudaEventRecord(e1, s));
            CUDA_CHECK(cudaEventSynchronize(e1));
            float t = 0;
            CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
            ms.push_back(double(t) / o.iters);
        }
        CUDA_CHECK(cudaGraphExecDestroy(ge));
        CUDA_CHECK(cudaGraphDestroy(g));
        return median(ms);
    };
    auto host_ms = [&](const std::function<void(int)>& full) {
        for (int c = 0; c < std::min(copies, 16); ++c) full(c);
        std::vector<double> ms;
        for (int r = 0; r < o.reps; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < o.iters; ++i) full(i % copies);
            ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / o.iters);
        }
        return median(ms);
    };

    nlohmann::json rows = nlohmann::json::array();
    if (!o.json) {
        std::printf("router of one layer on %s: %d KV heads, head_dim %d, widths %d/%d, %d logits, T %lld %s keys, "
                    "window %d; %.2f MiB of fp32 weights per layer, %d copies rotated; median of %d reps x %d calls\n",
                    prop.name, H, d, 4 * d, d, o.n_out, (long long)o.seq, o.dtype.c_str(), o.window,
                    double(per * sizeof(float)) / (1 << 20), copies, o.reps, o.iters);
        std::printf("| path | device ms/layer | device ms/layer, graph replay | host ms/layer (launches + copy + sync) "
                    "|\n|---|---|---|---|\n");
    }
    const bool trace = std::getenv("ELASTIC_ROUTER_TRACE") != nullptr;
    std::vector<std::string> traces;
    auto row = [&](const std::string& path, double dms, double gms, double hms) {
        rows.push_back({{"path", path}, {"kv_heads", H}, {"head_dim", d}, {"seq", o.seq}, {"dtype", o.dtype},
                        {"device_ms", dms}, {"graph_ms", gms >= 0 ? nlohmann::json(gms) : nlohmann::json()},
                        {"host_ms", hms}});
        char g[32] = "–";
        if (gms >= 0) std::snprintf(g, sizeof g, "%.4f", gms);
        if (!o.json) std::printf("| %s | %.4f | %s | %.4f |\n", path.c_str(), dms, g, hms);
        std::fflush(stdout);
    };
    if (!cuda::router_fused_takes(lin(0), k, d)) fail("bench router: the fused kernel does not take this shape");
    for (const int cl : clusters) {
        auto fused = [&](int c) { cuda::router_logits_fused(lin(c), k, tk, o.seq, H, d, o.window, scratch, s, cl); };
        const std::string name = cl == 0 ? "fused (default cluster)" : "fused, cluster " + std::to_string(cl);
        const double dms = device_ms(fused);
        if (trace) {  // one call alone, after the others have finished
            CUDA_CHECK(cudaStreamSynchronize(s));
            fused(0);
            traces.push_back(name + ": " + cuda::router_trace_summary());
        }
        const double gms = graph_ms(fused);
        const double hms = host_ms([&](int c) {
            cuda::router_logits(h, lin(c), k, tk, o.seq, H, d, o.window, scratch, logits.data(), s, pinned, cuda::RouterKernel::Fused);
        });
        row(name, dms, gms, hms);
    }
    {
        auto cublas = [&](int c) { (void)cuda::router_logits_cublas(h, lin(c), k, tk, o.seq, H, d, o.window, scratch, s); };
        const double dms = device_ms(cublas);
        const double gms = -1.0;  // (the cuBLAS path's launches are not captured here)
        const double hms = host_ms([&](int c) {
            cuda::router_logits(h, lin(c), k, tk, o.seq, H, d, o.window, scratch, logits.data(), s, pinned, cuda::RouterKernel::Cublas);
        });
        row("cublas", dms, gms, hms);
    }
    if (o.json) std::printf("%s\n", rows.dump().c_str());
    for (const std::string& t : traces) std::printf("%s\n", t.c_str());
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    cublasDestroy(h);
    CUDA_CHECK(cudaStreamDestroy(s));
    CUDA_CHECK(cudaFreeHost(pinned));
    CUDA_CHECK(cudaFree(scratch));
    CUDA_CHECK(cudaFree(k));
    CUDA_CHECK(cudaFree(wblock));
}
#else
void bench_router(const RouterBenchOptions&) {
    fail("bench router: this build has no CUDA (configure with the cuda-release preset)");
}
#endif

}  // namespace

void add_bench_router(CLI::App* bench) {
    auto o = std::make_shared<RouterBenchOptions>();
    CLI::App* c = bench->add_subcommand("router", "The router of one layer on the GPU: fused kernel vs cuBLAS path");
    c->add_option("--backend", o->backend, "cuda or cuda:N")->capture_default_str();
    c->add_option("--kv-heads", o->kv_heads, "KV heads")->capture_default_str();
    c->add_option("--head-dim", o->head_dim, "Head dimension")->capture_default_str();
    c->add_option("--seq", o->seq, "Tokens T of keys")->capture_default_str();
    c->add_option("--window", o->window, "Pooling window")->capture_default_str();
    c->add_option("--out", o->n_out, "Logits per head: 2 (softmax) or 1 (sigmoid)")->capture_default_str();
    c->add_option("--dtype", o->dtype, "Key type: bf16, fp16 or fp32")->capture_default_str();
    c->add_option("--cluster", o->clusters, "Fused kernel's cluster sizes, comma-separated (0 = default)")->capture_default_str();
    c->add_option("-r,--reps", o->reps, "Timed repetitions (median)")->capture_default_str();
    c->add_option("--iters", o->iters, "Calls per repetition")->capture_default_str();
    c->add_flag("--json", o->json, "Print one JSON array (one object per row)");
    c->callback([o] { bench_router(*o); });
}

}  // namespace elastic::cli
