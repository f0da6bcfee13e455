// Errors in three tiers (CONVENTIONS.md #9):
//  - elastic::Error: a user mistake (bad path, corrupt file, bad flag). Thrown where it is found,
//    caught once at the edge (CLI prints one line and exits 1; the server answers 4xx).
//  - ELASTIC_ASSERT: an internal invariant; aborts with file:line.
//  - CUDA_CHECK lives in src/cuda.
#pragma once
#include <cstdarg>
#include <stdexcept>
#include <string>

namespace elastic {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// printf-style message, thrown as elastic::Error.
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

std::string strprintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const char* msg);

}  // namespace elastic

#define ELASTIC_ASSERT(cond)                                                      \
    do {                                                                          \
        if (!(cond)) ::elastic::assert_fail(#cond, __FILE__, __LINE__, nullptr); \
    } while (0)
#define ELASTIC_ASSERT_MSG(cond, msg)                                         \
    do {                                                                      \
        if (!(cond)) ::elastic::assert_fail(#cond, __FILE__, __LINE__, msg); \
    } while (0)
