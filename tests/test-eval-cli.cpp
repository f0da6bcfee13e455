// `elastic eval` and `elastic inspect --retrieval-scores` end to end on the default model (skipped
// when it is not fetched): tiny runs, JSON shape, report table and plot, LongBench on a hand-written
// file, and the retrieval-score file read back as static:FILE.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "attention/elastic.h"
#include "eval/report.h"
#include "eval/results.h"
#include "test-helpers.h"

using namespace elastic;
using namespace elastic::test;

namespace {

struct Out {
    int code;
    std::string out, err;
};

std::string dir() {
    static std::string d = [] {
        char tmpl[] = "/tmp/elastic-eval-XXXXXX";
        return std::string(mkdtemp(tmpl));
    }();
    return d;
}

Out elastic_cmd(const std::string& args) {
    const std::string o = dir() + "/out", e = dir() + "/err";
    const std::string cmd = std::string(ELASTIC_BINARY_DIR) + "/bin/elastic " + args + " >" + o + " 2>" + e;
    const int st = std::system(cmd.c_str());
    auto slurp = [](const std::string& p) {
        std::ifstream f(p);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    };
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, slurp(o), slurp(e)};
}

#define NEED_MODEL()                                                              \
    const std::string model = default_model_path();                              \
    if (!file_exists(model)) GTEST_SKIP() << "no model at " << model << " (make model)"

}  // namespace

TEST(EvalCli, UserMistakesAreOneLine) {
    Out r = elastic_cmd("eval ruler -m nowhere.gguf --tasks bogus");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("unknown RULER task 'bogus'"), std::string::npos) << r.err;
    r = elastic_cmd("eval report " + dir() + "/missing.json");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("cannot open"), std::string::npos) << r.err;
}

// A length too short for one of the tasks is an error before any generation: one line, exit 1,
// no partial result file.
TEST(EvalCli, TooShortLengthFailsUpFront) {
    NEED_MODEL();
    const std::string out = dir() + "/never.json";
    Out r = elastic_cmd("eval ruler -m " + model + " --tasks niah_single_1 --lengths 1024,100 --samples 50 -t 1 -o " + out);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("100 tokens is too short"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("checked before the first generation"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("1/"), std::string::npos) << "no sample ran: " << r.err;
    EXPECT_FALSE(file_exists(out));
}

TEST(EvalCli, RulerRobustAndReport) {
    NEED_MODEL();
    const std::string common = " -m " + model + " --samples 1 --json -t 1 ";
    Out full = elastic_cmd("eval ruler" + common + "--tasks niah_single_1 --lengths 384 --attention full");
    ASSERT_EQ(full.code, 0) << full.err;
    std::ofstream(dir() + "/full.json") << full.out;
    Out ssa = elastic_cmd("eval ruler" + common +
                          "--tasks niah_single_1 --lengths 384 --attention ssa --sink 16 --local 64 --predictions -o " + dir() +
                          "/ssa-o.json");
    ASSERT_EQ(ssa.code, 0) << ssa.err;
    std::ofstream(dir() + "/ssa.json") << ssa.out;
    {  // -o: the same results in a file, marked complete
        std::ifstream f(dir() + "/ssa-o.json");
        ASSERT_TRUE(f.good());
        const auto jo = nlohmann::json::parse(f);
        EXPECT_TRUE(jo["complete"].get<bool>());
        EXPECT_EQ(jo["results"], nlohmann::json::parse(ssa.out)["results"]);
    }
    const auto j = nlohmann::json::parse(ssa.out);
    ASSERT_EQ(j["results"].size(), 1u);
    const auto& r = j["results"][0];
    EXPECT_EQ(r["task"], "niah_single_1");
    EXPECT_EQ(r["length"], 384);
    EXPECT_LE(r["prompt_tokens"].get<double>() + 128, 384);
    EXPECT_GE(r["score"].get<double>(), 0);
    EXPECT_LE(r["score"].get<double>(), 100);
    EXPECT_DOUBLE_EQ(r["omega_msr"].get<double>(), 1.0);
    EXPECT_GT(r["omega_esr"].get<double>(), 0.3);
    EXPECT_GT(r["prefill_seconds"].get<double>(), 0);
    // --predictions: each prediction with its prefill plan, every KV head of every layer streaming
    ASSERT_EQ(j["predictions"].size(), 1u);
    const auto& p = j["predictions"][0];
    EXPECT_EQ(p["task"], "niah_single_1");
    std::string all_ssa;
    for (int l = 0; l < 30; ++l) all_ssa += (l ? " " : "") + std::string(3, 'S');  // SmolLM2-135M: 30 layers x 3 KV heads
    EXPECT_EQ(p["plan"], all_ssa);

    Out rob = elastic_cmd("eval robust" + common + "--tasks ppl-prose,code-next-line --lengths 600 --attention full");
    ASSERT_EQ(rob.code, 0) << rob.err;
    const auto jr = nlohmann::json::parse(rob.out);
    ASSERT_EQ(jr["results"].size(), 2u);
    EXPECT_FALSE(jr["results"][0]["higher_is_better"].get<bool>());
    EXPECT_GT(jr["results"][0]["score"].get<double>(), 1.0);  // a perplexity
    EXPECT_TRUE(jr["results"][1]["extra"].contains("exact_match"));
    std::ofstream(dir() + "/robust.json") << rob.out;

#ifdef ELASTIC_HAVE_CAIRO
    const std::string plot = " --png " + dir() + "/plot.png";
#else
    const std::string plot;  // no cairo, no plot (tests/test-plots.cpp checks the message)
#endif
    // eval compare: a run against itself (per-sample scores from --predictions); a run without them
    // is one clear error.
    Out cmp = elastic_cmd("eval compare -a " + dir() + "/ssa.json -b " + dir() + "/ssa-o.json");
    ASSERT_EQ(cmp.code, 0) << cmp.err;
    EXPECT_NE(cmp.out.find("| niah_single_1 | 384 | 1 |"), std::string::npos) << cmp.out;
    EXPECT_NE(cmp.out.find("**+0.00 ± 0.00**"), std::string::npos) << cmp.out;
    cmp = elastic_cmd("eval compare -a " + dir() + "/ssa.json -b " + dir() + "/full.json");
    EXPECT_EQ(cmp.code, 1);
    EXPECT_NE(cmp.err.find("run B has no per-sample scores"), std::string::npos) << cmp.err;

    Out rep = elastic_cmd("eval report " + dir() + "/full.json " + dir() + "/ssa.json " + dir() + "/robust.json" + plot);
    ASSERT_EQ(rep.code, 0) << rep.err;
    EXPECT_NE(rep.out.find("| attention | niah 384 | ppl-prose 600 ↓ | code-next-line 600 |"), std::string::npos) << rep.out;
    EXPECT_NE(rep.out.find("| ssa |"), std::string::npos) << rep.out;
    EXPECT_NE(rep.out.find("| full |"), std::string::npos) << rep.out;
    if (!plot.empty()) {
        std::ifstream png(dir() + "/plot.png", std::ios::binary);
        char sig[8] = {};
        png.read(sig, 8);
        EXPECT_EQ(std::string(sig + 1, 3), "PNG");
    }
}

TEST(EvalCli, LongBenchOnHandWrittenFiles) {
    NEED_MODEL();
    const std::string d = dir() + "/lb";
    std::filesystem::create_directories(d);
    std::ofstream(d + "/hotpotqa.jsonl")
        << R"({"input": "Who wrote the letter?", "context": "Passage 1: The letter was written by Anna Berg in 1901. Passage 2: Rome is a city.", "answers": ["Anna Berg"], "length": 20, "all_classes": null})"
        << "\n";
    std::ofstream(d + "/trec_e.jsonl")
        << R"({"input": "Question: Who invented the telephone?\nType:", "context": "Question: Where is Rome?\nType: Location\nQuestion: Who is Ann?\nType: Human", "answers": ["Human"], "length": 5000, "all_classes": ["Human", "Location", "Entity"]})"
        << "\n";
    Out r = elastic_cmd("eval longbench -m " + model + " --data " + d + " --json -t 1 --max-length 64");
    ASSERT_EQ(r.code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    ASSERT_EQ(j["results"].size(), 2u);
    EXPECT_EQ(j["results"][0]["task"], "hotpotqa");
    EXPECT_EQ(j["results"][0]["family"], "multi-doc-qa");
    EXPECT_EQ(j["results"][0]["length_label"], "all");
    EXPECT_EQ(j["results"][1]["task"], "trec_e");
    EXPECT_EQ(j["results"][1]["length_label"], "4-8k");
    EXPECT_LE(j["results"][0]["prompt_tokens"].get<double>(), 64 + 40);  // truncated in the middle (+ chat template)
}

TEST(EvalCli, RetrievalScoresFeedStaticHeads) {
    NEED_MODEL();
    const std::string out = dir() + "/heads.json";
    Out r = elastic_cmd("inspect --retrieval-scores " + out + " -m " + model + " --samples 1 --length 320 -t 1");
    ASSERT_EQ(r.code, 0) << r.err;
    const auto scores = read_head_scores(out);
    ASSERT_EQ(scores.size(), 30u);
    for (const auto& l : scores) {
        ASSERT_EQ(l.size(), 3u);
        for (float s : l) EXPECT_TRUE(s >= 0 && s <= 1);
    }
    std::ofstream(dir() + "/text.txt") << "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
    Out run = elastic_cmd("inspect -m " + model + " -f " + dir() + "/text.txt --attention static:" + out + " --msr 0.5 --json -t 1");
    ASSERT_EQ(run.code, 0) << run.err;
    EXPECT_NEAR(nlohmann::json::parse(run.out)["omega_msr"].get<double>(), 0.5, 0.02);
}
