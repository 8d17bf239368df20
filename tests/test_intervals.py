"""Interval union: overlaps counted once, clipping to ranges, bounded pending state."""
import random

from hvd_mlp.timeline.intervals import IntervalUnion


def brute_force(spans, lo=None, hi=None):
    covered = set()
    for s, e in spans:
        covered.update(t for t in range(s, e) if (lo is None or lo <= t < hi))
    return len(covered)


def test_overlapping_spans_count_once():
    u = IntervalUnion()
    for s, e in [(0, 10), (5, 15), (20, 30), (25, 26), (30, 31)]:
        u.add(s, e)
    assert u.close() == (26, [])


def test_clipped_to_ranges():
    u = IntervalUnion([(0, 12), (12, 40)])
    for s, e in [(0, 10), (5, 15), (20, 30)]:
        u.add(s, e)
    assert u.close() == (25, [12, 13])


def test_streaming_flush_matches_brute_force():
    rng = random.Random(7)
    spans = sorted((t, t + rng.randint(1, 30)) for t in (rng.randint(0, 5000) for _ in range(2000)))
    clips = [(0, 1000), (1000, 2500), (3000, 6000)]
    u = IntervalUnion(clips)
    open_starts = []
    for i, (s, e) in enumerate(spans):  # spans end out of order; watermark = the oldest start still to come
        u.add(s, e)
        if i % 100 == 99:
            u.flush(spans[i + 1][0] if i + 1 < len(spans) else float("inf"))
            open_starts.append(len(u.pending))
    total, per_clip = u.close()
    assert total == brute_force(spans)
    assert per_clip == [brute_force(spans, lo, hi) for lo, hi in clips]
    assert max(open_starts) < 50  # what waits after a flush is only the tail, not the whole history


def test_empty_and_zero_length_spans():
    u = IntervalUnion([(0, 5)])
    u.add(3, 3)
    assert u.close() == (0, [0])
