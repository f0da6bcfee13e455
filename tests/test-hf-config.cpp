// HF config.json tests: real configs of SmolLM2-135M, Llama-3.1-8B-Instruct (llama3 rope scaling)
// and Qwen3-0.6B (explicit head_dim), the transformers-5 spelling (rope_parameters, dtype), a
// write -> parse round trip, and one clear error per malformed or unsupported config.
//
// Checked by hand with transformers 5.24 (C++ tests must not need Python), for the three configs below:
//  - write_hf_config(parse(config)) saved as config.json loads with AutoConfig.from_pretrained as
//    LlamaConfig / Qwen3Config whose to_dict() equals that of the original config, except
//    initializer_range (we write 0.02) and SmolLM2's unused is_llama_config / rope_interleaved;
//    rope_parameters came out as {rope_type, rope_theta[, factor, low/high_freq_factor,
//    original_max_position_embeddings]} and dtype as bfloat16.
//  - AutoConfig(...).save_pretrained() output (transformers-5 keys: rope_parameters, dtype) parses
//    to exactly the same HFConfig as the original file.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "formats/hf-config.h"

using namespace elastic;

namespace {

const char* kSmolLM2 = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "eos_token_id": 0,
  "hidden_act": "silu",
  "hidden_size": 576,
  "initializer_range": 0.041666666666666664,
  "intermediate_size": 1536,
  "is_llama_config": true,
  "max_position_embeddings": 8192,
  "model_type": "llama",
  "num_attention_heads": 9,
  "num_hidden_layers": 30,
  "num_key_value_heads": 3,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_interleaved": false,
  "rope_scaling": null,
  "rope_theta": 100000,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "vocab_size": 49152
})";

const char* kLlama31 = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

const char* kQwen3 = R"({
  "architectures": ["Qwen3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 1024,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "max_position_embeddings": 40960,
  "max_window_layers": 28,
  "model_type": "qwen3",
  "num_attention_heads": 16,
  "num_hidden_layers": 28,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "sliding_window": null,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.51.0",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

// Replaces the first occurrence of `from` (which must exist) in `s`.
std::string edit(std::string s, const std::string& from, const std::string& to) {
    size_t p = s.find(from);
    EXPECT_NE(p, std::string::npos) << from;
    if (p != std::string::npos) s.replace(p, from.size(), to);
    return s;
}

void expect_error(const std::string& text, const std::vector<std::string>& needles) {
    try {
        parse_hf_config_text(text, "cfg.json");
        ADD_FAILURE() << "no error; expected one mentioning " << needles[0];
    } catch (const Error& e) {
        std::string msg = e.what();
        EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
        EXPECT_EQ(msg.rfind("cfg.json: ", 0), 0u) << msg;
        for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    }
}

void expect_same(const HFConfig& a, const HFConfig& b) {
    EXPECT_EQ(a.architecture, b.architecture);
    EXPECT_EQ(a.hidden_size, b.hidden_size);
    EXPECT_EQ(a.intermediate_size, b.intermediate_size);
    EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
    EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
    EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
    EXPECT_EQ(a.head_dim, b.head_dim);
    EXPECT_EQ(a.vocab_size, b.vocab_size);
    EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
    EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
    EXPECT_EQ(a.rope_theta, b.rope_theta);
    EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
    EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
    EXPECT_EQ(a.rope_scaling.low_freq_factor, b.rope_scaling.low_freq_factor);
    EXPECT_EQ(a.rope_scaling.high_freq_factor, b.rope_scaling.high_freq_factor);
    EXPECT_EQ(a.rope_scaling.original_max_position_embeddings, b.rope_scaling.original_max_position_embeddings);
    EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
    EXPECT_EQ(a.bos_token_id, b.bos_token_id);
    EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
    EXPECT_EQ(a.torch_dtype, b.torch_dtype);
}

}  // namespace

TEST(HfConfig, SmolLM2) {
    HFConfig c = parse_hf_config_text(kSmolLM2, "smollm2");
    EXPECT_EQ(c.architecture, "LlamaForCausalLM");
    EXPECT_FALSE(c.is_qwen3());
    EXPECT_STREQ(c.model_type(), "llama");
    EXPECT_EQ(c.num_hidden_layers, 30);
    EXPECT_EQ(c.hidden_size, 576);
    EXPECT_EQ(c.num_attention_heads, 9);
    EXPECT_EQ(c.num_key_value_heads, 3);
    EXPECT_EQ(c.head_dim, 64);  // derived: 576 / 9
    EXPECT_EQ(c.intermediate_size, 1536);
    EXPECT_EQ(c.vocab_size, 49152);
    EXPECT_EQ(c.max_position_embeddings, 8192);
    EXPECT_EQ(c.rms_norm_eps, 1e-5);
    EXPECT_EQ(c.rope_theta, 100000.0);
    EXPECT_EQ(c.rope_scaling.type, "default");
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_EQ(c.bos_token_id, 0);
    EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{0});
    EXPECT_EQ(c.torch_dtype, "bfloat16");
}

TEST(HfConfig, Llama31WithLlama3RopeScaling) {
    HFConfig c = parse_hf_config_text(kLlama31, "llama31");
    EXPECT_EQ(c.num_attention_heads, 32);
    EXPECT_EQ(c.num_key_value_heads, 8);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.vocab_size, 128256);
    EXPECT_EQ(c.rope_theta, 500000.0);
    EXPECT_EQ(c.rope_scaling.type, "llama3");
    EXPECT_EQ(c.rope_scaling.factor, 8.0);
    EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0);
    EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_EQ(c.bos_token_id, 128000);
    EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
}

TEST(HfConfig, Qwen3WithExplicitHeadDim) {
    HFConfig c = parse_hf_config_text(kQwen3, "qwen3");
    EXPECT_TRUE(c.is_qwen3());
    EXPECT_STREQ(c.model_type(), "qwen3");
    EXPECT_EQ(c.hidden_size, 1024);
    EXPECT_EQ(c.head_dim, 128);  // not 1024 / 16
    EXPECT_EQ(c.num_attention_heads, 16);
    EXPECT_EQ(c.num_key_value_heads, 8);
    EXPECT_EQ(c.num_hidden_layers, 28);
    EXPECT_EQ(c.rms_norm_eps, 1e-6);
    EXPECT_EQ(c.rope_theta, 1e6);
    EXPECT_EQ(c.rope_scaling.type, "default");
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151645});
}

TEST(HfConfig, DefaultsAndAlternateSpellings) {
    // minimal config: kv heads, head_dim, rope_theta, tie and token ids take their defaults
    HFConfig c = parse_hf_config_text(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-6})", "min");
    EXPECT_EQ(c.num_key_value_heads, 4);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.rope_theta, 10000.0);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_FALSE(c.bos_token_id.has_value());
    EXPECT_TRUE(c.eos_token_ids.empty());
    EXPECT_EQ(c.torch_dtype, "");

    // transformers 5 writes rope_parameters and dtype
    std::string t5 = edit(kLlama31, R"("rope_theta": 500000.0,)", "");
    t5 = edit(t5, R"("rope_type": "llama3")", R"("rope_type": "llama3", "rope_theta": 500000.0)");
    t5 = edit(t5, R"("rope_scaling")", R"("rope_parameters")");
    t5 = edit(t5, R"("torch_dtype")", R"("dtype")");
    expect_same(parse_hf_config_text(t5, "t5"), parse_hf_config_text(kLlama31, "llama31"));

    // legacy "type" key, linear scaling, integral floats for integers
    c = parse_hf_config_text(edit(kSmolLM2, R"("rope_scaling": null)", R"("rope_scaling": {"type": "linear", "factor": 2})"),
                             "linear");
    EXPECT_EQ(c.rope_scaling.type, "linear");
    EXPECT_EQ(c.rope_scaling.factor, 2.0);
    c = parse_hf_config_text(edit(kSmolLM2, R"("rope_scaling": null)", R"("rope_scaling": {"rope_type": "default"})"), "d");
    EXPECT_EQ(c.rope_scaling.type, "default");
    EXPECT_EQ(parse_hf_config_text(edit(kSmolLM2, "8192", "8192.0"), "f").max_position_embeddings, 8192);
}

TEST(HfConfig, WriteThenParseRoundTrips) {
    for (const char* text : {kSmolLM2, kLlama31, kQwen3}) {
        HFConfig a = parse_hf_config_text(text, "orig");
        std::string out = write_hf_config(a);
        EXPECT_NE(out.find(std::string("\"model_type\": \"") + a.model_type() + "\""), std::string::npos) << out;
        EXPECT_NE(out.find("\"hidden_act\": \"silu\""), std::string::npos);
        EXPECT_NE(out.find("\"attention_bias\": false"), std::string::npos);
        expect_same(parse_hf_config_text(out, "written"), a);
    }
}

TEST(HfConfig, FileAndDirectory) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "elastic-cfg-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    const std::string file = tmpl + "/config.json";
    std::ofstream(file) << kQwen3;
    EXPECT_EQ(parse_hf_config(tmpl).head_dim, 128);
    EXPECT_EQ(parse_hf_config(file).head_dim, 128);
    std::ofstream(file) << R"({"architectures": ["LlamaForCausalLM"]})";
    try {
        parse_hf_config(tmpl);
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    }
    std::filesystem::remove_all(tmpl);
    EXPECT_THROW(parse_hf_config(tmpl), Error);  // gone
}

TEST(HfConfig, Errors) {
    expect_error("{", {"invalid JSON"});
    expect_error("[]", {"not an object"});
    expect_error(edit(kSmolLM2, "LlamaForCausalLM", "MistralForCausalLM"), {"MistralForCausalLM", "not supported"});
    expect_error(edit(kSmolLM2, R"(["LlamaForCausalLM"])", "[]"), {"architectures"});
    expect_error(edit(kSmolLM2, R"("architectures": ["LlamaForCausalLM"],)", ""), {"missing", "architectures"});
    expect_error(edit(kSmolLM2, R"("hidden_size": 576,)", ""), {"missing", "\"hidden_size\""});
    expect_error(edit(kSmolLM2, R"("vocab_size": 49152)", R"("vocab_size": null)"), {"missing", "vocab_size"});
    expect_error(edit(kSmolLM2, R"("hidden_size": 576)", R"("hidden_size": "576")"), {"\"hidden_size\"", "integer", "\"576\""});
    expect_error(edit(kSmolLM2, R"("hidden_size": 576)", R"("hidden_size": 576.5)"), {"\"hidden_size\"", "integer"});
    expect_error(edit(kSmolLM2, R"("num_hidden_layers": 30)", R"("num_hidden_layers": 0)"), {"num_hidden_layers", "positive"});
    expect_error(edit(kSmolLM2, R"("num_hidden_layers": 30)", R"("num_hidden_layers": -3)"), {"num_hidden_layers"});
    expect_error(edit(kSmolLM2, R"("vocab_size": 49152)", R"("vocab_size": 1e300)"), {"vocab_size"});
    expect_error(edit(kSmolLM2, R"("rms_norm_eps": 1e-05)", R"("rms_norm_eps": 0)"), {"rms_norm_eps", "positive"});
    expect_error(edit(kSmolLM2, R"("tie_word_embeddings": true)", R"("tie_word_embeddings": 1)"),
                 {"tie_word_embeddings", "true or false"});
    expect_error(edit(kSmolLM2, R"("num_key_value_heads": 3)", R"("num_key_value_heads": 4)"),
                 {"num_attention_heads 9", "num_key_value_heads 4"});
    expect_error(edit(kSmolLM2, R"("hidden_size": 576)", R"("hidden_size": 577)"), {"hidden_size 577", "head_dim"});
    expect_error(edit(kSmolLM2, R"("eos_token_id": 0)", R"("eos_token_id": [1, "x"])"), {"eos_token_id"});
    expect_error(edit(kSmolLM2, R"("bos_token_id": 0)", R"("bos_token_id": [1, 2])"), {"bos_token_id"});
    expect_error(edit(kSmolLM2, R"("rope_scaling": null)", R"("rope_scaling": {"rope_type": "yarn", "factor": 4})"),
                 {"'yarn'", "not supported"});
    expect_error(edit(kSmolLM2, R"("rope_scaling": null)", R"("rope_scaling": "llama3")"), {"rope_scaling", "object"});
    expect_error(edit(kLlama31, R"("low_freq_factor": 1.0,)", ""), {"missing", "rope_scaling.low_freq_factor"});
    expect_error(edit(kLlama31, R"("high_freq_factor": 4.0)", R"("high_freq_factor": 1.0)"), {"high_freq_factor"});
    expect_error(edit(kLlama31, R"("factor": 8.0)", R"("factor": "8")"), {"rope_scaling.factor", "number"});
    expect_error(edit(kSmolLM2, R"("hidden_act": "silu")", R"("hidden_act": "gelu")"), {"gelu"});
    expect_error(edit(kSmolLM2, R"("attention_bias": false)", R"("attention_bias": true)"), {"attention_bias"});
    expect_error(edit(kQwen3, R"("use_sliding_window": false)", R"("use_sliding_window": true)"), {"use_sliding_window"});
    expect_error(edit(kQwen3, R"("torch_dtype": "bfloat16")", R"("torch_dtype": 16)"), {"torch_dtype", "string"});
}
