// Validation of one request body of `elastic serve` (no HTTP here, so that it can be fuzzed): the
// JSON fields of /v1/chat/completions and /v1/completions, typed and ranged, the prompt rendered
// and tokenised, the server's limits applied. Every refusal is one ApiError naming the field.
#pragma once
#include <cstdint>
#include <string>

#include "server/scheduler.h"
#include "server/server.h"
#include "tokenizer/tokenizer.h"

namespace elastic::server {

struct ApiError {
    int status;
    std::string message;
    std::string param;  // the offending field, if any
    std::string code;   // OpenAI-style code, if any
};

struct ParsedRequest {
    JobRequest job;
    bool stream = false, include_usage = false;
};

// `salt` varies the seed of requests that give none. Throws ApiError only (a tokenizer's or a
// spec's own error becomes a 400).
ParsedRequest parse_request(const std::string& body, bool chat, const Tokenizer& tok, const ServerOptions& o,
                            uint64_t salt);

}  // namespace elastic::server
