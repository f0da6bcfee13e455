# Per prediction of `elastic eval ... --predictions` JSON files: Ω_MSR, how many of the static
# top-k retrieval heads (k = the plan's FA count) and of the top 10 the plan keeps, and the ranks
# of its FA heads. Run from the repository root: python3 docs/results/plans-cpu/an.py FILE...
import json, sys
sc = json.load(open("docs/results/retrieval-scores.json"))["scores"]
order = sorted([(sc[l][h], l, h) for l in range(len(sc)) for h in range(len(sc[l]))], key=lambda x: -x[0])
rank = {(l, h): r for r, (_, l, h) in enumerate(order)}
N = len(order)
for f in sys.argv[1:]:
    print(f.split("/")[-1])
    for p in json.load(open(f)).get("predictions", []):
        fa = {(l, h) for l, layer in enumerate(p["plan"].split()) for h, c in enumerate(layer) if c == "F"}
        k = len(fa)
        top = {(l, h) for (_, l, h) in order[:k]}
        top10 = {(l, h) for (_, l, h) in order[:10]}
        ranks = sorted(rank[x] for x in fa)
        print("  %-16s #%d score %5.1f Ω %.3f  top-k kept %2d/%2d  top-10 kept %2d  FA ranks %s"
              % (p["task"], p["index"], p["score"], 1 - k / N, len(fa & top), k, len(fa & top10), ranks[:12]))
