"""Length of a union of intervals, in total and clipped to ranges (clips: e.g. epochs), in bounded memory.

Spans arrive roughly in time order but not sorted (a span is known when it ends). They wait in `pending`; flush(w)
merges them and folds into the totals every merged run that ends at or before the watermark w, a time before which
no future span can start. Only the last merged run, and spans newer than w, are kept.
"""
import bisect

MAX_KEPT = 100_000


class IntervalUnion:
    def __init__(self, clips=(), bucket: float = 0):
        self.bucket = bucket  # > 0: also the length inside each bucket [k*bucket, (k+1)*bucket) (a time series)
        self.per_bucket = {}
        self.clips = list(clips)  # [(start, end)] sorted by start, non-overlapping (epochs)
        self.starts = [c[0] for c in self.clips]
        self.pending = []  # [(start, end)] not folded yet: add() appends here (hot loops may append themselves)
        self.total = 0.0
        self.per_clip = [0.0] * len(self.clips)

    def add(self, start, end):
        if end > start:
            self.pending.append((start, end))

    def _fold(self, start, end):
        self.total += end - start
        if self.bucket:
            k = int(start // self.bucket)
            while k * self.bucket < end:
                lo, hi = max(start, k * self.bucket), min(end, (k + 1) * self.bucket)
                self.per_bucket[k] = self.per_bucket.get(k, 0.0) + hi - lo
                k += 1
        i = max(0, bisect.bisect_right(self.starts, start) - 1)
        while i < len(self.clips) and self.clips[i][0] < end:
            lo, hi = max(start, self.clips[i][0]), min(end, self.clips[i][1])
            if hi > lo:
                self.per_clip[i] += hi - lo
            i += 1

    def flush(self, watermark=float("inf")):
        """Fold merged runs ending at or before `watermark`; keep the rest pending."""
        self.pending.sort()
        merged = []
        for start, end in self.pending:
            if merged and start <= merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1][1] = end
            else:
                merged.append([start, end])
        keep = []
        for start, end in merged:
            if end <= watermark:
                self._fold(start, end)
            else:
                keep.append((start, end))
        if len(keep) > MAX_KEPT:  # a span left open for ages pins the watermark: fold rather than grow
            for start, end in keep[:-1]:
                self._fold(start, end)
            keep = keep[-1:]
        self.pending[:] = keep  # the same list: a caller may hold it

    def close(self):
        """(total length, [length inside each clip])."""
        self.flush()
        return self.total, self.per_clip
