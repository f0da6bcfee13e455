// The training-data reader of `elastic train-router` (see trainer-data.h).
#include "train/trainer-data.h"

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "train/data.h"

namespace elastic::train {


std::vector<TrainSample> parse_train_data(const std::string& text, const std::string& name, const EncodeFn& encode,
                                          int64_t max_seq, bool skip_bad, DataReport* report) {
    DataReport local;
    DataReport& rep = report ? *report : local;
    std::vector<TrainSample> out;
    std::istringstream in(text);
    std::string line;
    int64_t no = 0;
    while (std::getline(in, line)) {
        ++no;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        ++rep.lines;
        try {
            TextSample ts;
            if (const std::string why = parse_text_sample(line, ts); !why.empty()) throw std::runtime_error(why);
            const int c = ts.category == "sensitive" ? kSensitive : kRobust;
            std::vector<int32_t> p, a;
            encode(ts, p, a);
            if (p.empty()) throw std::runtime_error("empty prompt");
            if (a.empty()) throw std::runtime_error("empty answer");
            const int64_t T = int64_t(p.size() + a.size());
            if (max_seq > 0 && T > max_seq)
                throw std::runtime_error(strprintf("%lld tokens, longer than --max-seq %lld", (long long)T,
                                                   (long long)max_seq));
            out.push_back(make_sample(p, a, c));
            out.back().line = no;
        } catch (const std::runtime_error& e) {
            const std::string msg = strprintf("%s:%lld: %s", name.c_str(), (long long)no, e.what());
            if (!skip_bad) fail("%s", msg.c_str());
            ++rep.skipped;
            rep.problems.push_back(msg);
        }
    }
    if (out.empty()) fail("%s: no usable training samples (%lld lines, %lld skipped)", name.c_str(), (long long)rep.lines,
                          (long long)rep.skipped);
    return out;
}

std::vector<TrainSample> read_train_data(const std::string& path, const EncodeFn& encode, int64_t max_seq,
                                         bool skip_bad, DataReport* report) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("cannot read training data %s", path.c_str());
    std::stringstream ss;
    ss << f.rdbuf();
    return parse_train_data(ss.str(), path, encode, max_seq, skip_bad, report);
}

std::string file_hash(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("cannot read %s", path.c_str());
    uint64_t h = 1469598103934665603ull;
    char buf[65536];
    while (f.read(buf, sizeof buf) || f.gcount() > 0) {
        for (std::streamsize i = 0; i < f.gcount(); ++i) {
            h ^= uint8_t(buf[i]);
            h *= 1099511628211ull;
        }
        if (!f) break;
    }
    return strprintf("%016llx", (unsigned long long)h);
}

}  // namespace elastic::train
