#!/usr/bin/env python3
"""Module dependency graph of each crate under crates/ (issue 26 item 4: no module cycles).

Usage: scripts/module_graph.py [REPO_ROOT]

Edges come from `crate::`, `super::` and `self::` paths (use statements, grouped uses, inline
paths, and names the crate root re-exports) in non-test code: a file is cut at its first
`#[cfg(test)]`, and comments are dropped. Prints each module's dependencies and the cycles
(strongly connected components of more than one module); exits 1 if there is a cycle.
A text scan, not a compiler: good enough to keep the rooms honest."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..')
found_cycle = False
def modpath(src, f):
    rel = os.path.relpath(f, src)[:-3].split(os.sep)
    if rel[-1] in ('lib', 'main', 'mod'): rel = rel[:-1]
    return tuple(rel)
def expand(prefix, tree):
    # tree: text inside use after prefix, may contain {..}
    tree = tree.strip()
    out = []
    if tree.startswith('{'):
        depth = 0; cur = ''; items = []
        for ch in tree[1:-1]:
            if ch == '{': depth += 1
            if ch == '}': depth -= 1
            if ch == ',' and depth == 0: items.append(cur); cur = ''
            else: cur += ch
        items.append(cur)
        for it in items:
            if it.strip(): out += expand(prefix, it)
        return out
    m = re.match(r'([\w:]*?)(::)?(\{.*\})$', tree, re.S)
    if m and m.group(3):
        p = [x for x in m.group(1).split('::') if x]
        return expand(prefix + p, m.group(3))
    p = [x for x in re.split(r'\s+as\s+', tree)[0].split('::') if x]
    return [prefix + p]
def resolve(cur, is_mod, parts):
    base = list(cur)
    i = 0
    if parts[0] == 'crate': base = []; i = 1
    else:
        if not is_mod: base = base  # file module: self = cur
        while i < len(parts) and parts[i] in ('super', 'self'):
            if parts[i] == 'super': base = base[:-1]
            i += 1
    return tuple(base + parts[i:])
for crate in sorted(os.listdir(os.path.join(root, 'crates'))):
    src = os.path.join(root, 'crates', crate, 'src')
    if not os.path.isdir(src): continue
    files = []
    for d, _, fs in os.walk(src):
        files += [os.path.join(d, f) for f in fs if f.endswith('.rs')]
    mods = {modpath(src, f): f for f in files}
    # names the crate root re-exports (`pub use a::b::{X, Y}`): `crate::X` is a use of `a::b`
    reexp = {}
    roottext = open(mods[()]).read().split('#[cfg(test)]')[0]
    for u in re.finditer(r'\bpub use\s+([^;]*);', roottext, re.S):
        for p in expand([], u.group(1)):
            t = tuple(x for x in p if x not in ('crate', 'self'))
            for k in range(len(t), 0, -1):
                if t[:k] in mods:
                    reexp[t[-1]] = t[:k]; break
    edges = set()
    for m, f in mods.items():
        text = open(f).read()
        text = text.split('#[cfg(test)]')[0]
        text = re.sub(r'//[^\n]*', '', text)
        paths = []
        for u in re.finditer(r'\buse\s+((?:crate|super|self)\b[^;]*);', text, re.S):
            paths += expand([], u.group(1))
        for u in re.finditer(r'(?<![\w:])((?:crate|super|self)(?:::\w+)+)', text):
            paths.append(u.group(1).split('::'))
        for p in paths:
            if p[0] not in ('crate', 'super', 'self'): continue
            if p[0] == 'self' and f.endswith(('mod.rs', 'lib.rs')) is False:
                pass
            t = resolve(m, True, p)
            if len(t) >= 1 and t[:1] not in mods and t[0] in reexp:
                t = reexp[t[0]]
            # longest module prefix
            best = None
            for k in range(len(t), -1, -1):
                if t[:k] in mods: best = t[:k]; break
            if best is None or best == m: continue
            # a module declaring a child and a child of it: both count
            edges.add((m, best))
    name = lambda t: '::'.join(t) or 'lib'
    # drop edges to the crate root (lib.rs re-exports only)
    edges = {(a, b) for a, b in edges if b != () and a != ()}
    # SCC
    graph = {m: [] for m in mods}
    for a, b in edges: graph[a].append(b)
    index = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
    sys.setrecursionlimit(10000)
    def strong(v):
        index[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
        for w in graph[v]:
            if w not in index: strong(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: sccs.append(comp)
    for v in graph:
        if v not in index: strong(v)
    print(f'## {crate}')
    for a in sorted(graph):
        if a == (): continue
        deps = sorted(name(b) for b in graph[a])
        print(f'  {name(a)} -> {", ".join(deps) if deps else "(none)"}')
    found_cycle = found_cycle or bool(sccs)
    print('  cycles:', '; '.join('{' + ', '.join(sorted(map(name, s))) + '}' for s in sccs) or 'none')
sys.exit(1 if found_cycle else 0)
