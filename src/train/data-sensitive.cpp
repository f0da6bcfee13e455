// Sparsity-sensitive training tasks: the answer sits far back in a haystack of real prose.
// Their own vocabulary and sentences, none of eval's (RULER's "special magic numbers/uuids",
// adjective-noun keys, 7-digit values, "VAR X = Y" chains): place-name keys with codes like
// "KT-4821-QB", registers with hexadecimal values assigned with ":=", facts about named people.
//   kv-single    one record in the haystack, asked for by its place
//   kv-multi     4-12 records, two or three asked for at once (answer "place: code; ...")
//   var-chain    a chain of 2-6 ":=" copies among distractor chains; the value the last one holds
//   haystack-qa  one fact sentence among 1-4 distractor facts, asked as a question
#include <algorithm>
#include <set>

#include "core/error.h"
#include "train/data-tasks.h"

namespace elastic::train::detail {

namespace {

using eval::Rng;

template <class T>
const T& pick(const std::vector<T>& v, Rng& r) {
    return v[size_t(r.below(v.size()))];
}

const std::vector<std::string>& places() {
    static const std::vector<std::string> v = {
        "Lisbon", "Oslo", "Nairobi", "Quito", "Hanoi", "Tbilisi", "Montevideo", "Reykjavik", "Krakow", "Valparaiso",
        "Dakar", "Tallinn", "Cusco", "Mombasa", "Ljubljana", "Hobart", "Tromso", "Marrakesh", "Yerevan", "Windhoek",
        "Porto", "Bergen", "Antwerp", "Gdansk", "Brno", "Cork", "Galway", "Utrecht", "Aarhus", "Turku",
        "Split", "Zadar", "Bilbao", "Seville", "Granada", "Toulouse", "Lyon", "Nantes", "Bologna", "Verona",
        "Trieste", "Salzburg", "Graz", "Lucerne", "Basel", "Freiburg", "Leipzig", "Dresden", "Bremen", "Kiel",
        "Malmo", "Uppsala", "Tampere", "Riga", "Vilnius", "Lviv", "Odesa", "Varna", "Plovdiv", "Skopje",
        "Izmir", "Tabriz", "Muscat", "Doha", "Kochi", "Mysore", "Kandy", "Chiang Mai", "Da Nang", "Cebu",
        "Kyoto", "Sapporo", "Busan", "Daegu", "Tainan", "Perth", "Darwin", "Dunedin", "Nelson", "Suva",
        "Halifax", "Quebec", "Regina", "Boise", "Tucson", "Mobile", "Savannah", "Oaxaca", "Merida", "Arequipa",
        "Salta", "Rosario", "Recife", "Belem", "Manaus", "Cuenca", "Cartagena", "Leon", "Granby", "Iqaluit"};
    return v;
}
const std::vector<std::string>& record_kinds() {
    static const std::vector<std::string> v = {"locker code", "gate code", "depot code", "shelf mark", "ferry ticket code",
                                               "storage unit code", "archive box label", "courier reference"};
    return v;
}
const std::vector<std::string>& registers() {
    static const std::vector<std::string> v = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
                                               "iota", "kappa", "lambda", "sigma", "omega", "rho", "tau", "phi"};
    return v;
}
const std::vector<std::string>& first_names() {
    static const std::vector<std::string> v = {"Amara", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Goran", "Hana",
                                               "Ines", "Jonas", "Keiko", "Lars", "Marisol", "Nikhil", "Oona", "Pavel",
                                               "Quentin", "Rosa", "Soren", "Tamsin", "Ulla", "Viktor", "Wanjiru", "Yusuf"};
    return v;
}
const std::vector<std::string>& surnames() {
    static const std::vector<std::string> v = {"Okafor", "Lindqvist", "Moreau", "Petrov", "Yilmaz", "Haddad", "Novak",
                                               "Sato", "Ferreira", "Brandt", "Kowalski", "Dubois", "Castillo", "Iyer",
                                               "Virtanen", "Horvat", "Quispe", "Nakamura", "Abebe", "Rossi"};
    return v;
}
const std::vector<std::string>& colours() {
    static const std::vector<std::string> v = {"crimson", "teal", "ochre", "lilac", "navy", "olive", "amber", "maroon", "ivory", "turquoise"};
    return v;
}
const std::vector<std::string>& objects() {
    static const std::vector<std::string> v = {"suitcase", "typewriter", "accordion", "telescope", "sewing machine", "rocking chair",
                                               "gramophone", "canoe", "tool chest", "chess set"};
    return v;
}
const std::vector<std::string>& jobs() {
    static const std::vector<std::string> v = {"cartographer", "glassblower", "beekeeper", "locksmith", "pharmacist", "surveyor",
                                               "bookbinder", "translator", "ferry captain", "stonemason", "radiologist", "luthier"};
    return v;
}
const std::vector<std::string>& fruits() {
    static const std::vector<std::string> v = {"quince", "persimmon", "lychee", "gooseberry", "pomegranate", "apricot", "mulberry", "guava"};
    return v;
}

std::string code(Rng& r) {  // "KT-4821-QB"
    static const char* L = "ABCDEFGHJKLMNPQRSTUVWXYZ";
    std::string s;
    for (int i = 0; i < 2; ++i) s += L[r.below(24)];
    s += "-" + std::to_string(r.range(1000, 9999)) + "-";
    for (int i = 0; i < 2; ++i) s += L[r.below(24)];
    return s;
}
std::string hex_value(Rng& r) {
    static const char* H = "0123456789abcdef";
    std::string s = "0x";
    for (int i = 0; i < 6; ++i) s += H[r.below(16)];
    return s;
}

// Distinct draws from a generator.
template <class F>
std::vector<std::string> distinct(size_t n, Rng& r, F f) {
    std::set<std::string> seen;
    std::vector<std::string> out;
    for (int tries = 0; out.size() < n && tries < 10000; ++tries) {
        std::string x = f(r);
        if (seen.insert(x).second) out.push_back(x);
    }
    return out;
}

// Random prose paragraphs until the draft reaches `target` tokens (leaving `reserve` for units to
// insert afterwards).
void fill_haystack(Draft& d, int64_t target, int64_t reserve, Rng& r, TaskContext& ctx) {
    int64_t budget = target - ctx.fixed_tokens(d) - reserve;
    const size_t n = ctx.src.paragraphs.size();
    for (int misses = 0; misses < 16 && budget > 8;) {
        const size_t i = size_t(r.below(n));
        const int64_t t = ctx.paragraph_tokens(i) + 1;
        if (t > budget) {
            ++misses;
            continue;
        }
        d.units.push_back(ctx.src.paragraphs[i]);
        d.keep.push_back(false);
        budget -= t;
    }
}

// Inserts each group's lines at random places, a group's lines in their order.
void insert_groups(Draft& d, const std::vector<std::vector<std::string>>& groups, Rng& r) {
    std::vector<std::pair<size_t, std::string>> at;  // (slot before units[slot], line)
    for (const auto& g : groups) {
        std::vector<size_t> slots;
        for (size_t k = 0; k < g.size(); ++k) slots.push_back(size_t(r.below(d.units.size() + 1)));
        std::sort(slots.begin(), slots.end());
        for (size_t k = 0; k < g.size(); ++k) at.push_back({slots[k], g[k]});
    }
    // stable: lines of one group sharing a slot stay in their order
    std::stable_sort(at.begin(), at.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::string> units;
    std::vector<bool> keep;
    size_t j = 0;
    for (size_t i = 0; i <= d.units.size(); ++i) {
        for (; j < at.size() && at[j].first == i; ++j) {
            units.push_back(at[j].second);
            keep.push_back(true);
        }
        if (i < d.units.size()) {
            units.push_back(d.units[i]);
            keep.push_back(d.keep[i]);
        }
    }
    d.units = std::move(units);
    d.keep = std::move(keep);
}

const char* kHeads[] = {
    "Read the documentation excerpts below carefully; a few records are hidden among them.\n\n",
    "The text below mixes ordinary documentation with some short logbook entries. Keep track of the entries.\n\n",
    "Study the following material. You will be asked about details that appear only once in it.\n\n"};

std::string record_sentence(const std::string& kind, const std::string& place, const std::string& value, Rng& r) {
    switch (r.below(3)) {
        case 0: return "Logbook entry: the " + kind + " for " + place + " is " + value + ".";
        case 1: return "According to the dispatcher, " + place + " uses the " + kind + " " + value + ".";
        default: return "For the record, " + value + " is the " + kind + " assigned to " + place + ".";
    }
}

Draft kv_records(int64_t target, Rng& r, TaskContext& ctx, bool multi) {
    const std::string kind = pick(record_kinds(), r);
    const size_t n = multi ? size_t(r.range(4, 12)) : size_t(r.range(1, 3));
    const size_t asked = multi ? size_t(r.range(2, 3)) : 1;
    std::vector<std::string> keys = distinct(n, r, [](Rng& g) { return pick(places(), g); });
    std::vector<std::string> values = distinct(n, r, code);
    Draft d;
    d.head = kHeads[r.below(3)];
    std::vector<std::vector<std::string>> groups;
    for (size_t i = 0; i < n; ++i) groups.push_back({record_sentence(kind, keys[i], values[i], r)});
    std::vector<size_t> q = r.sample(n, asked);
    if (!multi) {
        d.tail = r.below(2) ? "\n\nQuestion: what is the " + kind + " for " + keys[q[0]] + "? Reply with the code alone."
                            : "\n\nWhich " + kind + " was given to " + keys[q[0]] + " in the text above? Answer with just the code.";
        d.answer = values[q[0]];
    } else {
        std::string list;
        for (size_t k = 0; k < asked; ++k) {
            list += (k == 0 ? "" : k + 1 == asked ? " and " : ", ") + keys[q[k]];
            d.answer += (k ? "; " : "") + keys[q[k]] + ": " + values[q[k]];
        }
        d.tail = "\n\nQuestion: give the " + kind + " of " + list + ", in that order, as 'place: code' separated by semicolons.";
    }
    int64_t reserve = 0;
    for (const auto& g : groups) reserve += ctx.tokens(g[0]) + 1;
    fill_haystack(d, target, reserve, r, ctx);
    insert_groups(d, groups, r);
    return d;
}

Draft var_chain(int64_t target, Rng& r, TaskContext& ctx) {
    const size_t hops = size_t(r.range(2, 6)), chains = size_t(r.range(2, 4));
    std::vector<std::string> names = distinct(hops + 1 + chains * 4, r, [](Rng& g) {
        return pick(registers(), g) + "_" + std::to_string(g.range(1, 99));
    });
    std::vector<std::string> values = distinct(chains, r, hex_value);
    std::vector<std::vector<std::string>> groups;
    size_t next = 0;
    std::string last;
    for (size_t c = 0; c < chains; ++c) {
        const size_t len = c == 0 ? hops : size_t(r.range(1, 4));
        std::vector<std::string> g = {names[next] + " := " + values[c]};
        for (size_t k = 0; k < len; ++k) {
            g.push_back(names[next + k + 1] + " := " + names[next + k]);
            if (c == 0) last = names[next + k + 1];
        }
        next += len + 1;
        groups.push_back(g);
    }
    Draft d;
    d.head = r.below(2) ? "Register assignments written as 'name := value' are scattered through the text below; each copies a value into a register.\n\n"
                        : "Keep track of the ':=' assignments hidden in the following text. An assignment copies the value on its right into the register on its left.\n\n";
    d.tail = "\n\nQuestion: after all the := assignments above, which hexadecimal value does " + last + " hold? Answer with the value only.";
    d.answer = values[0];
    int64_t reserve = 0;
    for (const auto& g : groups)
        for (const auto& l : g) reserve += ctx.tokens(l) + 1;
    fill_haystack(d, target, reserve, r, ctx);
    insert_groups(d, groups, r);
    return d;
}

struct Fact {
    std::string sentence, question, answer;
};

Fact person_fact(const std::string& p, Rng& r) {
    switch (r.below(5)) {
        case 0: {
            const std::string city = pick(places(), r), year = std::to_string(r.range(1901, 2019));
            return {p + " moved to " + city + " in " + year + ".", "In which year did " + p + " move to " + city + "?", year};
        }
        case 1: {
            const std::string col = pick(colours(), r), obj = pick(objects(), r);
            return {p + " keeps a " + col + " " + obj + " in the attic.", "What colour is the " + obj + " that " + p + " keeps in the attic?", col};
        }
        case 2: {
            const std::string job = pick(jobs(), r), city = pick(places(), r);
            return {p + " works as a " + job + " in " + city + ".", "What does " + p + " do for a living?", job};
        }
        case 3: {
            const std::string obj = pick(objects(), r), age = std::to_string(r.range(3, 95));
            return {"The " + obj + " that " + p + " lent to a neighbour was " + age + " years old.",
                    "How many years old was the " + obj + " that " + p + " lent to a neighbour?", age};
        }
        default: {
            const std::string f = pick(fruits(), r);
            return {p + "'s favourite fruit is the " + f + ".", "Which fruit does " + p + " like best?", f};
        }
    }
}

Draft haystack_qa(int64_t target, Rng& r, TaskContext& ctx) {
    const size_t n = size_t(r.range(2, 5));
    std::vector<std::string> people = distinct(n, r, [](Rng& g) { return pick(first_names(), g) + " " + pick(surnames(), g); });
    std::vector<std::vector<std::string>> groups;
    Fact asked;
    for (size_t i = 0; i < people.size(); ++i) {
        Fact f = person_fact(people[i], r);
        if (i == 0) asked = f;
        groups.push_back({f.sentence});
    }
    Draft d;
    d.head = r.below(2) ? "Answer the question at the end using the text below.\n\n"
                        : "Below are documentation excerpts with a few remarks about people mixed in.\n\n";
    d.tail = "\n\nQuestion: " + asked.question + " Answer in a few words.";
    d.answer = asked.answer;
    int64_t reserve = 0;
    for (const auto& g : groups) reserve += ctx.tokens(g[0]) + 1;
    fill_haystack(d, target, reserve, r, ctx);
    insert_groups(d, groups, r);
    return d;
}

}  // namespace

Draft make_sensitive_draft(const std::string& task, int64_t target, Rng& r, TaskContext& ctx) {
    if (task == "kv-single") return kv_records(target, r, ctx, false);
    if (task == "kv-multi") return kv_records(target, r, ctx, true);
    if (task == "var-chain") return var_chain(target, r, ctx);
    if (task == "haystack-qa") return haystack_qa(target, r, ctx);
    fail("data: unknown sensitive task '%s'", task.c_str());
}

}  // namespace elastic::train::detail
