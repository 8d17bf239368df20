"""The timeline tools: Horovod's trace (HOROVOD_TIMELINE, Chrome-trace JSON) read, analysed, cut and compared.

    python -m hvd_mlp.timeline summarize|repair|slice|diff|merge ...     (the command line: __main__.py)

One module per job: tracefile (reading any file, damaged or huge; writing valid traces; repair), analysis (the
per-class union of spans, per epoch clip, per tensor, per time bucket), epochs (a run's per-epoch figures, as the
training prints them), stragglers (which rank held the others back, from every rank's step trace), slice, diff,
merge (every rank's steps beside Horovod's tensors in one trace), intervals (the streaming interval union under
analysis).
"""
from hvd_mlp.timeline.analysis import CLASSES, now_us, summarize, with_shares
from hvd_mlp.timeline.tracefile import TimelineError

__all__ = ["CLASSES", "TimelineError", "now_us", "summarize", "with_shares"]
