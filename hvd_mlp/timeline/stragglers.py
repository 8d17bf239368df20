"""Which rank holds the others back: per-epoch, per-rank figures from every rank's step trace and Horovod's ticks.

For each traced step, every rank's hand-over moment (its gradients given to Horovod) on rank 0's clock: from
Horovod's own ready ticks (the X events "0", "1", ... inside NEGOTIATE_*, on rank 0's clock already) where the
timeline has them for every rank — the response cache drops them after the first steps — else from the step traces,
each moved by its rank's measured clock offset. The rank that hands over last makes the others wait: the part of a
rank's wait in synchronize() until that last hand-over is attributed to the last rank (`peer_wait_s`); what remains
after it is the transfer, slow for everyone alike (`transfer_wait_s`).

The training attaches the figures to each epoch (results.json `epochs[].ranks`, `epochs[].straggler`) and
`python -m hvd_mlp.timeline summarize RUN_DIR` computes them again from the run's files.
"""
import bisect
import math
import os
import statistics

from hvd_mlp import results, steptrace
from hvd_mlp.timeline.tracefile import TimelineError, iter_events

HIGH_P = 0.001  # high confidence: a last-ready share this unlikely by chance, ...
MATERIAL = 1.0  # ... a mean lateness of this many steps of the others' work (about 2x slower) and the clock error,
BLOCKS = 4  # ... and both again in each quarter of the traced steps: a burst of another job's load is not enough
LOW_P = 0.05
TRANSFER = 0.10  # with no straggler: waits after the last hand-over this share of the epoch make the transfer the cause


# --------------------------------------------------------------------------------------------------- Horovod's ticks
def ready_ticks(path: str) -> list:
    """[(negotiation end, {rank: tick})] of every NEGOTIATE_* span in a Horovod timeline that holds ready ticks,
    in Unix microseconds (rank 0's clock). Read with the timeline's own reader, as far as the file goes."""
    origin, stacks, found = 0, {}, []
    for ev in iter_events(path, []):
        ph, pid = ev["ph"], ev.get("pid")
        if ph == "M" and "start_time_since_epoch_in_micros" in ev.get("args", {}):
            origin = int(ev["args"]["start_time_since_epoch_in_micros"])
        elif ph == "B":
            stacks.setdefault(pid, []).append((ev.get("name", ""), {}))
        elif ph == "X" and str(ev.get("name", "")).isdigit() and stacks.get(pid):
            stacks[pid][-1][1][int(ev["name"])] = origin + ev["ts"]
        elif ph == "E" and stacks.get(pid):
            name, ticks = stacks[pid].pop()
            if name.startswith("NEGOTIATE") and ticks:
                found.append((origin + ev["ts"], ticks))
    return found


def _ticks(path: str) -> list:
    """ready_ticks, or none when the file is missing or unreadable (its comm figures say why): the traces decide."""
    try:
        return ready_ticks(path) if path and os.path.exists(path) else []
    except TimelineError:
        return []


def _ticked_handovers(ticks: list, rank0: dict, size: int) -> dict:
    """{step: [each rank's hand-over tick]} for the steps whose negotiations hold a tick of every rank. A step's
    negotiation ends inside rank 0's [start, synced] of that step; a rank's hand-over is its last tensor's tick."""
    spans = sorted((times[0], times[2], step) for step, times in rank0.items())
    starts = [s[0] for s in spans]
    by_step = {}
    for end, ticked in ticks:
        i = bisect.bisect_right(starts, end) - 1
        if i >= 0 and end <= spans[i][1]:
            latest = by_step.setdefault(spans[i][2], {})
            for rank, ts in ticked.items():
                latest[rank] = max(ts, latest.get(rank, ts))
    return {step: [latest[r] for r in range(size)] for step, latest in by_step.items() if len(latest) == size}


# --------------------------------------------------------------------------------------------------- analysis
def analyse(traces: list, epoch_steps: int, ticks=()) -> tuple:
    """([RankFigures], Straggler) of one epoch from every rank's trace (by rank); ([], None) with < 2 ranks or no
    step traced on all of them. Times are scaled from the traced steps to the epoch's `epoch_steps`."""
    if len(traces) < 2:
        return [], None
    aligned = [steptrace.on_rank0_clock(t) for t in traces]
    common = sorted(set.intersection(*(set(a) for a in aligned)))
    if not common:
        return [], None
    size, n, scale = len(traces), len(common), epoch_steps / len(common)
    ticked = _ticked_handovers(ticks, aligned[0], size) if ticks else {}
    errors = [t["clock"]["error_us"] for t in traces]
    lag, peer_wait, last, cost = [[] for _ in traces], [0.0] * size, [], [0.0] * size
    for step in common:
        handover = ticked.get(step) or [a[step][1] for a in aligned]
        first = min(handover)
        last.append(max(range(size), key=lambda r: (handover[r], -r)))
        for r, a in enumerate(aligned):
            lag[r].append(handover[r] - first)
            if r != last[-1]:
                start, mine, synced, end = a[step]
                waited = max(0.0, min(synced - mine, handover[last[-1]] - handover[r]))
                peer_wait[r] += waited
                cost[last[-1]] += waited
    last_count = [last.count(r) for r in range(size)]
    per_step = [_per_step(a, common) for a in aligned]  # (compute, wait, other) us per step
    ranks = [results.RankFigures(
        rank=t["rank"], host=t["host"], compute_s=c * epoch_steps / 1e6, wait_s=w * epoch_steps / 1e6,
        other_s=o * epoch_steps / 1e6, peer_wait_s=peer_wait[r] * scale / 1e6, last_ready_share=last_count[r] / n,
        lag_ms=statistics.fmean(lag[r]) / 1e3, lag_p95_ms=percentile(lag[r], 95) / 1e3,
        clock_offset_us=t["clock"]["offset_us"], clock_error_us=t["clock"]["error_us"])
        for r, (t, (c, w, o)) in enumerate(zip(traces, per_step))]
    s = max(range(size), key=lambda r: (last_count[r], -r))
    p_value = min(1.0, size * binomial_tail(n, last_count[s], 1 / size))  # any of `size` ranks could be "the" one
    work_us = statistics.median(c + o for r, (c, w, o) in enumerate(per_step) if r != s)  # the others' step, no wait
    bar_us = max(MATERIAL * work_us, max(errors))
    quarters = [range(i * n // BLOCKS, (i + 1) * n // BLOCKS) for i in range(BLOCKS)] if n >= BLOCKS else [range(n)]
    persistent = all(2 * sum(last[i] == s for i in q) >= len(q) and statistics.fmean(lag[s][i] for i in q) >= bar_us
                     for q in quarters)
    confidence = "high" if p_value <= HIGH_P and persistent else "low" if p_value <= LOW_P else "none"
    transfer_s = sum(r.wait_s - r.peer_wait_s for r in ranks) / size
    cause, text = _cause(s, confidence, ranks, per_step, transfer_s, sum(per_step[0]) * epoch_steps / 1e6)
    return ranks, results.Straggler(
        rank=ranks[s].rank, host=ranks[s].host, confidence=confidence, last_ready_share=ranks[s].last_ready_share,
        p_value=p_value, cost_s=cost[s] * scale / 1e6, transfer_wait_s=transfer_s, cause=cause, cause_text=text,
        steps=n, tick_steps=sum(step in ticked for step in common), clock_error_us=max(errors))


def _per_step(aligned: dict, common: list) -> tuple:
    """Mean (compute, wait, other) of one rank's steps, microseconds; other: the gaps between consecutive steps."""
    compute = statistics.fmean((h - s) + (e - y) for s, h, y, e in (aligned[k] for k in common))
    wait = statistics.fmean(y - h for s, h, y, e in (aligned[k] for k in common))
    gaps = [aligned[k + 1][0] - aligned[k][3] for k in common if k + 1 in aligned]
    return compute, wait, statistics.fmean(gaps) if gaps else 0.0


def _cause(s: int, confidence: str, ranks: list, per_step: list, transfer_s: float, epoch_s: float) -> tuple:
    """(cause, its text): the straggler computes slower / starts its steps late, or the transfer is slow for all."""
    if confidence != "none":
        others = [per_step[r] for r in range(len(ranks)) if r != s]
        lag_us, who = ranks[s].lag_ms * 1e3, f"rank {ranks[s].rank}"
        for i, cause, what in ((0, "compute", "computes slower: {} ms a step against {} ms"),
                               (2, "start", "starts its steps late: {} ms between steps against {} ms")):
            mine, theirs = per_step[s][i], statistics.median(o[i] for o in others)
            if mine - theirs >= 0.5 * lag_us:
                return cause, f"{who} " + what.format(f"{mine / 1e3:.2f}", f"{theirs / 1e3:.2f}")
        return "", f"{who} is late, but neither its compute nor its start explains it"
    if transfer_s >= TRANSFER * epoch_s:
        return "transfer", (f"no slow peer: the waits are the transfer itself, alike on every rank "
                            f"({transfer_s:.2f} s of the epoch)")
    return "", "no slow peer"


def percentile(values: list, q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    return ordered[lo] + (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo]) * (pos - lo)


def binomial_tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return min(1.0, sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1)))


# --------------------------------------------------------------------------------------------------- epochs, runs
def attach(epoch: results.Epoch, traces: list, tick_file: str = ""):
    """Set epoch.ranks and epoch.straggler from the gathered traces (and the ready ticks of tick_file, if any)."""
    epoch.ranks, epoch.straggler = analyse(traces, epoch.steps, _ticks(tick_file) if len(traces) > 1 else ())


def attach_run(run_dir: str, epochs: list, full_file: str = "") -> int:
    """Per-rank figures for the epochs (results.Epoch, with their timeline_window's file where windowed) from the
    step trace files in run_dir, where every rank's is there; ticks from each window file, or from full_file.
    Returns the epochs analysed."""
    traces, full_ticks, done = steptrace.read_run(run_dir), None, 0
    for e in epochs:
        if e.epoch not in traces or len(traces[e.epoch]) < traces[e.epoch][0]["size"]:
            continue  # a rank's files missing (another host's disk): the figures need every rank
        if e.timeline_window:
            attach(e, traces[e.epoch], e.timeline_window.file)
        else:
            if full_ticks is None:
                full_ticks = _ticks(full_file)
            e.ranks, e.straggler = analyse(traces[e.epoch], e.steps, full_ticks)
        done += bool(e.ranks)
    return done


# --------------------------------------------------------------------------------------------------- text
def straggler_text(e: results.Epoch) -> str:
    """The straggler part of an epoch line (empty without per-rank figures)."""
    s = e.straggler
    if s is None:
        return ""
    if s.confidence == "none":
        return f" | no straggler (most often last: rank {s.rank}, {100 * s.last_ready_share:.0f}% of steps){_why(s)}"
    lag = next(r.lag_ms for r in e.ranks if r.rank == s.rank)
    return (f" | straggler rank {s.rank} ({s.host}, {s.confidence} confidence): last in "
            f"{100 * s.last_ready_share:.0f}% of steps, {lag:.2f} ms late, cost the others {s.cost_s:.2f} s{_why(s)}")


def _why(s: results.Straggler) -> str:
    return f"; {s.cause_text}" if s.cause else ""


def format_ranks(epochs: list) -> str:
    """Per epoch: where the figures come from, then a row per rank (the straggler line is in the epoch lines)."""
    lines = []
    for e in (e for e in epochs if e.ranks):
        s = e.straggler
        source = (f"{s.steps} steps traced on every rank, times scaled to the epoch's {e.steps}; hand-over order "
                  f"from Horovod's ready ticks in {s.tick_steps} steps, from the step traces on rank 0's clock "
                  f"(+-{s.clock_error_us:.0f} us) in {s.steps - s.tick_steps}; straggler rank {s.rank}: "
                  f"{s.confidence} confidence, p = {s.p_value:.2g}")
        lines += [f"epoch {e.epoch} per rank ({source}):",
                  f"{'rank':>5} {'host':<16} {'compute s':>9} {'wait s':>7} {'of which peers':>14} {'other s':>7} "
                  f"{'last %':>6} {'lag ms':>7} {'p95 ms':>7} {'clock offset us':>15}"]
        for r in e.ranks:
            lines.append(f"{r.rank:>5} {r.host[:16]:<16} {r.compute_s:>9.3f} {r.wait_s:>7.3f} {r.peer_wait_s:>14.3f} "
                         f"{r.other_s:>7.3f} {100 * r.last_ready_share:>5.0f}% {r.lag_ms:>7.2f} {r.lag_p95_ms:>7.2f} "
                         f"{r.clock_offset_us:>9.0f} +-{r.clock_error_us:<5.0f}")
    return "\n".join(lines)
