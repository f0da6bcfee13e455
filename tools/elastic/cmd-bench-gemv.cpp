// `elastic bench gemv`: the decode products (T = 1..4 tokens through a 16-bit weight matrix) on the
// GPU, our GEMV kernel (src/cuda/gemv.cu) against cuBLAS on the same buffers: median time over
// reps, GB/s of weight bytes and the fraction of --peak-gbs (the device-copy bandwidth, 4.0 TB/s on
// the H200). Default shapes: one Qwen3-8B layer and its LM head, as in → out (q/o 4096 → 4096,
// k/v 4096 → 1024, gate/up 4096 → 12288, down 12288 → 4096, head 4096 → 151936). Each call reads a
// different copy of W, enough copies to pass 256 MB, so the timing is of DRAM and not of the L2
// (as in a forward, where the other layers' weights flush it).
//
//   elastic bench gemv --backend cuda
//   elastic bench gemv --shapes 4096x4096 --tokens 1,4 --json
#include <algorithm>
#include <cstdio>
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

struct GemvBenchOptions {
    std::string backend = "cuda", shapes = "4096x4096,4096x1024,4096x12288,12288x4096,4096x151936", tokens = "1";
    std::string precision = "bf16";
    int reps = 7, iters = 50;
    double peak_gbs = 4000.0;
    bool json = false;
};

std::vector<std::pair<int64_t, int64_t>> parse_shapes(const std::string& s) {
    std::vector<std::pair<int64_t, int64_t>> v;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        long long in = 0, out = 0;
        char x = 0, extra = 0;
        if (std::sscanf(item.c_str(), "%lld%c%lld%c", &in, &x, &out, &extra) != 3 || x != 'x' || in <= 0 || out <= 0)
            fail("bench gemv: --shapes takes IN x OUT pairs such as 4096x1024, not '%s'", item.c_str());
        v.emplace_back(in, out);
    }
    if (v.empty()) fail("bench gemv: --shapes is empty");
    return v;
}

#ifdef ELASTIC_HAVE_CUDA
double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void bench_gemv(const GemvBenchOptions& o) {
    const auto shapes = parse_shapes(o.shapes);  // flags checked before the device is touched
    int dev = 0;
    if (o.backend.rfind("cuda", 0) != 0) fail("bench gemv: runs on the GPU only (--backend cuda[:N])");
    if (o.backend.size() > 5) dev = std::atoi(o.backend.c_str() + 5);
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || dev >= n_dev) fail("bench gemv: no CUDA device %d", dev);
    CUDA_CHECK(cudaSetDevice(dev));
    if (o.precision != "bf16" && o.precision != "fp16") fail("bench gemv: --precision is bf16 or fp16");
    if (o.reps < 1 || o.iters < 1) fail("bench gemv: --reps and --iters must be at least 1");
    const DType tw = o.precision == "bf16" ? DType::BF16 : DType::F16;
    std::vector<int64_t> Ts;
    {
        std::stringstream ss(o.tokens);
        std::string item;
        while (std::getline(ss, item, ',')) {
            const int t = std::atoi(item.c_str());
            if (t < 1 || t > cuda::kGemvMaxT) fail("bench gemv: --tokens values are 1 to %d", int(cuda::kGemvMaxT));
            Ts.push_back(t);
        }
    }
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreate(&s));
    cublasHandle_t h;
    CUBLAS_CHECK(cublasCreate(&h));
    CUBLAS_CHECK(cublasSetStream(h, s));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    nlohmann::json rows = nlohmann::json::array();
    if (!o.json) {
        std::printf("gemv, %s weights, %s out, GB/s of weight bytes, %% of %.0f GB/s, median of %d reps x %d calls\n",
                    o.precision.c_str(), o.precision.c_str(), o.peak_gbs, o.reps, o.iters);
        std::printf("| in -> out | T | MB | ours ms | ours GB/s | ours %% | cuBLAS ms | cuBLAS GB/s | cuBLAS %% | faster |\n");
        std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
    }
    std::mt19937_64 rng(1);
    for (const auto& [in, out] : shapes) {
        const size_t wbytes = size_t(in) * size_t(out) * 2;
        const int copies = int(std::max<size_t>(1, (size_t(256) << 20) / wbytes + 1));
        std::vector<void*> W(static_cast<size_t>(copies));
        for (void*& w : W) {
            w = cuda::device_alloc<uint8_t>(wbytes, "gemv benchmark weights");
            CUDA_CHECK(cudaMemset(w, 0x3c, wbytes));  // 0x3c3c: 0.011 in bf16, 1.06 in fp16
        }
        for (const int64_t T : Ts) {
            std::vector<float> hx(size_t(T * in));
            std::normal_distribution<float> nd;
            for (float& f : hx) f = nd(rng);
            float* xf = cuda::device_alloc<float>(hx.size(), "gemv benchmark x");
            void* x = cuda::device_alloc<uint8_t>(hx.size() * 2, "gemv benchmark x");
            void* y = cuda::device_alloc<uint8_t>(size_t(T * out) * 2, "gemv benchmark y");
            CUDA_CHECK(cudaMemcpy(xf, hx.data(), hx.size() * sizeof(float), cudaMemcpyHostToDevice));
            cuda::convert(xf, DType::F32, x, tw, int64_t(hx.size()), s);
            auto time = [&](auto&& call) {
                for (int i = 0; i < copies; ++i) call(W[size_t(i)]);  // warm-up
                std::vector<double> ms;
                for (int r = 0; r < o.reps; ++r) {
                    CUDA_CHECK(cudaEventRecord(e0, s));
                    for (int i = 0; i < o.iters; ++i) call(W[size_t(i % copies)]);
                    CUDA_CHECK(cudaEventRecord(e1, s));
                    CUDA_CHECK(cudaEventSynchronize(e1));
                    float t = 0;
                    CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
                    ms.push_back(double(t) / o.iters);
                }
                return median(ms);
            };
            const double t_ours = time([&](void* w) { cuda::gemv(w, tw, out, in, x, tw, y, tw, T, s); });
            const double t_blas = time([&](void* w) { cuda::matmul(h, w, tw, out, in, x, tw, nullptr, y, tw, T, s); });
            const double gb_ours = double(wbytes) / t_ours * 1e-6, gb_blas = double(wbytes) / t_blas * 1e-6;
            rows.push_back({{"in", in}, {"out", out}, {"tokens", T}, {"weight_bytes", wbytes}, {"precision", o.precision},
                            {"ours_ms", t_ours}, {"ours_gbs", gb_ours}, {"ours_fraction", gb_ours / o.peak_gbs},
                            {"cublas_ms", t_blas}, {"cublas_gbs", gb_blas}, {"cublas_fraction", gb_blas / o.peak_gbs}});
            if (!o.json)
                std::printf("| %lld -> %lld | %lld | %.1f | %.4f | %.0f | %.0f | %.4f | %.0f | %.0f | %s |\n", (long long)in,
                            (long long)out, (long long)T, double(wbytes) * 1e-6, t_ours, gb_ours, 100 * gb_ours / o.peak_gbs,
                            t_blas, gb_blas, 100 * gb_blas / o.peak_gbs, t_ours <= t_blas ? "ours" : "cuBLAS");
            std::fflush(stdout);
            CUDA_CHECK(cudaFree(xf));
            CUDA_CHECK(cudaFree(x));
            CUDA_CHECK(cudaFree(y));
        }
        for (void* w : W) CUDA_CHECK(cudaFree(w));
    }
    if (o.json) std::printf("%s\n", rows.dump().c_str());
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    cublasDestroy(h);
    CUDA_CHECK(cudaStreamDestroy(s));
}
#else
void bench_gemv(const GemvBenchOptions& o) {
    (void)parse_shapes(o.shapes);
    fail("bench gemv: this build has no CUDA (configure with the cuda-release preset)");
}
#endif

}  // namespace

void add_bench_gemv(CLI::App* bench) {
    auto o = std::make_shared<GemvBenchOptions>();
    CLI::App* c = bench->add_subcommand("gemv", "Decode products (T <= 4) on the GPU: our GEMV vs cuBLAS");
    c->add_option("--backend", o->backend, "cuda or cuda:N")->capture_default_str();
    c->add_option("--precision", o->precision, "Weight type: bf16 or fp16")->capture_default_str();
    c->add_option("--shapes", o->shapes, "IN x OUT pairs, comma-separated")->capture_default_str();
    c->add_option("--tokens", o->tokens, "Tokens T per product, comma-separated (1 to 4)")->capture_default_str();
    c->add_option("-r,--reps", o->reps, "Timed repetitions (median)")->capture_default_str();
    c->add_option("--iters", o->iters, "Calls per repetition")->capture_default_str();
    c->add_option("--peak-gbs", o->peak_gbs, "Bandwidth the fractions are of (GB/s)")->capture_default_str();
    c->add_flag("--json", o->json, "Print one JSON array (one object per row)");
    c->callback([o] { bench_gemv(*o); });
}

}  // namespace elastic::cli
