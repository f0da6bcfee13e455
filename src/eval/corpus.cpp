#include "eval/corpus.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

namespace elastic::eval {

namespace fs = std::filesystem;

size_t Corpus::bytes() const {
    size_t n = 0;
    for (const auto& d : docs) n += d.size();
    return n;
}

namespace {
bool looks_like_text(const std::string& s) {
    if (s.empty()) return false;
    size_t ctrl = 0;
    for (unsigned char c : s) {
        if (c == 0) return false;
        ctrl += c < 0x20 && c != '\n' && c != '\t' && c != '\r' && c != '\f';
    }
    return ctrl * 100 < s.size();
}
}  // namespace

Corpus load_corpus(const std::string& dir, const std::vector<std::string>& exts, size_t max_bytes) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) fail("%s: not a directory", dir.c_str());
    std::vector<std::string> paths;
    for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (!it->is_regular_file(ec)) continue;
        const std::string p = it->path().string();
        bool ok = exts.empty();
        for (const auto& e : exts) ok |= p.size() >= e.size() && p.compare(p.size() - e.size(), e.size(), e) == 0;
        if (ok) paths.push_back(p);
    }
    std::sort(paths.begin(), paths.end());
    Corpus c;
    std::set<std::pair<dev_t, ino_t>> seen;
    size_t total = 0;
    for (const auto& p : paths) {
        struct stat st;
        if (stat(p.c_str(), &st) != 0 || !seen.insert({st.st_dev, st.st_ino}).second) continue;
        std::ifstream in(p, std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        std::string text = ss.str();
        if (!looks_like_text(text)) continue;
        total += text.size();
        c.names.push_back(p);
        c.docs.push_back(std::move(text));
        if (total >= max_bytes) break;
    }
    if (c.docs.empty()) fail("%s: no text files found", dir.c_str());
    return c;
}

std::vector<std::string> corpus_words(const Corpus& c) {
    std::vector<std::string> w;
    for (const auto& d : c.docs) {
        std::istringstream in(d);
        std::string s;
        while (in >> s) w.push_back(s);
    }
    return w;
}

const std::vector<std::string>& adjectives() {
    static const std::vector<std::string> v = {
        "abundant", "adorable", "agreeable", "alive", "ancient", "angry", "bashful", "beautiful", "bitter", "black",
        "blue", "boiling", "brave", "breezy", "brief", "bright", "broad", "broken", "bumpy", "calm", "careful",
        "cheerful", "chilly", "clean", "clever", "cloudy", "clumsy", "cold", "colossal", "cool", "crooked", "cuddly",
        "curly", "damaged", "damp", "dark", "deep", "defeated", "delightful", "dirty", "dry", "dusty", "eager",
        "early", "elegant", "empty", "enchanting", "faint", "faithful", "famous", "fancy", "fast", "fierce", "flat",
        "fluffy", "fresh", "friendly", "gentle", "gigantic", "glamorous", "gorgeous", "grumpy", "handsome", "happy",
        "heavy", "helpful", "hollow", "huge", "icy", "immense", "jolly", "kind", "large", "lazy", "little", "lively",
        "loud", "lucky", "magnificent", "mighty", "miniature", "modern", "narrow", "nervous", "nice", "noisy", "odd",
        "old", "orange", "plain", "polite", "proud", "purple", "quaint", "quick", "quiet", "rapid", "red", "rich",
        "round", "salty", "scary", "shallow", "sharp", "shiny", "short", "silly", "skinny", "slow", "small", "smooth",
        "soft", "sour", "sparkling", "spicy", "square", "steady", "sticky", "strong", "sweet", "swift", "tall",
        "tame", "tender", "thankful", "thick", "thin", "tiny", "ugly", "vast", "victorious", "warm", "wet", "whispering",
        "wide", "wild", "witty", "wooden", "yellow", "young", "zany", "zealous"};
    return v;
}

const std::vector<std::string>& nouns() {
    static const std::vector<std::string> v = {
        "account", "airport", "anchor", "animal", "answer", "apple", "arch", "argument", "badge", "bakery", "balloon",
        "banana", "basket", "beach", "bell", "bicycle", "bird", "blanket", "boat", "book", "bottle", "bracelet",
        "bridge", "brother", "bucket", "butter", "cabinet", "camera", "candle", "canvas", "carpet", "castle", "cattle",
        "chair", "cherry", "chimney", "church", "circle", "cloud", "coffee", "collar", "copper", "cottage", "cousin",
        "cracker", "crayon", "crown", "curtain", "cushion", "desk", "diamond", "dinner", "doctor", "donkey", "dragon",
        "drawer", "eagle", "engine", "feather", "fiddle", "finger", "flower", "forest", "fountain", "garden", "giraffe",
        "glove", "guitar", "hammer", "harbor", "helmet", "honey", "horse", "island", "jacket", "jewel", "kettle",
        "kitten", "ladder", "lantern", "lemon", "library", "lizard", "magnet", "marble", "meadow", "mirror", "monkey",
        "mountain", "napkin", "needle", "notebook", "ocean", "orchard", "oven", "paddle", "painting", "parcel",
        "pencil", "pepper", "piano", "pillow", "planet", "pocket", "potato", "puzzle", "quarter", "rabbit", "railway",
        "ribbon", "river", "rocket", "saddle", "sailor", "sandwich", "scarf", "school", "shadow", "shelf", "shovel",
        "spider", "spoon", "squirrel", "station", "statue", "stomach", "sweater", "table", "teapot", "thunder",
        "ticket", "tiger", "toaster", "tomato", "towel", "tractor", "trumpet", "tunnel", "umbrella", "valley",
        "violin", "wagon", "wallet", "window", "wizard", "yacht", "zebra"};
    return v;
}

std::vector<std::string> word_pool(const Corpus* prose, size_t n) {
    std::vector<std::string> out;
    std::set<std::string> seen;
    auto add = [&](const std::string& w) {
        if (out.size() < n && seen.insert(w).second) out.push_back(w);
    };
    for (const auto& w : nouns()) add(w);
    for (const auto& w : adjectives()) add(w);
    if (prose)
        for (const auto& raw : corpus_words(*prose)) {
            if (out.size() >= n) break;
            if (raw.size() < 4 || raw.size() > 10) continue;
            bool alpha = true;
            for (char ch : raw) alpha &= ch >= 'a' && ch <= 'z';
            if (alpha) add(raw);
        }
    static const char* cons[] = {"b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"};
    static const char* vow[] = {"a", "e", "i", "o", "u"};
    for (size_t i = 0; out.size() < n; ++i) {  // three syllables: 70^3 = 343000 words
        std::string w;
        size_t x = i;
        for (int s = 0; s < 3; ++s, x /= 70) w += std::string(cons[x % 70 / 5]) + vow[x % 5];
        add(w);
        if (i > 343000) fail("word pool: %zu distinct words requested, too many", n);
    }
    return out;
}

}  // namespace elastic::eval
