#include "eval/longbench.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace elastic::eval {

namespace {
struct DatasetInfo {
    const char* prompt;
    int maxlen;
    const char* family;
};

const std::map<std::string, DatasetInfo>& info() {
    static const std::map<std::string, DatasetInfo> m = {
        {"narrativeqa",
         {"You are given a story, which can be either a novel or a movie script, and a question. Answer the question as concisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: {context}\n\nNow, answer the question based on the story as concisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
          128, "single-doc-qa"}},
        {"qasper",
         {"You are given a scientific article and a question. Answer the question as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the above article as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
          128, "single-doc-qa"}},
        {"multifieldqa_en",
         {"Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
          64, "single-doc-qa"}},
        {"multifieldqa_zh",
         {"阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。\n\n问题：{input}\n回答：", 64,
          "single-doc-qa"}},
        {"hotpotqa",
         {"Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
          32, "multi-doc-qa"}},
        {"2wikimqa",
         {"Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
          32, "multi-doc-qa"}},
        {"musique",
         {"Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
          32, "multi-doc-qa"}},
        {"dureader", {"请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答：", 128, "multi-doc-qa"}},
        {"gov_report",
         {"You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:",
          512, "summarization"}},
        {"qmsum",
         {"You are given a meeting transcript and a query containing a question or instruction. Answer the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:",
          512, "summarization"}},
        {"multi_news",
         {"You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:",
          512, "summarization"}},
        {"vcsum", {"下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结：", 512, "summarization"}},
        {"trec",
         {"Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}", 64,
          "few-shot"}},
        {"triviaqa",
         {"Answer the question based on the given passage. Only give me the answer and do not output any other words. The following are some examples.\n\n{context}\n\n{input}",
          32, "few-shot"}},
        {"samsum",
         {"Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}", 128,
          "few-shot"}},
        {"lsht", {"请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}", 64, "few-shot"}},
        {"passage_count",
         {"There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing duplicates. The output format should only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer is: ",
          32, "synthetic"}},
        {"passage_retrieval_en",
         {"Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the paragraph that the abstract is from. The answer format must be like \"Paragraph 1\", \"Paragraph 2\", etc.\n\nThe answer is: ",
          32, "synthetic"}},
        {"passage_retrieval_zh",
         {"以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{input}\n\n请输入摘要所属段落的编号。答案格式必须是\"段落1\"，\"段落2\"等格式\n\n答案是：",
          32, "synthetic"}},
        {"lcc", {"Please complete the code given below. \n{context}Next line of code:\n", 64, "code"}},
        {"repobench-p", {"Please complete the code given below. \n{context}{input}Next line of code:\n", 64, "code"}},
    };
    return m;
}

const DatasetInfo& get(const std::string& d) {
    auto it = info().find(d);
    if (it == info().end()) fail("unknown LongBench dataset '%s'", d.c_str());
    return it->second;
}
}  // namespace

const std::vector<std::string>& longbench_datasets() {
    static const std::vector<std::string> v = {
        "narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh", "hotpotqa", "2wikimqa", "musique",
        "dureader", "gov_report", "qmsum", "multi_news", "vcsum", "trec", "triviaqa", "samsum", "lsht",
        "passage_count", "passage_retrieval_en", "passage_retrieval_zh", "lcc", "repobench-p"};
    return v;
}

const std::string& longbench_prompt(const std::string& d) {
    static std::map<std::string, std::string> cache;
    auto it = cache.find(d);
    if (it == cache.end()) it = cache.emplace(d, get(d).prompt).first;
    return it->second;
}
int longbench_maxlen(const std::string& d) { return get(d).maxlen; }
std::string longbench_family(const std::string& d) { return get(d).family; }
bool longbench_uses_chat(const std::string& d) {
    get(d);
    return !(d == "trec" || d == "triviaqa" || d == "samsum" || d == "lsht" || d == "lcc" || d == "repobench-p");
}

std::vector<LongBenchFile> find_longbench_files(const std::string& dir, const std::vector<std::string>& only) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) fail("%s: not a directory", dir.c_str());
    for (const auto& d : only) get(d);
    std::vector<LongBenchFile> out;
    for (const auto& d : longbench_datasets()) {
        if (!only.empty() && std::find(only.begin(), only.end(), d) == only.end()) continue;
        bool any = false;
        for (bool e : {false, true}) {
            const std::string p = dir + "/" + d + (e ? "_e" : "") + ".jsonl";
            if (fs::is_regular_file(p, ec)) {
                out.push_back({d, p, e});
                any = true;
            }
        }
        if (!any && !only.empty()) fail("%s: no %s.jsonl or %s_e.jsonl", dir.c_str(), d.c_str(), d.c_str());
    }
    if (out.empty()) fail("%s: no LongBench files ({dataset}.jsonl or {dataset}_e.jsonl)", dir.c_str());
    return out;
}

std::string fill_prompt(const std::string& tmpl, const std::string& context, const std::string& input) {
    std::string out;
    for (size_t i = 0; i < tmpl.size();) {
        if (tmpl.compare(i, 9, "{context}") == 0) {
            out += context;
            i += 9;
        } else if (tmpl.compare(i, 7, "{input}") == 0) {
            out += input;
            i += 7;
        } else {
            out += tmpl[i++];
        }
    }
    return out;
}

std::vector<Sample> load_longbench(const LongBenchFile& f, int limit) {
    std::ifstream in(f.path);
    if (!in) fail("%s: cannot open", f.path.c_str());
    return load_longbench(in, f, limit);
}

std::vector<Sample> load_longbench(std::istream& in, const LongBenchFile& f, int limit) {
    std::vector<Sample> out;
    std::string line;
    int lineno = 0;
    while (std::getline(in, line) && (limit < 0 || int(out.size()) < limit)) {
        ++lineno;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        try {
            const nlohmann::json j = nlohmann::json::parse(line);
            Sample s;
            s.task = f.dataset;
            s.index = int(out.size());
            s.input = fill_prompt(longbench_prompt(f.dataset), j.at("context").get<std::string>(), j.at("input").get<std::string>());
            s.outputs = j.at("answers").get<std::vector<std::string>>();
            if (j.contains("all_classes") && j["all_classes"].is_array()) s.all_classes = j["all_classes"].get<std::vector<std::string>>();
            if (j.contains("length") && j["length"].is_number()) s.words = j["length"].get<int64_t>();
            s.max_new_tokens = longbench_maxlen(f.dataset);
            s.chat = longbench_uses_chat(f.dataset);
            out.push_back(std::move(s));
        } catch (const nlohmann::json::exception& e) {
            fail("%s:%d: %s", f.path.c_str(), lineno, e.what());
        }
    }
    return out;
}

std::string truncate_middle(const Tokenizer& tok, const std::string& prompt, int64_t max_length) {
    const std::vector<int32_t> ids = tok.encode(prompt, /*parse_special=*/false);
    if (int64_t(ids.size()) <= max_length) return prompt;
    const size_t half = size_t(max_length / 2);
    return tok.decode(std::vector<int32_t>(ids.begin(), ids.begin() + long(half)), true) +
           tok.decode(std::vector<int32_t>(ids.end() - long(half), ids.end()), true);
}

}  // namespace elastic::eval
