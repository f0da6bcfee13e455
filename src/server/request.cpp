// parse_request: see request.h.
#include "server/request.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <random>

#include <nlohmann/json.hpp>

namespace elastic::server {

namespace {

using json = nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& msg, int status = 400) {
    throw ApiError{status, msg, param, ""};
}

// Typed fields of a request object; a wrong type or range is one 400 naming the field.
int64_t get_int(const json& j, const char* key, int64_t dflt, int64_t lo, int64_t hi) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return dflt;
    if (!it->is_number_integer() && !it->is_number_unsigned()) {
        // 5.0 is an integer in JSON's eyes elsewhere; accept integral floats, nothing else.
        if (!it->is_number_float() || std::floor(it->get<double>()) != it->get<double>())
            bad(key, std::string("'") + key + "' must be an integer");
        const double d = it->get<double>();
        if (d < double(lo) || d > double(hi))
            bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi));
        return int64_t(d);
    }
    if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX))
        bad(key, std::string("'") + key + "' is out of range");
    const int64_t v = it->get<int64_t>();
    if (v < lo || v > hi)
        bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    return v;
}

double get_num(const json& j, const char* key, double dflt, double lo, double hi) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return dflt;
    if (!it->is_number()) bad(key, std::string("'") + key + "' must be a number");
    const double v = it->get<double>();
    if (!(v >= lo && v <= hi))
        bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    return v;
}

bool get_bool(const json& j, const char* key, bool dflt) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return dflt;
    if (!it->is_boolean()) bad(key, std::string("'") + key + "' must be true or false");
    return it->get<bool>();
}

// The attention of a request: the server's default, or its "elastic" override within what the
// loaded router allows (no file paths from clients: static:FILE is refused).
AttentionSpec request_spec(const json& body, const ServerOptions& o) {
    auto it = body.find("elastic");
    if (it == body.end() || it->is_null()) return o.spec;
    if (!it->is_object()) bad("elastic", "'elastic' must be an object like {\"attention\": \"fa-ssa\", \"msr\": 0.5}");
    std::string mode = o.spec.name.empty() ? "full" : o.spec.name;
    if (auto a = it->find("attention"); a != it->end() && !a->is_null()) {
        if (!a->is_string()) bad("elastic.attention", "'elastic.attention' must be a string");
        mode = a->get<std::string>();
    }
    const double msr = get_num(*it, "msr", -1, 0, 1);
    if (msr >= 0) mode = "msr:" + std::to_string(msr);
    static const char* allowed[] = {"full", "ssa", "xa", "fa-ssa", "fa-xa", "xa-ssa"};
    const bool known = std::find_if(std::begin(allowed), std::end(allowed), [&](const char* m) { return mode == m; }) !=
                           std::end(allowed) ||
                       mode.rfind("msr:", 0) == 0;
    if (!known)
        bad("elastic.attention", "unknown or refused attention '" + mode +
                                     "': one of full, ssa, xa, fa-ssa, fa-xa, xa-ssa, or a number in elastic.msr");
    AttentionSpec s;
    try {
        s = AttentionSpec::parse(mode);
    } catch (const std::exception& ex) {
        bad("elastic.attention", ex.what());
    }
    if (s.needs_router() && !o.have_router)
        bad("elastic.attention", "attention '" + mode + "' needs a router, and this server has none loaded");
    s.win = o.spec.win;
    s.xa = o.spec.xa;
    return s;
}

// Fields shared by both endpoints: sampling, limits, stop strings, attention.
JobRequest common(const json& body, std::vector<int32_t> prompt, bool chat, const ServerOptions& o, uint64_t salt) {
    JobRequest r;
    if (auto n = get_int(body, "n", 1, 1, 1); n != 1) bad("n", "only n = 1 is supported");
    int64_t mt = std::min(o.default_max_tokens, o.max_tokens);  // a default never exceeds the limit
    const char* mt_key = chat && body.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    mt = get_int(body, mt_key, mt, 1, INT32_MAX);
    if (mt > o.max_tokens)
        bad(mt_key, "'" + std::string(mt_key) + "' is " + std::to_string(mt) + ", more than this server's limit of " +
                        std::to_string(o.max_tokens));
    if (prompt.empty()) bad(chat ? "messages" : "prompt", "the prompt is empty");
    if (int64_t(prompt.size()) >= o.ctx)
        throw ApiError{400,
                       "the prompt has " + std::to_string(prompt.size()) + " tokens; this server's context is " +
                           std::to_string(o.ctx) + " tokens",
                       chat ? "messages" : "prompt", "context_length_exceeded"};
    r.max_tokens = int(std::min<int64_t>(mt, o.ctx - int64_t(prompt.size())));
    r.prompt = std::move(prompt);
    r.sampling.temperature = float(get_num(body, "temperature", 1.0, 0, 2));
    r.sampling.top_p = float(get_num(body, "top_p", 1.0, 0, 1));
    if (r.sampling.top_p <= 0) bad("top_p", "'top_p' must be greater than 0");
    r.sampling.top_k = int(get_int(body, "top_k", 0, 0, 1 << 20));
    const int64_t seed = get_int(body, "seed", -1, INT64_MIN, INT64_MAX);
    r.sampling.seed = seed >= 0 ? uint64_t(seed) : uint64_t(std::random_device{}()) << 32 ^ salt;
    if (auto s = body.find("stop"); s != body.end() && !s->is_null()) {
        if (s->is_string()) r.stop.push_back(s->get<std::string>());
        else if (s->is_array() && s->size() <= 4) {
            for (const json& x : *s) {
                if (!x.is_string()) bad("stop", "'stop' must be a string or an array of up to 4 strings");
                r.stop.push_back(x.get<std::string>());
            }
        } else
            bad("stop", "'stop' must be a string or an array of up to 4 strings");
        for (const std::string& st : r.stop)
            if (st.empty() || st.size() > 256) bad("stop", "stop strings must be 1 to 256 bytes");
    }
    r.spec = request_spec(body, o);
    r.timeout_seconds = o.timeout_seconds;
    return r;
}

std::vector<int32_t> chat_prompt(const json& body, const Tokenizer& tok) {
    auto it = body.find("messages");
    if (it == body.end() || !it->is_array() || it->empty())
        bad("messages", "'messages' must be a non-empty array of {role, content}");
    if (tok.chat_template() == ChatTemplate::None)
        bad("messages", "this model has no chat template: use /v1/completions");
    std::vector<ChatMessage> msgs;
    for (size_t i = 0; i < it->size(); ++i) {
        const json& m = (*it)[i];
        const std::string where = "messages[" + std::to_string(i) + "]";
        if (!m.is_object()) bad(where, where + " must be an object");
        auto role = m.find("role");
        if (role == m.end() || !role->is_string()) bad(where + ".role", where + ".role must be a string");
        const std::string r = role->get<std::string>();
        if (r != "system" && r != "user" && r != "assistant" && r != "developer")
            bad(where + ".role", where + ".role must be system, developer, user or assistant");
        auto content = m.find("content");
        std::string text;
        if (content == m.end() || content->is_null()) {
        } else if (content->is_string()) {
            text = content->get<std::string>();
        } else if (content->is_array()) {
            for (const json& part : *content) {
                if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
                    !part["text"].is_string())
                    bad(where + ".content", where + ".content parts must be {\"type\": \"text\", \"text\": ...}");
                text += part["text"].get<std::string>();
            }
        } else {
            bad(where + ".content", where + ".content must be a string or an array of text parts");
        }
        msgs.push_back({r == "developer" ? "system" : r, text});
    }
    return tok.encode(tok.apply_chat_template(msgs, true));
}

std::vector<int32_t> completion_prompt(const json& body, const Tokenizer& tok) {
    auto it = body.find("prompt");
    if (it == body.end() || it->is_null()) bad("prompt", "'prompt' is required");
    if (it->is_string()) return tok.encode(it->get<std::string>());
    if (it->is_array() && it->size() == 1 && (*it)[0].is_string()) return tok.encode((*it)[0].get<std::string>());
    if (it->is_array() && !it->empty() && (*it)[0].is_number()) {
        std::vector<int32_t> ids;
        for (const json& x : *it) {
            if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= tok.vocab_size())
                bad("prompt", "token ids must be integers in [0, " + std::to_string(tok.vocab_size()) + ")");
            ids.push_back(int32_t(x.get<int64_t>()));
        }
        return ids;
    }
    bad("prompt", "'prompt' must be a string, an array of one string, or an array of token ids");
}

}  // namespace

ParsedRequest parse_request(const std::string& text, bool chat, const Tokenizer& tok, const ServerOptions& o,
                            uint64_t salt) {
    try {
        json body;
        try {
            body = json::parse(text);
        } catch (const json::exception& ex) {
            throw ApiError{400, std::string("the body is not valid JSON: ") + ex.what(), "", "invalid_json"};
        }
        if (!body.is_object()) bad("", "the body must be a JSON object");
        if (auto m = body.find("model"); m != body.end() && !m->is_null() && !m->is_string())
            bad("model", "'model' must be a string");
        ParsedRequest p;
        p.stream = get_bool(body, "stream", false);
        if (auto so = body.find("stream_options"); so != body.end() && !so->is_null()) {
            if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
            p.include_usage = get_bool(*so, "include_usage", false);
        }
        p.job = common(body, chat ? chat_prompt(body, tok) : completion_prompt(body, tok), chat, o, salt);
        return p;
    } catch (const ApiError&) {
        throw;
    } catch (const std::exception& ex) {  // the tokenizer's or the attention spec's own errors
        throw ApiError{400, ex.what(), "", ""};
    }
}

}  // namespace elastic::server
