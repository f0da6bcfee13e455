// `elastic tokenize`: text to token ids with a tokenizer.json or a GGUF file's tokenizer.
// --json-lines: each stdin line is a JSON string; each output line is a JSON array of ids.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace elastic::cli {

namespace {

struct TokenizeOptions {
    std::string tokenizer, prompt;
    bool json_lines = false;
    bool raw_special = false;
};

void tokenize(const TokenizeOptions& o) {
    auto tok = Tokenizer::from_path(o.tokenizer);
    if (o.json_lines) {
        std::string line;
        size_t lineno = 0;
        int bad = 0;
        while (std::getline(std::cin, line)) {
            ++lineno;
            if (line.empty()) continue;
            nlohmann::json j;
            try {
                j = nlohmann::json::parse(line);
            } catch (const nlohmann::json::exception&) {
                j = nullptr;
            }
            if (!j.is_string()) {  // one clear message, keep going with the next line
                std::fprintf(stderr, "elastic: tokenize: line %zu is not a JSON string\n", lineno);
                std::printf("null\n");
                ++bad;
                continue;
            }
            nlohmann::json ids = tok->encode(j.get<std::string>(), !o.raw_special);
            std::printf("%s\n", ids.dump().c_str());
        }
        if (bad) fail("tokenize: %d line(s) were not JSON strings", bad);
        return;
    }
    if (o.prompt.empty()) fail("tokenize: give -p TEXT or --json-lines");
    std::vector<int32_t> ids = tok->encode(o.prompt, !o.raw_special);
    for (int32_t id : ids) {
        nlohmann::json piece = tok->decode({id});
        std::printf("%6d  %s\n", id, piece.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    }
    std::fprintf(stderr, "%zu tokens\n", ids.size());
}

}  // namespace

void add_tokenize(CLI::App& app) {
    auto o = std::make_shared<TokenizeOptions>();
    CLI::App* c = app.add_subcommand("tokenize", "Text to token ids");
    c->add_option("--tokenizer", o->tokenizer, "tokenizer.json, a directory holding one, or a .gguf model")->required();
    c->add_option("-p,--prompt", o->prompt, "Text to tokenize");
    c->add_flag("--json-lines", o->json_lines, "Read JSON strings from stdin, one per line; print id arrays");
    c->add_flag("--raw-special", o->raw_special, "Treat special-token text (e.g. <|im_start|>) as plain text");
    c->callback([o] { tokenize(*o); });
}

}  // namespace elastic::cli
