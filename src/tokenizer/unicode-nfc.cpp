// NFC = full canonical decomposition, canonical reordering by combining class, then canonical
// composition (UAX #15). Text made only of code points below U+0300 is already NFC and is returned
// as is, which keeps ASCII/Latin-1 input at memcpy speed.
#include "tokenizer/unicode-nfc.h"

#include <algorithm>
#include <vector>

namespace elastic {

#include "tokenizer/unicode-nfc-data.inc"

namespace {

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

int ccc_of(uint32_t cp) {
    size_t lo = 0, hi = sizeof(kCcc) / sizeof(kCcc[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < kCcc[mid][0]) hi = mid;
        else if (cp > kCcc[mid][1]) lo = mid + 1;
        else return int(kCcc[mid][2]);
    }
    return 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
    if (cp >= kSBase && cp < kSBase + kSCount) {
        uint32_t s = cp - kSBase;
        out.push_back(kLBase + s / kNCount);
        out.push_back(kVBase + (s % kNCount) / kTCount);
        if (s % kTCount) out.push_back(kTBase + s % kTCount);
        return;
    }
    const size_t n = sizeof(kDecomp) / sizeof(kDecomp[0]);
    auto it = std::lower_bound(kDecomp, kDecomp + n, cp, [](const uint32_t* row, uint32_t v) { return row[0] < v; });
    if (it != kDecomp + n && (*it)[0] == cp) {
        out.insert(out.end(), kDecompCps + (*it)[1], kDecompCps + (*it)[1] + (*it)[2]);
    } else {
        out.push_back(cp);
    }
}

// Primary composite of (a, b), or 0.
uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
        return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
        return a + (b - kTBase);
    const size_t n = sizeof(kCompose) / sizeof(kCompose[0]);
    auto it = std::lower_bound(kCompose, kCompose + n, std::make_pair(a, b), [](const uint32_t* row, std::pair<uint32_t, uint32_t> v) {
        return row[0] < v.first || (row[0] == v.first && row[1] < v.second);
    });
    if (it != kCompose + n && (*it)[0] == a && (*it)[1] == b) return (*it)[2];
    return 0;
}

// Normalizes a run of valid code points (decomposed, reordered, composed) into out.
void nfc_run(std::vector<uint32_t>& cps, std::string& out) {
    std::vector<uint32_t> d;
    d.reserve(cps.size() + 8);
    for (uint32_t cp : cps) decompose(cp, d);
    // Canonical ordering: stable sort of each run of nonzero-class marks.
    for (size_t i = 0; i < d.size();) {
        if (ccc_of(d[i]) == 0) { ++i; continue; }
        size_t j = i;
        while (j < d.size() && ccc_of(d[j]) != 0) ++j;
        std::stable_sort(d.begin() + long(i), d.begin() + long(j), [](uint32_t a, uint32_t b) { return ccc_of(a) < ccc_of(b); });
        i = j;
    }
    // Canonical composition: a mark joins the last starter unless something between blocks it
    // (a starter, or a mark of the same or higher class; the run is ordered, so the last one decides).
    size_t starter = SIZE_MAX;
    int last_ccc = 0;
    std::vector<uint32_t> r;
    r.reserve(d.size());
    for (uint32_t cp : d) {
        int c = ccc_of(cp);
        if (starter != SIZE_MAX && (r.size() == starter + 1 || (last_ccc != 0 && last_ccc < c))) {
            if (uint32_t comp = compose(r[starter], cp)) { r[starter] = comp; continue; }
        }
        if (c == 0) starter = r.size();
        last_ccc = c;
        r.push_back(cp);
    }
    for (uint32_t cp : r) utf8_append(out, cp);
    cps.clear();
}

}  // namespace

int32_t utf8_next(std::string_view s, size_t& i) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    size_t n = s.size();
    unsigned char c = p[i];
    if (c < 0x80) { ++i; return c; }
    int len;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
    else { ++i; return -1; }
    if (i + size_t(len) > n) { ++i; return -1; }
    for (int k = 1; k < len; ++k) {
        if ((p[i + size_t(k)] & 0xC0) != 0x80) { ++i; return -1; }
        cp = (cp << 6) | (p[i + size_t(k)] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) { ++i; return -1; }
    i += size_t(len);
    return int32_t(cp);
}

void utf8_append(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

bool utf8_valid(std::string_view s) {
    for (size_t i = 0; i < s.size();)
        if (utf8_next(s, i) < 0) return false;
    return true;
}

std::string utf8_lossy(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    for (size_t i = 0; i < s.size();) {
        size_t j = i;
        if (utf8_next(s, j) >= 0) { out.append(s.data() + i, j - i); i = j; continue; }
        // Maximal subpart: a valid lead byte followed by as many valid continuation bytes as fit.
        unsigned char c = p[i];
        size_t len = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 1;
        size_t k = 1;
        for (; k < len && i + k < s.size(); ++k) {
            unsigned char b = p[i + k];
            unsigned char lo = 0x80, hi = 0xBF;
            if (k == 1) {
                if (c == 0xE0) lo = 0xA0;
                else if (c == 0xED) hi = 0x9F;
                else if (c == 0xF0) lo = 0x90;
                else if (c == 0xF4) hi = 0x8F;
            }
            if (b < lo || b > hi) break;
        }
        out += "\xEF\xBF\xBD";
        i += k;
    }
    return out;
}

std::string nfc_normalize(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    bool simple = true;
    for (size_t i = 0; i < s.size() && simple; ++i) simple = p[i] < 0xCC;  // all code points < U+0300
    if (simple) return std::string(s);
    std::string out;
    out.reserve(s.size());
    std::vector<uint32_t> run;
    for (size_t i = 0; i < s.size();) {
        size_t start = i;
        int32_t cp = utf8_next(s, i);
        if (cp < 0) {
            nfc_run(run, out);
            out.append(s.data() + start, i - start);
        } else {
            run.push_back(uint32_t(cp));
        }
    }
    nfc_run(run, out);
    return out;
}

}  // namespace elastic
