"""Horovod timelines: communication per epoch, per tensor and over time, per rank; repair, slice, diff and merge.

    python -m hvd_mlp.timeline summarize RUN_DIR [--json]                    a run, per epoch (any --timeline-mode)
    python -m hvd_mlp.timeline summarize TIMELINE [--json] [--top K] [--series S]   any timeline
    python -m hvd_mlp.timeline summarize TIMELINE --results RUN_DIR           a run's file: its epochs
    python -m hvd_mlp.timeline repair IN OUT
    python -m hvd_mlp.timeline slice TIMELINE OUT (--from S --to S | --epoch N --results RUN_DIR)
    python -m hvd_mlp.timeline diff A B [--json] [--top K]                    each a timeline or a run directory
    python -m hvd_mlp.timeline merge RUN_DIR OUT          every rank's steps beside Horovod's tensors, one trace
"""
import json
import math
import os
import sys

from hvd_mlp import results
from hvd_mlp.errors import ArgumentParser, UserError, command_line, non_negative_int, output_file, positive
from hvd_mlp.timeline import analysis, diff, epochs, merge, stragglers, tracefile
from hvd_mlp.timeline.slice import slice_timeline

MIN_BUCKET_S = 0.01  # finer buckets than this would make a series longer than the file is useful


def seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="hvd_mlp.timeline", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize", help="communication figures, in total, or per epoch of a run")
    s.add_argument("timeline", help="a Horovod timeline file, or an hvd_mlp run directory (per-epoch figures from "
                                    "its timeline files, whatever the --timeline-mode, as the training printed them)")
    s.add_argument("--results", help="the run (directory or results.json) the timeline file belongs to: per-epoch "
                                     "figures")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.add_argument("--top", type=non_negative_int, default=10, help="tensors listed (default: 10)")
    s.add_argument("--series", type=positive(float), nargs="?", const=1.0, metavar="S",
                   help=f"also comm in flight and bandwidth per S seconds of the file (default 1; >= {MIN_BUCKET_S})")
    r = sub.add_parser("repair", help="write a valid JSON trace that Perfetto and Chrome load")
    r.add_argument("input", help="the damaged timeline")
    r.add_argument("output", type=output_file, help="the repaired file to write (replaced atomically)")
    c = sub.add_parser("slice", help="a stretch of a timeline as a valid trace of its own (times unchanged)")
    c.add_argument("timeline", help="the Horovod timeline to cut from")
    c.add_argument("output", type=output_file, help="the slice to write (replaced atomically)")
    c.add_argument("--from", dest="start", type=seconds, metavar="S", help="seconds since the timeline's start")
    c.add_argument("--to", dest="end", type=seconds, metavar="S", help="seconds since the timeline's start")
    c.add_argument("--epoch", type=positive(int), help="the training part of this epoch (needs --results)")
    c.add_argument("--results", help="the run (directory or results.json) the timeline belongs to")
    d = sub.add_parser("diff", help="two runs side by side: per step, per epoch, per tensor")
    d.add_argument("a", help="a timeline file or a run directory")
    d.add_argument("b", help="a timeline file or a run directory")
    d.add_argument("--json", action="store_true", help="print JSON instead of tables")
    d.add_argument("--top", type=non_negative_int, default=10, help="tensors listed (default: 10)")
    m = sub.add_parser("merge", help="one trace of a run: every rank's step phases on rank 0's clock beside "
                                     "Horovod's tensors (Perfetto, Chrome)")
    m.add_argument("run_dir", metavar="RUN_DIR", help="a run trained with --timeline-mode window or full")
    m.add_argument("output", metavar="OUT", type=output_file, help="the merged trace to write (replaced atomically)")
    return parser


@command_line("hvd_mlp.timeline")
def main(argv=None):
    args = build_parser().parse_args(argv)
    {"summarize": run_summarize, "repair": run_repair, "slice": run_slice, "diff": run_diff,
     "merge": run_merge}[args.command](args)


def run_summarize(args):
    if args.results is not None or os.path.isdir(args.timeline):
        run, file = (args.results, args.timeline) if args.results is not None else (args.timeline, "")
        per_epoch, source = epochs.run_comm(run, file)
        run_dir = run if os.path.isdir(run) else os.path.dirname(run)
        ranked = stragglers.attach_run(run_dir, per_epoch, source if os.path.isfile(source) else "")  # full: its file
        show([results.to_dict(e) for e in per_epoch], args.json,
             lambda _: (stragglers.format_ranks(per_epoch) + "\n" if ranked else "")
             + epochs.format_epochs(per_epoch, source))
        return
    if args.series is not None and args.series < MIN_BUCKET_S:
        raise UserError(f"--series buckets must be >= {MIN_BUCKET_S} s, got {args.series}")
    report = analysis.summarize(args.timeline, top=args.top, bucket_s=args.series or 0)
    warnings = report.pop("warnings")
    show(report, args.json, lambda r: analysis.format_report(r)
         + (f"\ncommunication over time, {args.series:g} s buckets:\n" + analysis.format_series(r["series"])
            if "series" in r else ""))
    warn(warnings)


def run_repair(args):
    counts = writing(args.output, tracefile.repair, args.input, args.output)
    warn(counts.pop("warnings"))
    print(f"wrote {args.output}: {counts['events']:,} events, {counts['orphans']} orphan ends dropped, "
          f"{counts['closed']} open spans closed")


def run_slice(args):
    if args.epoch is not None:
        if args.results is None or args.start is not None or args.end is not None:
            raise UserError("--epoch needs --results (the run), and no --from/--to")
        record = results.read(args.results)
        epoch = next((e for e in record.epochs if e.epoch == args.epoch), None)
        if epoch is None:
            raise UserError(f"{args.results} has no epoch {args.epoch} (it has {len(record.epochs)})")
        window = {"wall_us": (epoch.start_unix_us, epoch.end_unix_us)}
    elif args.start is None and args.end is None:
        raise UserError("say which stretch: --from S --to S (seconds), or --epoch N --results RUN_DIR")
    else:
        window = {"start_s": args.start or 0.0, "end_s": math.inf if args.end is None else args.end}
    counts = writing(args.output, slice_timeline, args.timeline, args.output, **window)
    warn(counts.pop("warnings"))
    print(f"wrote {args.output}: {counts['events']:,} events, {counts['opened']} spans open at the start and "
          f"{counts['closed']} at the end cut there")


def run_diff(args):
    show(diff.diff(args.a, args.b, args.top), args.json, diff.format_diff)


def run_merge(args):
    if not os.path.isdir(args.run_dir):
        raise UserError(f"{args.run_dir} is not a run directory")
    counts = writing(args.output, merge.merge, args.run_dir, args.output)
    warn(counts.pop("warnings"))
    print(f"wrote {args.output}: {counts['events']:,} events; {counts['ranks']} ranks, {counts['steps']:,} "
          f"traced steps on rank 0's clock (+-{counts['error_us']:.0f} us) beside {counts['files']} Horovod "
          f"timeline file(s); {counts['orphans']} orphan ends dropped, {counts['closed']} open spans closed")


def writing(path: str, write, *args, **kwargs):
    try:
        return write(*args, **kwargs)
    except OSError as e:  # the output was checked up front; what is left is e.g. a disk filling up while writing
        raise UserError(f"cannot write {path}: {e.strerror}") from None


def show(value, as_json: bool, as_text):
    print(json.dumps(value, indent=1) if as_json else as_text(value), flush=True)


def warn(issues: list):
    if issues:
        print(f"hvd_mlp.timeline: warning: {'; '.join(dict.fromkeys(issues))}; read as far as it goes",
              file=sys.stderr)


if __name__ == "__main__":
    main()
