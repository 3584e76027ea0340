import sys, collections, re
path, root = sys.argv[1], sys.argv[2]; depth = int(sys.argv[3]) if len(sys.argv) > 3 else 3
minp = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
total = 0; tree = collections.Counter()
for line in open(path):
    stack, _, n = line.rstrip().rpartition(" "); n = int(n)
    frames = [re.sub(r" \(.*?([^/]+/[^/]+\.py):\d+\)", r" (\1)", f) for f in stack.split(";")]
    total += n
    idx = next((i for i, f in enumerate(frames) if f.startswith(root)), None)
    if idx is None: continue
    sub = frames[idx:idx + depth + 1]
    for k in range(1, len(sub) + 1):
        tree[tuple(sub[:k])] += n
for key in sorted(tree, key=lambda k: [(-tree[k[:i+1]]) for i in range(len(k))]):
    p = 100 * tree[key] / total
    if p >= minp: print(f"{p:5.1f}% " + "  " * (len(key) - 1) + key[-1][:120])
