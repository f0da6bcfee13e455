// The two chat formats the engine serves, rendered directly instead of running Jinja:
//   ChatML  <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n
//           (SmolLM2 adds a default system turn when the first message is not "system")
//   Llama-3 <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>
//           ... <|start_header_id|>assistant<|end_header_id|>\n\n
// Template features outside these (Qwen3 <think> blocks on the last assistant turn, tools,
// Llama-3.1 date preambles) are not reproduced.
#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode-nfc.h"

namespace elastic {

namespace {

bool is_space_cp(int32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || (c >= 0x1C && c <= 0x1F) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python str.strip(), which Jinja's |trim calls.
std::string py_strip(const std::string& s) {
    size_t a = 0, b = s.size();
    while (a < b) {
        size_t j = a;
        if (!is_space_cp(utf8_next(s, j))) break;
        a = j;
    }
    while (b > a) {
        size_t i = b - 1;
        while (i > a && (uint8_t(s[i]) & 0xC0) == 0x80) --i;
        size_t j = i;
        if (!is_space_cp(utf8_next(s, j)) || j != b) break;
        b = i;
    }
    return s.substr(a, b - a);
}

// A literal default system message: "<|im_start|>system\n<text><|im_end|>" with no Jinja inside.
std::string find_default_system(const std::string& t) {
    const std::string head = "<|im_start|>system";
    for (size_t p = t.find(head); p != std::string::npos; p = t.find(head, p + 1)) {
        size_t q = p + head.size();
        if (t.compare(q, 1, "\n") == 0) q += 1;
        else if (t.compare(q, 2, "\\n") == 0) q += 2;
        else continue;
        size_t e = t.find("<|im_end|>", q);
        if (e == std::string::npos || e == q) continue;
        std::string text = t.substr(q, e - q);
        if (text.find_first_of("'\"{}+") != std::string::npos) continue;
        return text;
    }
    return "";
}

}  // namespace

void Tokenizer::init_chat(const std::string& t) {
    if (t.find("<|im_start|>") != std::string::npos) chat_template_ = ChatTemplate::ChatML;
    else if (t.find("<|start_header_id|>") != std::string::npos) chat_template_ = ChatTemplate::Llama3;
    else if (t.empty() && token_id("<|im_start|>") >= 0) chat_template_ = ChatTemplate::ChatML;
    else if (t.empty() && token_id("<|start_header_id|>") >= 0) chat_template_ = ChatTemplate::Llama3;
    else chat_template_ = ChatTemplate::None;
    default_system_ = chat_template_ == ChatTemplate::ChatML ? find_default_system(t) : "";

    stop_ids_.clear();
    auto add = [&](int32_t id) {
        if (id < 0) return;
        for (int32_t s : stop_ids_)
            if (s == id) return;
        stop_ids_.push_back(id);
    };
    add(eos_);
    for (const char* s : {"<|im_end|>", "<|eot_id|>", "<|endoftext|>"}) add(token_id(s));
}

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
    std::string out;
    switch (chat_template_) {
    case ChatTemplate::ChatML:
        if (!default_system_.empty() && !messages.empty() && messages[0].role != "system")
            out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
        for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
        if (add_generation_prompt) out += "<|im_start|>assistant\n";
        return out;
    case ChatTemplate::Llama3:
        if (!messages.empty()) out += bos_ >= 0 ? token_text(bos_) : std::string("<|begin_of_text|>");
        for (const ChatMessage& m : messages)
            out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + py_strip(m.content) + "<|eot_id|>";
        if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
        return out;
    case ChatTemplate::None:
        break;
    }
    fail("tokenizer has no chat template (neither ChatML nor Llama-3 was detected)");
}

}  // namespace elastic
