"""Answer grading: is a model's final answer equivalent to the gold answer?

Three layers, cheapest first (``docs/grading.md`` has the full rule list):

1. ``normalize_answer``: a string normalization (``$...$``, ``\\left``/``\\right``, ``\\dfrac``, units,
   currency, degrees, percent, thousands separators, leading zeros, ``x =`` prefixes, Python-style
   numbers). Equal normalized strings are equivalent.
2. A numeric fast path: when both sides are plain numbers (integers, decimals, scientific notation,
   ``\\frac{a}{b}`` with numeric a and b) the verdict is decided here by relative tolerance, without
   sympy. Multiple-choice letters and comma-separated lists of numbers are also decided here.
3. math-verify (``parse`` + ``verify``) on the normalized strings for everything else.

Layers 1 and 2 live in ``pasodoble.normalize``: pure string work, linear in the (truncated) answer
length, run in the calling process. Layer 3 can take unbounded time on adversarial input (sympy), so ``Grader`` runs it in a pool
of worker processes, started with ``spawn`` (safe when torch is loaded), and kills and replaces a
worker whose current check overruns ``timeout_s``: that one check is false with reason ``timeout``.
"""

from __future__ import annotations

import atexit
import logging
import math
import multiprocessing as mp
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing.connection import wait as _mp_wait

from pasodoble.config import MAX_GRADER_TIMEOUT_S, GraderConfig
from pasodoble.extract import extract_answer, extraction_fallbacks
from pasodoble.normalize import (
    _compact,
    normalize_answer,
    quick_check,
    strip_outer,
)

__all__ = [
    "Grader",
    "GraderStats",
    "Verdict",
    "answers_equivalent",
    "check_pair",
    "too_long_verdict",
    "extract_answer",
    "normalize_answer",
]

log = logging.getLogger(__name__)

REASONS = ("no_answer", "mismatch", "timeout", "parse_error", "too_long")

# --------------------------------------------------------------------------------------------------
# Layer 3: math-verify
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _mv_parse(s: str, mv_timeout: int | None):
    """math-verify parse of one answer (cached: the same gold is checked against many attempts)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    cfg = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return parse(
        "\\boxed{" + s + "}", extraction_config=cfg, parsing_timeout=mv_timeout, raise_on_error=False
    )


def _mv_equal(pred: str, gold: str, mv_timeout: int | None) -> bool:

    g = _mv_parse(gold, mv_timeout)
    p = _mv_parse(pred, mv_timeout)
    if not g or not p:
        return False
    g, p = _with_operators_evaluated(g), _with_operators_evaluated(p)
    lhs = _claimed_side(p[0], g[0])
    if lhs is not None and not _mv_equal_parsed(g, [lhs, str(lhs)], mv_timeout):
        return False  # "2 + 3 = 6" for 6: a false equation is no answer, whatever its right side
    return _mv_equal_parsed(g, p, mv_timeout)


def _claimed_side(pred, gold):
    """The left side of an equation ``pred`` that must equal a non-equation ``gold`` too, else None.

    math-verify compares an equation's right side only (``6 = 5`` would match ``5``). When the left side
    is a name (``x = 5``, ``f(x) = 5``) that is the answer's convention; any other left side
    (``6``, ``2 + 3``, ``x + 1``) is a claim that must hold: it must equal the gold as well.
    """
    import sympy

    if not isinstance(pred, sympy.Eq) or isinstance(gold, sympy.core.relational.Relational):
        return None
    lhs = pred.lhs
    if isinstance(lhs, (sympy.Symbol, sympy.Indexed, sympy.core.function.AppliedUndef)):
        return None
    return lhs


def _mv_equal_parsed(g, p, mv_timeout: int | None) -> bool:
    from math_verify import verify

    if not _surely_different(g[0], p[0]) and verify(
        g, p, timeout_seconds=mv_timeout, raise_on_error=False, allow_set_relation_comp=True
    ):
        return True
    # a free symbol "i" on either side is read as the imaginary unit (i^2 = -1, \\frac{1+i}{2} = 0.5+0.5i)
    g2, p2 = _with_imaginary_unit(g), _with_imaginary_unit(p)
    if g2 is None and p2 is None:
        return False
    g, p = g2 or g, p2 or p
    if _surely_different(g[0], p[0]):
        return False
    return bool(verify(g, p, timeout_seconds=mv_timeout, raise_on_error=False, allow_set_relation_comp=True))


def _with_operators_evaluated(parsed):
    """``parsed`` with its sums, products, limits and integrals evaluated (``doit``) where sympy can.

    math-verify compares ``\\sum_{n=1}^{\\infty}\\frac{1}{n^2}`` with ``\\frac{\\pi^2}{6}`` through a slow
    numeric path (seconds) and never evaluates a symbolic sum (``\\sum_{i=1}^{n} i`` vs ``\\frac{n(n+1)}{2}``);
    ``doit`` gives the closed form in milliseconds, or leaves the operator as it was. Runs in the
    grader's time-bounded workers like the rest of math-verify.
    """
    import sympy

    kinds = (sympy.Sum, sympy.Product, sympy.Limit, sympy.Integral)
    out = []
    for x in parsed:
        if isinstance(x, sympy.Basic) and x.has(*kinds):
            try:
                x = x.xreplace({e: e.doit() for e in x.atoms(*kinds)})
            except Exception:
                pass
        out.append(x)
    return out


def _with_imaginary_unit(parsed):
    """``parsed`` with the free symbol ``i`` replaced by sympy's ``I``; None when it has no such symbol."""
    import sympy

    out, changed = [], False
    for x in parsed:
        syms = [v for v in getattr(x, "free_symbols", ()) if getattr(v, "name", None) == "i"]
        if isinstance(x, sympy.Basic) and syms:
            try:
                x = x.xreplace(dict.fromkeys(syms, sympy.I))
                changed = True
            except Exception:
                return None
        out.append(x)
    return out if changed else None


_PROBE_POINTS = (
    (0.5772156649, 1.3247179572, 0.7390851332, 1.6180339887),
    (2.2360679775, 0.3183098862, 1.4142135624, 0.6931471806),
)


def _surely_different(a, b) -> bool:
    """Cheap proof that two parsed plain expressions differ: they disagree at two numeric points.

    math-verify's expensive path for a mismatch is ``simplify(a - b)``; two expressions that take
    different values somewhere cannot simplify to the same thing. Applied only to plain expressions
    (no relations, sets, tuples, matrices, floats or undefined functions) with the same free symbols,
    so math-verify's special rules (float rounding, assignments, symbol matching) are never bypassed.
    """
    import sympy

    try:
        for x in (a, b):
            if not isinstance(x, sympy.Expr) or isinstance(x, (sympy.Tuple, sympy.MatrixBase)):
                return False
            if x.atoms(sympy.Float) or x.atoms(sympy.core.function.AppliedUndef):
                return False
            if (
                x.has(sympy.UnevaluatedExpr)
                or x.has(sympy.Order)
                or x.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan)
            ):
                return False
        syms = sorted(a.free_symbols | b.free_symbols, key=str)
        if a.free_symbols != b.free_symbols or len(syms) > 4:
            return False
        for point in _PROBE_POINTS:
            sub = {sym: sympy.Float(point[i]) for i, sym in enumerate(syms)}
            va = complex(a.evalf(15, subs=sub))
            vb = complex(b.evalf(15, subs=sub))
            if not all(map(math.isfinite, (va.real, va.imag, vb.real, vb.imag))):
                return False
            if abs(va - vb) <= 1e-6 * (1.0 + abs(va) + abs(vb)):
                return False
        return True
    except Exception:
        return False


def _mv_equivalent(pred: str, gold: str, mv_timeout: int | None) -> bool:
    """math-verify on the normalized answers; the raw form is tried only where normalizing broke parsing."""
    g, p = normalize_answer(gold), normalize_answer(pred)
    if not _mv_parse(g, mv_timeout):
        g = strip_outer(gold)
    if not _mv_parse(p, mv_timeout):
        p = strip_outer(pred)
    if _mv_equal(p, g, mv_timeout):
        return True
    # both sides are equations but normalizing dropped a "y =" from only one: compare the equations
    gr, pr = strip_outer(gold), strip_outer(pred)
    if "=" in gr and "=" in pr and (gr, pr) != (g, p):
        return _mv_equal(pr, gr, mv_timeout)
    return False


def too_long_verdict(pred: str, gold: str, max_answer_chars: int) -> tuple[bool, str | None] | None:
    """The verdict of a pair in which either answer is longer than ``max_answer_chars``, else None.

    Such a pair is never normalized or parsed (the cost of sympy grows with the length) and never
    compared by a prefix: it is correct only when the two answers are the same text in full (up to
    whitespace, in linear time); otherwise it is wrong with reason ``too_long``.
    """
    if len(pred) <= max_answer_chars and len(gold) <= max_answer_chars:
        return None
    if _compact(strip_outer(pred)) == _compact(strip_outer(gold)):
        return True, None
    return False, "too_long"


def check_pair(
    pred: str | None, gold: str, max_answer_chars: int = 1000, mv_timeout: int | None = None
) -> tuple[bool, str | None]:
    """Full in-process check of an extracted answer: (correct, reason).

    Answers longer than ``max_answer_chars`` are compared as whole strings only (``too_long_verdict``).
    ``mv_timeout``: math-verify's own signal-based timeout in whole seconds (main thread only); None
    disables it, leaving the check unbounded (workers are bounded by being killed instead).
    """
    if pred is None or not pred.strip():
        return False, "no_answer"
    long = too_long_verdict(pred, gold, max_answer_chars)
    if long is not None:
        return long
    q = quick_check(pred, gold)
    if q is not None:
        return q, (None if q else "mismatch")
    try:
        if _mv_equivalent(pred, gold, mv_timeout):
            return True, None
    except Exception:  # sympy and the LaTeX parser raise many kinds of errors on odd input
        log.debug("math-verify failed", exc_info=True)
        return False, "parse_error"
    return False, "mismatch"


def answers_equivalent(pred: str, gold: str, *, timeout_s: float = 5.0) -> bool:
    """In-process equivalence of two extracted answers (``pred`` first, then ``gold``).

    Bounded only by math-verify's own signal timeout, which works in the main thread only; from other
    threads the check runs without a bound: use ``Grader`` (worker processes) for a hard bound.
    """
    return check_pair(pred, _gold_answer(gold), mv_timeout=_main_thread_timeout(timeout_s))[0]


def _main_thread_timeout(timeout_s: float) -> int | None:
    if threading.current_thread() is threading.main_thread():
        # signal.alarm takes whole seconds up to a C unsigned int: a day at most (inf, 1e12 overflowed)
        return max(1, math.ceil(min(timeout_s, MAX_GRADER_TIMEOUT_S))) if timeout_s == timeout_s else 1
    return None


# --------------------------------------------------------------------------------------------------
# Grader: extraction, cache, worker pool with a hard wall-clock bound
# --------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """The grade of one response: the extracted answer, whether it is correct, and why not."""

    pred: str | None
    correct: bool
    # None when correct, else 'no_answer' | 'mismatch' | 'timeout' | 'parse_error' | 'too_long'
    reason: str | None


@dataclass
class GraderStats:
    """Counters since the grader was created."""

    checks: int = 0
    correct: int = 0
    cache_hits: int = 0
    fast_path: int = 0
    slow_path: int = 0
    timeouts: int = 0
    errors: int = 0
    no_answer: int = 0
    too_long: int = 0
    worker_restarts: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        d = {k: v for k, v in self.__dict__.items() if k != "reasons"}
        return d


def _worker_main(conn, max_answer_chars: int) -> None:  # pragma: no cover - runs in a child process
    """Worker loop: receive chunks of (idx, pred, gold), send (idx, correct, reason) per pair."""
    import logging as _logging

    _logging.getLogger("math_verify").setLevel(_logging.ERROR)
    _logging.getLogger("latex2sympy2_extended").setLevel(_logging.ERROR)
    # import the heavy parts before announcing readiness, so no check pays for them
    import math_verify  # noqa: F401

    _mv_parse("1", None)
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        for idx, pred, gold in msg:
            try:
                ok, reason = check_pair(pred, gold, max_answer_chars)
            except Exception:
                ok, reason = False, "parse_error"
            conn.send((idx, ok, reason))


_START_LOCK = threading.Lock()


def _start_without_main(proc) -> None:
    """Start a ``spawn`` process without re-running the parent's ``__main__`` module in the child.

    The worker needs only this module; re-importing a user's script (which may call the grader at top
    level, without an ``if __name__ == "__main__"`` guard) would recurse. The spawn preparation data
    names the main module through ``__spec__``/``__file__``, so both are hidden while it is written.
    """
    main = sys.modules.get("__main__")
    with _START_LOCK:
        if main is None:
            proc.start()
            return
        saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
        try:
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
            proc.start()
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


class _Worker:
    def __init__(self, ctx, max_answer_chars: int):
        parent, child = ctx.Pipe(duplex=True)
        self.conn = parent
        self.proc = ctx.Process(target=_worker_main, args=(child, max_answer_chars), daemon=True)
        _start_without_main(self.proc)
        child.close()
        self.ready = False
        self.started_at = time.monotonic()
        self.busy: deque[int] = deque()  # item indices sent, in order
        self.item_start = 0.0

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(timeout=2)
        except Exception:  # already gone
            pass
        try:
            self.conn.close()
        except OSError:
            pass

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.kill()
        else:
            try:
                self.conn.close()
            except OSError:
                pass


_LIVE_GRADERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for g in list(_LIVE_GRADERS):
        try:
            g.close()
        except Exception:
            pass


class Grader:
    """Grades responses against gold answers with a hard per-check time bound.

    ``workers > 0``: checks that need math-verify run in that many ``spawn``-ed worker processes; a
    check that overruns ``timeout_s`` gets its worker killed and replaced and counts as wrong with
    reason ``timeout``; the other pairs of its chunk are re-run. Safe to call from any thread.
    ``workers = 0``: everything runs in the calling process; only math-verify's own signal timeouts
    bound a check, and only in the main thread.
    """

    def __init__(self, cfg: GraderConfig | None = None):
        self.cfg = cfg or GraderConfig()
        self.stats = GraderStats()
        self._cache: OrderedDict[tuple[str, str], tuple[bool, str | None]] = OrderedDict()
        self._lock = threading.RLock()
        self._workers: list[_Worker] = []
        self._ctx = mp.get_context("spawn")
        self._closed = False
        _LIVE_GRADERS.add(self)

    # ------------------------------------------------------------------ public API

    def extract(self, response: str, mode: str = "strict") -> str | None:
        """The final answer of ``response`` in full (a longer answer than ``max_answer_chars`` is graded
        ``too_long`` unless it equals the gold, never compared by a prefix).

        ``mode``: ``strict`` (the last box, else ``grader.fallback``) or ``flexible`` (then also the last
        number in the response; ``pasodoble.extract.extraction_fallbacks``).
        """
        chain = self.cfg.fallback if mode == "strict" else extraction_fallbacks(mode, self.cfg.fallback)
        return extract_answer(_clean_text(response), chain, max_chars=self.cfg.max_chars)

    def grade(self, response: str, gold: str, *, extracted: bool = False, extract: str = "strict") -> Verdict:
        return self.grade_batch([response], [gold], extracted=extracted, extract=extract)[0]

    def grade_batch(
        self,
        responses: Sequence[str],
        golds: Sequence[str],
        *,
        extracted: bool = False,
        progress: bool = False,
        extract: str = "strict",
    ) -> list[Verdict]:
        """Grade pairs in order. ``extracted=True``: responses are already final answers (no extraction).
        ``extract``: the extraction mode of full responses, ``strict`` or ``flexible`` (see ``extract``)."""
        if len(responses) != len(golds):
            raise ValueError(f"grade_batch: {len(responses)} responses but {len(golds)} gold answers")
        extraction_fallbacks(extract, ())  # an unknown mode is an error even when nothing is extracted
        mac = self.cfg.max_answer_chars
        preds: list[str | None] = []
        for r in responses:
            if r is None:
                preds.append(None)
            elif extracted:
                p = strip_outer(_clean_text(str(r)))
                preds.append(p or None)
            else:
                preds.append(self.extract(str(r), extract))
        gold_s = [_gold_answer(_clean_text(str(g))) for g in golds]
        results: list[tuple[bool, str | None] | None] = [None] * len(preds)
        todo: dict[tuple[str, str], list[int]] = {}
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(preds), desc="grading", unit="pair", dynamic_ncols=True, file=sys.stderr)
        with self._lock:
            for i, (p, g) in enumerate(zip(preds, gold_s, strict=True)):
                if p is None:
                    results[i] = (False, "no_answer")
                    continue
                long = too_long_verdict(p, g, mac)
                if long is not None:  # decided in linear time; not cached (the keys would be large)
                    results[i] = long
                    continue
                key = (p, g)
                hit = self._cache_get(key)
                if hit is not None:
                    self.stats.cache_hits += 1
                    results[i] = hit
                    continue
                if key in todo:
                    todo[key].append(i)
                    continue
                try:
                    q = quick_check(p, g)
                except Exception:
                    q = None
                if q is not None:
                    self.stats.fast_path += 1
                    res = (q, None if q else "mismatch")
                    self._cache_put(key, res)
                    results[i] = res
                    continue
                todo[key] = [i]
            if bar is not None:
                bar.update(len(preds) - sum(len(v) for v in todo.values()))
            if todo:
                keys = list(todo)
                self.stats.slow_path += len(keys)
                weights = [len(todo[k]) for k in keys]
                try:
                    slow = self._run_slow(keys, bar=bar, weights=weights)
                finally:
                    if bar is not None:
                        bar.close()
                for key, res in zip(keys, slow, strict=True):
                    if res[1] != "timeout" or self.cfg.cache_size:
                        self._cache_put(key, res)
                    for i in todo[key]:
                        results[i] = res
            if bar is not None:
                bar.close()
            out = []
            for p, res in zip(preds, results, strict=True):
                assert res is not None
                ok, reason = res
                self.stats.checks += 1
                self.stats.correct += int(ok)
                if reason is not None:
                    self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1
                    if reason == "timeout":
                        self.stats.timeouts += 1
                    elif reason == "parse_error":
                        self.stats.errors += 1
                    elif reason == "no_answer":
                        self.stats.no_answer += 1
                    elif reason == "too_long":
                        self.stats.too_long += 1
                out.append(Verdict(pred=p, correct=ok, reason=reason))
            return out

    def warm_up(self, timeout_s: float = 120.0) -> None:
        """Start the worker processes now and wait until they are ready (no-op with ``workers=0``).

        The time bound of a check starts when a ready worker takes it; waiting for a worker to start
        (the first batch, or just after a timeout replaced one) is not part of it. Call this before
        latency-sensitive grading.
        """
        if self.cfg.workers <= 0:
            return
        with self._lock:
            self._ensure_workers()
            deadline = time.monotonic() + timeout_s
            for i, w in enumerate(self._workers):
                while not w.ready:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RuntimeError(f"grader workers did not start within {timeout_s:.0f} s")
                    try:
                        if w.conn.poll(min(left, 1.0)):
                            msg = w.conn.recv()
                            w.ready = msg == ("ready",)
                    except (EOFError, OSError):
                        self._replace(w)
                        w = self._workers[i]

    def close(self) -> None:
        """Stop the worker processes (the grader can still be used; it restarts them lazily)."""
        with self._lock:
            workers, self._workers = self._workers, []
        for w in workers:
            w.stop()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; atexit covers interpreter shutdown
        try:
            if self._workers:
                self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ internals

    def _cache_get(self, key):
        if not self.cfg.cache_size:
            return None
        res = self._cache.get(key)
        if res is not None:
            self._cache.move_to_end(key)
        return res

    def _cache_put(self, key, res) -> None:
        if not self.cfg.cache_size:
            return
        self._cache[key] = res
        self._cache.move_to_end(key)
        while len(self._cache) > self.cfg.cache_size:
            self._cache.popitem(last=False)

    def _run_slow(
        self, keys: list[tuple[str, str]], *, bar=None, weights=None
    ) -> list[tuple[bool, str | None]]:
        if self.cfg.workers <= 0:
            out = []
            for j, (p, g) in enumerate(keys):
                out.append(self._check_in_process(p, g))
                if bar is not None:
                    bar.update(weights[j] if weights else 1)
            return out
        return self._run_pool(keys, bar=bar, weights=weights)

    def _check_in_process(self, pred: str, gold: str) -> tuple[bool, str | None]:
        # math-verify's signal timeouts work only in the main thread; elsewhere the check is unbounded
        try:
            return check_pair(pred, gold, self.cfg.max_answer_chars, _main_thread_timeout(self.cfg.timeout_s))
        except Exception:
            return False, "parse_error"

    def _ensure_workers(self, pairs: int | None = None) -> None:
        """Start workers up to ``grader.workers``, capped by the CPU cores and by ``pairs`` to check: more
        processes than either only cost memory (``--workers 64`` for 2 pairs on 2 cores started 65)."""
        self._workers = [w for w in self._workers if w.proc.is_alive()]
        want = min(self.cfg.workers, os.cpu_count() or 1)
        if pairs is not None:
            want = max(len(self._workers), min(want, pairs))
        while len(self._workers) < want:
            self._workers.append(_Worker(self._ctx, self.cfg.max_answer_chars))

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self.stats.worker_restarts += 1
        idx = self._workers.index(w)
        self._workers[idx] = _Worker(self._ctx, self.cfg.max_answer_chars)

    def _run_pool(
        self, keys: list[tuple[str, str]], *, bar=None, weights=None
    ) -> list[tuple[bool, str | None]]:
        timeout = min(float(self.cfg.timeout_s), MAX_GRADER_TIMEOUT_S)  # inf would overflow select()
        n = len(keys)
        results: list[tuple[bool, str | None] | None] = [None] * n
        pending: deque[int] = deque(range(n))
        remaining = n
        self._ensure_workers(n)
        nw = len(self._workers)
        chunk = max(1, min(32, math.ceil(n / (nw * 8))))
        startup_deadline = time.monotonic() + 120.0
        failed_starts = 0

        def abandon(w: _Worker, reason: str) -> None:
            """Replace worker ``w``: its current pair gets ``reason``, the rest of its chunk goes back."""
            nonlocal remaining
            if w.busy:
                i = w.busy.popleft()
                if results[i] is None:
                    results[i] = (False, reason)
                    remaining -= 1
                    if bar is not None:
                        bar.update(weights[i] if weights else 1)
            pending.extendleft(reversed(w.busy))
            w.busy.clear()
            self._replace(w)

        while remaining:
            now = time.monotonic()
            # hand out chunks to idle, ready workers
            for w in self._workers:
                if w.ready and not w.busy and pending:
                    items = [pending.popleft() for _ in range(min(chunk, len(pending)))]
                    try:
                        w.conn.send([(i, keys[i][0], keys[i][1]) for i in items])
                    except (OSError, ValueError):
                        pending.extendleft(reversed(items))
                        self._replace(w)
                        continue
                    w.busy.extend(items)
                    w.item_start = time.monotonic()
            if not any(w.ready for w in self._workers) and now > startup_deadline:
                raise RuntimeError("grader workers did not start within 120 s")
            # wait for results or the earliest deadline
            waits = [w.item_start + timeout - now for w in self._workers if w.busy]
            wait_s = max(0.0, min(waits)) + 0.01 if waits else 0.5
            conns = [w.conn for w in self._workers if w.busy or not w.ready]
            ready = _mp_wait(conns, timeout=wait_s) if conns else []
            ready_set = set(ready)
            for w in list(self._workers):
                if w.conn not in ready_set:
                    continue
                try:
                    while w.conn.poll():
                        msg = w.conn.recv()
                        if msg[0] == "ready" and len(msg) == 1:
                            w.ready = True
                            continue
                        i, ok, reason = msg
                        if w.busy and w.busy[0] == i:
                            w.busy.popleft()
                        elif i in w.busy:
                            w.busy.remove(i)
                        if results[i] is None:
                            results[i] = (bool(ok), reason)
                            remaining -= 1
                            if bar is not None:
                                bar.update(weights[i] if weights else 1)
                        w.item_start = time.monotonic()
                except (EOFError, OSError):
                    if not w.ready:
                        failed_starts += 1
                        if failed_starts >= 3:
                            raise RuntimeError(
                                "grader worker processes exit during start-up; "
                                "check that math-verify imports (or use grader.workers=0)"
                            ) from None
                    # the worker died (crash, memory): its current pair is an error, the rest re-run
                    abandon(w, "parse_error")
            # kill workers whose current pair overran
            now = time.monotonic()
            for w in list(self._workers):
                if w.busy and now - w.item_start > timeout:
                    abandon(w, "timeout")
        return [r if r is not None else (False, "parse_error") for r in results]


def _gold_answer(gold: str) -> str:
    """A gold answer written as a solution text (``... so $\\boxed{4}$.``) is its boxed answer."""
    if "\\boxed" in gold or "\\fbox" in gold:
        boxed = extract_answer(gold, ())
        if boxed:
            return boxed
    return gold


def _clean_text(s: str) -> str:
    """Replace lone surrogates (bytes decoded with surrogateescape) so every later step sees valid text."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")
