"""OmniQ against its peers on one server, in one invocation, with the same harness.

    benchmarks/.venv-peers/bin/python benchmarks/compare.py --backend redis
    benchmarks/.venv-peers/bin/python benchmarks/compare.py --backend postgres -n 2000
    benchmarks/.venv-peers/bin/python benchmarks/compare.py --backend nats --json

Run it with the separate virtualenv made by ``benchmarks/peers/setup.py`` (the peers are
never project dependencies). Every library gets the same n no-op tasks, one producer
(this process) and ONE worker process with 10 tasks at a time; OmniQ runs with events
on and its default at-least-once delivery. Servers come from OMNIQ_BENCH_REDIS_URL
(default redis://127.0.0.1:6379/11), OMNIQ_BENCH_POSTGRES_URL (postgresql://postgres@
127.0.0.1:5432/test) and OMNIQ_BENCH_NATS_URL (nats://127.0.0.1:4222); every library
works under its own "omniqbench" key prefix / schema / stream, removed afterwards.

With ``--rounds K`` every library is measured K times, the libraries taking turns (each
round starts one library later), and each figure is the median of its K values: a slow
spell of the machine then lands on one round of one library instead of deciding a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STORE_VARIABLES = ("OMNIQ_TASK_QUEUE", "OMNIQ_RESULT_STORAGE", "OMNIQ_EVENT_STORAGE")

#: Peer name -> "module:class" under benchmarks/peers, per backend (the default order).
PEERS: dict[str, dict[str, str]] = {
    "redis": {
        "arq": "peers.arq_subject:ArqSubject",
        "saq": "peers.saq_subject:SaqSubject",
        "taskiq": "peers.taskiq_redis_subject:TaskiqRedisSubject",
        "rq": "peers.rq_subject:RqSubject",
        "streaq": "peers.streaq_subject:StreaqSubject",
        # In a virtualenv of its own, through peers/remote.py (see peers/setup.py).
        "bullmq": "peers.remote:bullmq",
    },
    "postgres": {
        "procrastinate": "peers.procrastinate_subject:ProcrastinateSubject",
        "pgqueuer": "peers.pgqueuer_subject:PgQueuerSubject",
        "oban": "peers.remote:oban",
    },
    "nats": {"taskiq-nats": "peers.taskiq_nats_subject:TaskiqNatsSubject"},
}
#: The raw clients (no queue library: the ceiling, never counted as a peer in "the
#: fastest peer"), huey, and the SQLite backend (issue #20); apart from PEERS so that
#: peers added there and here merge without touching each other.
RAW = "raw"
EXTRA_PEERS: dict[str, dict[str, str]] = {
    "redis": {
        RAW: "peers.raw_redis_subject:RawRedisSubject",
        "huey": "peers.huey_subject:HueyRedisSubject",
    },
    "postgres": {RAW: "peers.raw_postgres_subject:RawPostgresSubject"},
    "nats": {RAW: "peers.raw_nats_subject:RawNatsSubject"},
    "sqlite": {
        RAW: "peers.raw_sqlite_subject:RawSqliteSubject",
        "huey": "peers.huey_subject:HueySqliteSubject",
    },
}
for _backend, _extra in EXTRA_PEERS.items():
    PEERS.setdefault(_backend, {}).update(_extra)

#: (label, figure key, True when higher is better)
METRICS = [
    ("enqueue/s", "enqueue_per_s", True),
    ("sync enq/s", "enqueue_sync_per_s", True),
    ("bulk/s", "bulk_enqueue_per_s", True),
    ("processing/s", "processing_per_s", True),
    ("p50 ms", "latency_p50_ms", False),
    ("p99 ms", "latency_p99_ms", False),
]
HIGHER = {key: higher for _, key, higher in METRICS}


@dataclass
class Target:
    """One MET / NOT MET line: OmniQ's figure ``key`` against a reference."""

    text: str
    key: str
    #: How many times the reference OmniQ must beat (or, for "limit", the bound itself).
    factor: float = 1.0
    #: "peers": the best peer's figure (the raw row is no peer); "raw"; a peer's name;
    #: "limit": ``factor`` is an absolute bound; "p50": ``factor`` x OmniQ's own p50.
    against: str = "peers"
    #: The reference's figure when it is not ``key`` (the sync enqueue is held against
    #: the peers' one-by-one enqueue, whichever API they have).
    ref_key: str | None = None
    #: The worker batch size the target is stated for (``--batch-size``); None: any.
    batch_size: int | None = None


def _enqueue_targets(raw: bool) -> list[Target]:
    """Issue #20: one-by-one enqueue, through both APIs, at least the fastest peer's and,
    where there is a raw client to compare with, 0.8x of it."""
    out = [
        Target("one-by-one enqueue (async API) >= the fastest peer", "enqueue_per_s"),
        Target(
            "one-by-one enqueue (sync API) >= the fastest peer",
            "enqueue_sync_per_s",
            ref_key="enqueue_per_s",
        ),
    ]
    if raw:
        out += [
            Target("one-by-one enqueue (async API) >= 0.8x raw", "enqueue_per_s", 0.8, RAW),
            Target(
                "one-by-one enqueue (sync API) >= 0.8x raw",
                "enqueue_sync_per_s",
                0.8,
                RAW,
                ref_key="enqueue_per_s",
            ),
        ]
    return out


def _latency_targets(p50_ms: float) -> list[Target]:
    return [
        Target(f"latency p50 <= {p50_ms} ms", "latency_p50_ms", p50_ms, "limit"),
        Target("latency p99 <= 2x p50", "latency_p99_ms", 2.0, "p50"),
    ]


TARGETS: dict[str, list[Target]] = {
    "redis": [
        Target("processing >= 2x the fastest peer", "processing_per_s", 2.0),
        Target("bulk enqueue >= 5x the fastest peer", "bulk_enqueue_per_s", 5.0),
        Target("p50 latency no worse than the best peer", "latency_p50_ms", 1.0),
        *_enqueue_targets(raw=True),
        *_latency_targets(1.0),
    ],
    "postgres": [
        Target("processing >= 2x the faster of the peers", "processing_per_s", 2.0),
        *_enqueue_targets(raw=True),
        *_latency_targets(2.5),
        Target(
            "processing >= 2x pgqueuer with --batch-size 100",
            "processing_per_s",
            2.0,
            "pgqueuer",
            batch_size=100,
        ),
        Target("bulk enqueue >= 2x pgqueuer", "bulk_enqueue_per_s", 2.0, "pgqueuer"),
    ],
    "nats": [
        Target("processing >= 2x taskiq-nats", "processing_per_s", 2.0, "taskiq-nats"),
        *_enqueue_targets(raw=True),
        *_latency_targets(2.0),
        Target("bulk enqueue >= 0.8x raw", "bulk_enqueue_per_s", 0.8, RAW),
    ],
    "sqlite": [
        *_enqueue_targets(raw=False),
        Target("one-by-one enqueue (async API) >= 10,000/s", "enqueue_per_s", 10_000, "limit"),
        Target("one-by-one enqueue (sync API) >= 10,000/s", "enqueue_sync_per_s", 10_000, "limit"),
        *_latency_targets(2.0),
    ],
}
#: Issue #20 on PostgreSQL with ``--scale``: processing at each later n at least this
#: fraction of processing at the first n (10,000 -> 100,000: within 20 %).
SCALE_TARGETS = {"postgres": 0.8}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backend", choices=sorted(PEERS), default="redis", help="server to compare on"
    )
    parser.add_argument(
        "-n", type=int, default=10_000, help="tasks per throughput measurement (default 10000)"
    )
    parser.add_argument(
        "--peers", help="comma-separated peers (default: every peer of the backend)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every library this many times, taking turns, and report "
        "the medians (default 1)",
    )
    parser.add_argument(
        "--latency-samples",
        type=int,
        default=200,
        help="sequential tasks for latency (default 200)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds one worker run may take (default 900)"
    )
    parser.add_argument(
        "--reference",
        type=Path,
        help="JSON of an earlier `--backend redis --json` run: "
        "also check that OmniQ here is within the same order as OmniQ on Redis",
    )
    parser.add_argument(
        "--scale",
        help="comma-separated task counts (e.g. 10000,100000): measure at each n and report "
        "how each figure changes from the first n to each later one (overrides -n)",
    )
    parser.add_argument(
        "--single-n",
        type=int,
        default=10_000,
        help="most tasks enqueued one by one for the enqueue/s figure (default 10000)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="jobs a peer's worker fetches at once where it has the knob (pgqueuer "
        "--batch-size; default 10, the concurrency)",
    )
    parser.add_argument(
        "--vacuum",
        action="store_true",
        help="PostgreSQL: VACUUM ANALYZE before each processing run (default off: a queue "
        "must keep its speed on a freshly filled table that nothing analyzed)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    args = parser.parse_args(argv)
    try:
        args.scale_ns = [int(x) for x in args.scale.split(",")] if args.scale else [args.n]
    except ValueError:
        parser.error(f"--scale {args.scale!r}: expected comma-separated task counts")
    if args.batch_size is not None:
        if args.batch_size < 1:
            parser.error(f"--batch-size {args.batch_size}: expected >= 1")
        os.environ["OMNIQ_BENCH_BATCH_SIZE"] = str(args.batch_size)
    known = PEERS[args.backend]
    args.peer_names = (
        [p.strip() for p in args.peers.split(",") if p.strip()] if args.peers else list(known)
    )
    unknown = [p for p in args.peer_names if p not in known]
    if unknown:
        parser.error(
            f"unknown peer(s) {', '.join(unknown)} for --backend {args.backend}; "
            f"valid: {', '.join(known)}"
        )
    if min(args.scale_ns) < 1 or args.latency_samples < 2 or args.rounds < 1:
        parser.error("-n, --scale and --rounds must be >= 1 and --latency-samples >= 2")
    return args


def omniq_setup(backend: str) -> tuple[str, Callable[[], Any]]:
    """OmniQ's store URL for ``backend`` in its own namespace, and the coroutine
    function that removes that namespace."""
    from peers import NAME, NATS_URL, POSTGRES_URL, REDIS_URL, SQLITE_DIR
    from peers.cleanup import nats_delete_streams, postgres_drop_schema, redis_delete, sqlite_remove

    if backend == "sqlite":
        path = Path(SQLITE_DIR) / "omniq.db"
        return f"sqlite:///{path}", lambda: sqlite_remove(path)
    if backend == "redis":
        return f"{REDIS_URL}?key_prefix={NAME}", lambda: redis_delete(REDIS_URL, [f"{NAME}:*"])
    if backend == "postgres":
        return f"{POSTGRES_URL}?schema={NAME}", lambda: postgres_drop_schema(POSTGRES_URL, NAME)
    return f"{NATS_URL}?prefix={NAME}", lambda: nats_delete_streams(
        NATS_URL, (f"{NAME}_", f"KV_{NAME}_")
    )


def load(ref: str) -> Any:
    module, _, cls = ref.partition(":")
    return getattr(importlib.import_module(module), cls)()


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    url, omniq_cleanup = omniq_setup(args.backend)
    vacuum = None
    if args.backend == "postgres" and args.vacuum:
        from peers import POSTGRES_URL
        from peers.cleanup import postgres_vacuum

        vacuum = partial(postgres_vacuum, POSTGRES_URL)
    os.environ.update(dict.fromkeys(STORE_VARIABLES, url))
    os.environ["OMNIQ_EVENTS"] = "true"
    from omniq_subject import OmniQSubject  # its app reads the variables above

    subjects: list[tuple[str, Callable[[], Any]]] = [
        ("omniq", partial(OmniQSubject, None, None, "async"))
    ]
    subjects += [(name, partial(load, PEERS[args.backend][name])) for name in args.peer_names]
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in subjects}
    notes: dict[str, list[str]] = {}
    for r in range(args.rounds):
        turn = subjects[r % len(subjects) :] + subjects[: r % len(subjects)]
        for name, make in turn:
            if not args.json and args.rounds > 1:
                print(f"[{name}] round {r + 1} of {args.rounds}", flush=True)
            rounds[name].append(await _measure_one(name, make, args, vacuum, notes, omniq_cleanup))
    results = {name: median_figures(figures) for name, figures in rounds.items()}
    return {
        "backend": args.backend,
        "n": args.n,
        "latency_samples": args.latency_samples,
        "rounds": args.rounds,
        "batch_size": args.batch_size or 10,
        # (OmniQ's worker: concurrency + prefetch a reserve; see omniq_subject.prefetch)
        "omniq_reserve": max(args.batch_size, 10) if args.batch_size else 50,
        "results": results,
        "notes": notes,
        "per_round": rounds if args.rounds > 1 else {},
    }


async def _measure_one(
    name: str,
    make: Callable[[], Any],
    args: argparse.Namespace,
    vacuum: Callable[[], Any] | None,
    notes: dict[str, list[str]],
    omniq_cleanup: Callable[[], Any],
) -> dict[str, Any]:
    """One library's figures, or ``{"error": ...}``: one library failing must not hide
    the others."""
    from harness import measure

    with tempfile.TemporaryDirectory(prefix=f"omniq-compare-{name}-") as tmp:
        try:
            subject = make()
            notes[name] = list(getattr(subject, "notes", []))
            n = args.n
            cap = getattr(subject, "max_n", None)
            if cap is not None and n > cap:
                notes[name].append(
                    f"measured at n={cap:,} instead of {n:,}: {subject.max_n_reason}"
                )
                n = cap
            figures = await measure(
                subject,
                n,
                args.latency_samples,
                Path(tmp),
                timeout=args.timeout,
                progress=not args.json,
                before_processing=vacuum,
                single_n=args.single_n,
            )
            return figures.as_dict()
        except Exception as exc:
            if not args.json:
                traceback.print_exc()
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            if name == "omniq":
                await omniq_cleanup()


def median_figures(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each metric's median over the rounds that succeeded (an error if none did); the
    rounds that failed are kept as warnings."""
    good = [r for r in rounds if "error" not in r]
    failed = [r["error"] for r in rounds if "error" in r]
    if not good:
        return {"error": "; ".join(dict.fromkeys(failed))}
    merged = dict(good[0])
    for key, value in good[0].items():
        if type(value) in (int, float) and key not in ("n", "latency_samples"):
            middle = statistics.median(r[key] for r in good)
            merged[key] = round(middle, 1 if key.endswith("_per_s") else 3)
    merged["warnings"] = [w for r in good for w in r.get("warnings", [])]
    merged["warnings"] += [f"a round failed: {error}" for error in failed]
    return merged


def advantage(omniq: dict[str, Any], peer: dict[str, Any], key: str, higher: bool) -> float | None:
    """How many times OmniQ is better than the peer on ``key`` (> 1: OmniQ is better)."""
    if "error" in omniq or "error" in peer or not omniq.get(key) or not peer.get(key):
        return None
    return omniq[key] / peer[key] if higher else peer[key] / omniq[key]


def _required(target: Target, results: dict[str, Any], against: str) -> float | None:
    """The figure OmniQ's ``target.key`` must reach in ``results`` (one round's or the
    medians), with ``against`` resolved to a library's name; None when not measured."""
    omniq = results.get("omniq", {})
    if target.against == "limit":
        return target.factor
    if target.against == "p50":
        p50 = omniq.get("latency_p50_ms")
        return None if not p50 else p50 * target.factor
    ref = results.get(against, {})
    value = ref.get(target.ref_key or target.key)
    if "error" in ref or not value:
        return None
    return value * target.factor if HIGHER[target.key] else value / target.factor


def _check(target: Target, report: dict[str, Any]) -> dict[str, Any]:
    results = report["results"]
    omniq = results.get("omniq", {})
    higher = HIGHER[target.key]
    ref_key = target.ref_key or target.key
    against = target.against
    if against == "peers":
        peers = {
            name: r
            for name, r in results.items()
            if name not in ("omniq", RAW) and "error" not in r and r.get(ref_key)
        }
        if not peers:
            return {"target": target.text, "met": None, "detail": "no peer measured"}
        against = (max if higher else min)(peers, key=lambda p: peers[p][ref_key])
    value = None if "error" in omniq else omniq.get(target.key)
    need = _required(target, results, against)
    if value is None or need is None:
        missing = "OmniQ" if value is None else against
        return {"target": target.text, "met": None, "detail": f"not measured ({missing})"}
    met: bool | None = value >= need if higher else value <= need
    relative = target.against not in ("limit", "p50")
    if relative:
        ratio = value / results[against][ref_key] if higher else results[against][ref_key] / value
        detail = f"OmniQ {value:,} vs {against} {results[against][ref_key]:,}: {ratio:.2f}x"
    elif target.against == "limit":
        detail = f"OmniQ {value:,} against {need:,}"
    else:
        detail = f"OmniQ p99 {value:,} ms against {target.factor:g}x p50 = {need:,.2f} ms"
    per_round = report.get("per_round") or {}
    if per_round:
        cells = []
        for i, one in enumerate(per_round["omniq"]):
            round_results = {name: rounds[i] for name, rounds in per_round.items()}
            got, want = one.get(target.key), _required(target, round_results, against)
            if "error" in one or got is None or want is None:
                cells.append("n/a")
            elif relative:
                ref = round_results[against][ref_key]
                cells.append(f"{got / ref if higher else ref / got:.2f}x")
            else:
                cells.append(f"{got:,}" + ("" if target.against == "limit" else f"/{want:.2f}"))
        detail += "; per round " + ", ".join(cells)
    if target.batch_size is not None and report.get("batch_size") != target.batch_size:
        met = None
        detail += (
            f"; measured with --batch-size {report.get('batch_size')}, the target is stated"
            f" for --batch-size {target.batch_size}"
        )
    return {"target": target.text, "met": met, "detail": detail}


def check_targets(report: dict[str, Any], reference: dict[str, Any] | None) -> list[dict[str, Any]]:
    checks = [_check(target, report) for target in TARGETS[report["backend"]]]
    omniq = report["results"].get("omniq", {})
    if reference is not None and "error" not in omniq:
        redis_rate = reference["results"]["omniq"]["processing_per_s"]
        ratio = omniq["processing_per_s"] / redis_rate
        checks.append(
            {
                "target": "processing within the same order as OmniQ on Redis",
                "met": ratio >= 0.1,
                "detail": f"{omniq['processing_per_s']:,} vs {redis_rate:,} on Redis: {ratio:.2f}x",
            }
        )
    return checks


def check_scale_targets(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue #20 with ``--scale``: OmniQ's processing at each later n against the first n
    (rounds paired by their number)."""
    fraction = SCALE_TARGETS.get(reports[0]["backend"])
    if fraction is None or len(reports) < 2:
        return []
    first = reports[0]
    checks: list[dict[str, Any]] = []
    for report in reports[1:]:
        text = f"processing at n={report['n']:,} within {1 - fraction:.0%} of n={first['n']:,}"
        ratio = _processing_ratio(report["results"], first["results"])
        if ratio is None:
            checks.append({"target": text, "met": None, "detail": "not measured"})
            continue
        detail = f"{ratio:.2f}x"
        later, earlier = report.get("per_round") or {}, first.get("per_round") or {}
        if later and earlier:
            pairs = zip(later["omniq"], earlier["omniq"], strict=False)
            ratios = [_processing_ratio({"omniq": a}, {"omniq": b}) for a, b in pairs]
            detail += "; per round " + ", ".join(
                "n/a" if r is None else f"{r:.2f}x" for r in ratios
            )
        checks.append({"target": text, "met": ratio >= fraction, "detail": detail})
    return checks


def _processing_ratio(later: dict[str, Any], earlier: dict[str, Any]) -> float | None:
    a, b = later.get("omniq", {}), earlier.get("omniq", {})
    if "error" in a or "error" in b or not a.get("processing_per_s"):
        return None
    return float(a["processing_per_s"] / b["processing_per_s"])


def _verdict(check: dict[str, Any]) -> str:
    verdict = {True: "MET", False: "NOT MET", None: "UNKNOWN"}[check["met"]]
    return f"target: {check['target']}: {verdict} ({check['detail']})"


def table(report: dict[str, Any]) -> str:
    results = report["results"]
    omniq = results.get("omniq", {})
    header = f"{'library':<14}" + "".join(f"{label:>14}" for label, _, _ in METRICS)
    rounds = report.get("rounds", 1)
    lines = [
        f"{report['backend']}: n={report['n']}, {report['latency_samples']} latency samples, "
        f"one worker process, 10 tasks at a time, OmniQ with events on"
        f" reserving up to {report.get('omniq_reserve', 50)} at a time"
        + (f"; medians of {rounds} rounds" if rounds > 1 else ""),
        header,
        "-" * len(header),
    ]
    for name, figures in results.items():
        if "error" in figures:
            lines.append(f"{name:<14}  FAILED: {figures['error']}")
            continue
        lines.append(
            f"{name:<14}"
            + "".join(
                f"{'-' if figures.get(key) is None else f'{figures[key]:,}':>14}"
                for _, key, _ in METRICS
            )
        )
        if name != "omniq":
            cells = [advantage(omniq, figures, key, higher) for _, key, higher in METRICS]
            lines.append(
                f"{'  OmniQ x':<14}"
                + "".join(f"{'-' if c is None else f'{c:.2f}x':>14}" for c in cells)
            )
    lines.append(
        "OmniQ x = how many times OmniQ is better (throughput omniq/peer, latency peer/omniq)"
    )
    for name, notes in report["notes"].items():
        lines += [f"note, {name}: {note}" for note in notes]
    for name, figures in results.items():
        lines += [f"WARNING, {name}: {warning}" for warning in figures.get("warnings", [])]
    lines += [_verdict(check) for check in report["targets"]]
    return "\n".join(lines)


def scaling(reports: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per later n, library and metric: its figure there divided by its figure at the
    first n (throughput: < 1 is slower at the larger n; latency: > 1 is slower)."""
    base = reports[0]["results"]
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for report in reports[1:]:
        per: dict[str, dict[str, float | None]] = {}
        for name, figures in report["results"].items():
            first = base.get(name, {})
            per[name] = {
                key: (
                    None
                    if "error" in figures
                    or "error" in first
                    or not first.get(key)
                    or figures.get(key) is None
                    else round(figures[key] / first[key], 3)
                )
                for _, key, _ in METRICS
            }
        out[str(report["n"])] = per
    return out


def scaling_table(reports: list[dict[str, Any]], changes: dict[str, Any]) -> str:
    first = reports[0]["n"]
    lines = []
    for n, per in changes.items():
        header = f"{'library':<14}" + "".join(f"{label:>14}" for label, _, _ in METRICS)
        lines += [f"change from n={first} to n={n} (figure at {n} / figure at {first})", header]
        lines.append("-" * len(header))
        for name, cells in per.items():
            lines.append(
                f"{name:<14}"
                + "".join(
                    f"{'-' if cells[key] is None else f'{cells[key]:.2f}x':>14}"
                    for _, key, _ in METRICS
                )
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE), os.environ.get("PYTHONPATH")])
    )
    sys.path.insert(0, str(HERE))
    reference = json.loads(args.reference.read_text()) if args.reference else None
    # The SQLite subjects' files, one directory for the whole run (the workers inherit it).
    sqlite_dir = tempfile.TemporaryDirectory(prefix="omniq-compare-sqlite-")
    os.environ["OMNIQ_BENCH_SQLITE_DIR"] = sqlite_dir.name
    reports = []
    try:
        for n in args.scale_ns:
            args.n = n
            report = asyncio.run(run_all(args))
            report["targets"] = check_targets(report, reference)
            reports.append(report)
            if not args.json:
                print(table(report), flush=True)
    finally:
        sqlite_dir.cleanup()
    changes = scaling(reports) if len(reports) > 1 else {}
    scale_checks = check_scale_targets(reports)
    if args.json:
        out = (
            reports[0]
            if len(reports) == 1
            else {"runs": reports, "scaling": changes, "scale_targets": scale_checks}
        )
        print(json.dumps(out, indent=2))
    elif changes:
        print(scaling_table(reports, changes))
        for check in scale_checks:
            print(_verdict(check))
    ok = all("error" not in r for report in reports for r in report["results"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
