import sys, collections, re
path = sys.argv[1]; only = sys.argv[2] if len(sys.argv) > 2 else None
incl = collections.Counter(); self_ = collections.Counter(); total = 0
for line in open(path):
    stack, _, n = line.rstrip().rpartition(" ")
    n = int(n); frames = stack.split(";")
    if only and not any(only in f for f in frames): continue
    total += n
    seen = set()
    for f in frames:
        key = re.sub(r":\d+\)", ")", f)
        if key not in seen:
            seen.add(key); incl[key] += n
    self_[re.sub(r":\d+\)", ")", frames[-1])] += n
print("total", total)
print("--- inclusive")
for k, v in incl.most_common(int(sys.argv[3]) if len(sys.argv) > 3 else 70):
    print(f"{100*v/total:5.1f}% {k[:160]}")
print("--- self")
for k, v in self_.most_common(40):
    print(f"{100*v/total:5.1f}% {k[:160]}")
