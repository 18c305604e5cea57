"""How many candidates each early-drop rule removes, replayed on per-image values measured once.

At chosen steps of a committed search trajectory, scores every candidate of the step on every held-out image
(slices of 1,024, as the default search) and keeps the per-image KL divergences from the largest config. Then
replays each rule slice by slice on those numbers: which candidates it would drop, the candidate-images it
would score (the work), and whether the winner stays the exhaustive winner.

    python benchmarks/bound_study.py RUN TRAJECTORY --steps 0,10,20,30,40,50 --out runs/bound_study.pt
    python benchmarks/bound_study.py --replay runs/bound_study.pt [--every 500]

Figures, not a test.
"""

from __future__ import annotations

import argparse
import csv
import math

import torch

from autoslim.search.greedy import criterion_key


def measure(run: str, trajectory: str, steps: list[int], out: str) -> None:
    from autoslim.checkpoint import load_run
    from autoslim.search.sliced import SlicedScorer

    loaded = load_run(run)
    supernet = loaded.supernet
    data = loaded.load_data()
    size = len(data.split("search"))
    images, labels = next(iter(data.batches("search", size, shuffle=False, augment=False)))
    scorer = SlicedScorer(supernet, images, labels, confidence=None)
    rows = list(csv.DictReader(open(trajectory)))
    configs = {int(r["step"]): None for r in rows}
    current = supernet.largest_config()
    units = list(current)
    ladders = {u.name: sorted(u.choices) for u in supernet.slimmable_units if len(u.choices) > 1}
    found = []
    for row in rows:
        number = int(row["step"])
        if number > 0:
            current = dict(current)
            current[row["unit"]] = int(row["channels"])
        configs[number] = dict(current)
        if number not in steps:
            continue
        spent = supernet.cost(current).macs
        candidates, saved = [], []
        for unit in units:
            lower = [c for c in ladders.get(unit, []) if c < current[unit]]
            if not lower:
                continue
            config = dict(current, **{unit: lower[-1]})
            gain = spent - supernet.cost(config).macs
            if gain > 0:
                candidates.append((unit, config))
                saved.append(gain)
        now = torch.cat([scorer._values(s.logits(current, [(None, current)])[0], i)["kl"]
                         for i, s in enumerate(scorer.slices)])
        values = [[] for _ in candidates]
        for i, s in enumerate(scorer.slices):
            for j, logits in enumerate(s.logits(current, candidates)):
                values[j].append(scorer._values(logits, i)["kl"])
        found.append({"step": number, "units": [u for u, _ in candidates], "saved": saved, "now": now,
                      "kl": torch.stack([torch.cat(v) for v in values]),
                      "macs": _candidate_macs(scorer.slices[0], current, candidates)})
        print(f"step {number}: {len(candidates)} candidates measured", flush=True)
        torch.save({"slices": [len(x) for x in scorer.labels], "steps": found}, out)


def _candidate_macs(scorer, current, candidates) -> list[int]:
    """Per image: the MACs of each candidate from its start point to the output (what scoring it costs)."""
    ends = len(scorer._nodes)
    found = []
    for unit, config in candidates:
        before = scorer.macs_executed
        scorer._count_work(config, scorer._start.get(unit, 0), ends)
        found.append((scorer.macs_executed - before) // len(scorer.images))
        scorer.macs_executed = before
    return found


def replay(path: str, every: int = 0) -> None:
    state = torch.load(path)
    sizes = state["slices"]
    if every:  # decisions every EVERY images (BatchNorm statistics stay those of the measured slices)
        total = sum(sizes)
        sizes = [every] * (total // every) + ([total % every] if total % every else [])
    bounds = [0]
    for n in sizes:
        bounds.append(bounds[-1] + n)
    rules = {"individual 3se": ("individual", 3.0, 0.0), "paired 3se": ("paired", 3.0, 0.0),
             "paired 2se": ("paired", 2.0, 0.0), "paired 3se e5%": ("paired", 3.0, 0.05),
             "paired 3se e10%": ("paired", 3.0, 0.10), "paired 3se e20%": ("paired", 3.0, 0.2),
             "paired 2se e5%": ("paired", 2.0, 0.05), "paired 2se e10%": ("paired", 2.0, 0.10)}
    totals = {name: [0, 0, 0, 0, 0] for name in rules}
    for record in state["steps"]:
        drops = record["kl"] - record["now"]  # per image: KL lost, candidates x images
        saved = torch.tensor(record["saved"], dtype=torch.float64)
        macs = record.get("macs") or [1] * len(saved)
        keys = [criterion_key(float(d), float(g)) for d, g in zip(drops.mean(1), saved)]
        winner = min(range(len(keys)), key=keys.__getitem__)
        line = [f"step {record['step']:>2}: {len(saved)} candidates, exhaustive winner {record['units'][winner]}"]
        for name, (kind, c, e) in rules.items():
            active = list(range(len(saved)))
            work = weighted = 0
            for k in range(len(bounds) - 1):
                work += len(active) * (bounds[k + 1] - bounds[k])
                weighted += sum(macs[i] for i in active) * (bounds[k + 1] - bounds[k])
                if k + 1 == len(bounds) - 1:
                    break
                if len(active) == 1:
                    continue  # the winner is scored on every image, as SlicedScorer does
                seen = drops[:, : bounds[k + 1]]
                active = _survivors(active, seen, saved, kind, c, e)
            chosen = min(active, key=keys.__getitem__)
            loss = (float(drops[chosen].mean() / saved[chosen]) / float(drops[winner].mean() / saved[winner]) - 1)
            base, weighted_base = len(saved) * 2048, sum(macs) * 2048
            for slot, value in enumerate((work, base, chosen == winner, weighted, weighted_base)):
                totals[name][slot] += value
            line.append(f"{name}: work {work / base:.2f}x of 2,048 ({weighted / weighted_base:.2f}x in MACs), "
                        f"kept {len(active)}, {'same' if chosen == winner else f'DIFFERENT (+{loss:.1%})'}")
        print("\n  ".join(line))
    for name, (work, base, same, weighted, weighted_base) in totals.items():
        print(f"{name:>16}: work {work / base:.2f}x of the 2,048-image search ({weighted / weighted_base:.2f}x in "
              f"MACs), same winner {same}/{len(state['steps'])}")


def _survivors(active, seen, saved, kind, c, e=0.0):
    n = seen.shape[1]
    per = seen[active] / saved[active, None]  # per image: KL lost per MAC saved
    mean = per.mean(1)
    if kind == "individual":  # the rule of SlicedScorer: a bound on each candidate's mean drop
        drop = seen[active]
        err = c * drop.std(1) / math.sqrt(n)
        lows = [criterion_key(float(m - e), float(saved[i])) for i, m, e in zip(active, drop.mean(1), err)]
        highs = [criterion_key(float(m + e), float(saved[i])) for i, m, e in zip(active, drop.mean(1), err)]
        return [i for i, low in zip(active, lows) if low <= min(highs)]
    lead = int(mean.argmin())
    diff = per - per[lead]
    err = c * diff.std(1) / math.sqrt(n)
    return [i for j, i in enumerate(active) if j == lead or diff[j].mean() - err[j] <= -e * abs(float(mean[lead]))]


def lazy(path: str) -> None:
    """Consecutive steps: how the key of each unit moves from one step to the next, and what a lazy greedy (score
    candidates in the order of their last key, stop once the best fresh key is below every stale one) would score."""
    records = torch.load(path)["steps"]
    for before, after in zip(records, records[1:]):
        if after["step"] != before["step"] + 1:
            continue

        def keyed(record):
            drops = (record["kl"] - record["now"]).mean(1)
            return {u: criterion_key(float(d), float(g)) for u, d, g in zip(record["units"], drops, record["saved"])}

        stale, fresh = keyed(before), keyed(after)
        chosen = min(stale, key=stale.get)
        ratio = {u: fresh[u][1] / stale[u][1] for u in fresh if u in stale and u != chosen
                 and fresh[u][0] == stale[u][0] == 1}
        order = sorted(fresh, key=lambda u: (u != chosen and u in stale, stale.get(u, (-1, 0))))
        scored, best = [], None
        for u in order:
            if best is not None and u != chosen and u in stale and stale[u] > best:
                break
            scored.append(u)
            best = fresh[u] if best is None else min(best, fresh[u])
        winner = min(fresh, key=fresh.get)
        lazy_pick = min(scored, key=fresh.get)
        print(f"step {after['step']}: chose {chosen} before; fresh/stale key of the others: "
              f"{' '.join(f'{r:.2f}' for r in sorted(ratio.values()))}; lazy scores {len(scored)}/{len(fresh)}, "
              f"{'same' if lazy_pick == winner else 'DIFFERENT'} winner")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?")
    parser.add_argument("trajectory", nargs="?")
    parser.add_argument("--steps", default="0,10,20,30,40,50")
    parser.add_argument("--out", default="runs/bound_study.pt")
    parser.add_argument("--replay")
    parser.add_argument("--every", type=int, default=0, help="replay with a decision every N images")
    parser.add_argument("--lazy")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.lazy:
        lazy(args.lazy)
    elif args.replay:
        replay(args.replay, args.every)
    else:
        measure(args.run, args.trajectory, [int(s) for s in args.steps.split(",")], args.out)
        replay(args.out)


if __name__ == "__main__":
    main()
