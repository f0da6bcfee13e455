// The finite-difference harness of the backward tests (test-backward*.cpp).
// Tolerance rule: max |analytic - numeric| <= kTol * max |numeric| over the checked elements. The
// fp64 central difference (step 1e-4) is exact to ~1e-9, so what remains is the fp32 rounding of
// the backward, held to the project's fp32 rule, kTol = 1e-5 (worst seen over 200 fresh seeds:
// 1.8e-6, attention dk). Each check prints its worst relative error; a failure names the worst element.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "test-helpers.h"

extern "C" void openblas_set_num_threads(int);

namespace elastic::test {

constexpr double kTol = 1e-5;
constexpr double kStep = 1e-4;

// Central differences of loss(x, i), with x perturbed at element i (loss may evaluate only what
// element i affects), against `ana`, at every element or at max_checks random ones.
template <class Loss>
inline ::testing::AssertionResult fd_check(const std::string& what, const std::vector<float>& x,
                                           const std::vector<float>& ana, const Loss& loss, std::mt19937_64& rng,
                                           size_t max_checks = 64, double tol = kTol) {
    if (ana.size() != x.size()) return ::testing::AssertionFailure() << what << ": size mismatch";
    std::vector<size_t> idx(x.size());
    std::iota(idx.begin(), idx.end(), size_t(0));
    if (idx.size() > max_checks) {
        std::shuffle(idx.begin(), idx.end(), rng);
        idx.resize(max_checks);
    }
    std::vector<double> num(idx.size());
#pragma omp parallel
    {
        std::vector<double> xd(x.begin(), x.end());
#pragma omp for schedule(dynamic)
        for (size_t n = 0; n < idx.size(); ++n) {
            const size_t i = idx[n];
            xd[i] = double(x[i]) + kStep;
            const double fp = loss(xd, i);
            xd[i] = double(x[i]) - kStep;
            const double fm = loss(xd, i);
            xd[i] = double(x[i]);
            num[n] = (fp - fm) / (2 * kStep);
        }
    }
    double ref = 0, err = 0;
    size_t w = 0;
    for (size_t n = 0; n < idx.size(); ++n) {
        ref = std::max(ref, std::fabs(num[n]));
        const double e = std::fabs(double(ana[idx[n]]) - num[n]);
        if (!(e <= err)) err = e, w = n;
    }
    std::printf("[ grad     ] %-44s worst rel err %.2e over %zu of %zu\n", what.c_str(), err / std::max(ref, 1e-300),
                idx.size(), x.size());
    if (err <= tol * std::max(ref, 1e-12)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << what << ": max |analytic - numeric| " << err << " > " << tol
                                         << " x max|numeric| " << ref << "; worst element [" << idx[w] << "]: analytic "
                                         << ana[idx[w]] << ", numeric " << num[w];
}

// Fixture of the Backward* suites: single-threaded OpenBLAS (the ops call it inside OpenMP regions)
// and a fresh seed, to be printed with SCOPED_TRACE.
class BackwardTest : public ::testing::Test {
protected:
    void SetUp() override { openblas_set_num_threads(1); }
    uint64_t seed = fresh_seed();
    std::mt19937_64 rng{seed};
};

}  // namespace elastic::test
