"""The verdict's whole policy: what was gathered in, one decision out.

Gathering (verdict/run.py, studies/survey.py) compares, measures and reruns; nothing there decides.
`decide` takes one shortcut setting's records and returns a Verdict; `overall` folds the settings'
verdicts, as the report's run entries hold them, into the run's. The report formats a Verdict;
compare.py's exit status and the survey's counts are read off one.
"""

from dataclasses import dataclass

from shortcut_gradients.plumbing.config import ORACLE

AGREE, DISAGREE, OVERFLOW, BOOK = "AGREE", "DISAGREE", "OVERFLOW", "DISAGREE WITH THE BOOK"
# Notes on an agreeing setting that could not tell the two GELU forms apart in its dtype:
RERAN = "reran"  # the float64 rerun could, and agreed
BLIND = "blind"  # nothing could (or the rerun was skipped): a mix-up of the forms would pass


@dataclass(frozen=True)
class Gathered:
    """One shortcut setting's records, before any decision."""

    dtype: str
    compared: int  # implementations compared pairwise (the finite differences are not one)
    comparison: dict  # check.compare's report in `dtype`
    resolution: dict  # bound.gelu_form_resolution's in `dtype`
    overflow: dict | None = None  # run.first_overflow's: a tensor that came out inf or NaN
    rerun: dict | None = None  # run.float64_rerun's, once gathered ("skipped": why nothing was compared)
    oracle: dict | None = None  # oracle.compare's
    book: dict | None = None  # check.against_book's
    diagnosis: dict | None = None  # shortcut_gradients.diagnosis's on the first mismatch, once gathered


@dataclass(frozen=True)
class Verdict:
    status: str  # AGREE, DISAGREE, OVERFLOW or BOOK
    first_mismatch: dict | None  # the first element over its allowance, in backprop order
    notes: tuple[str, ...] = ()  # RERAN or BLIND
    rerun: bool = False  # undecided: gather the float64 rerun and decide again
    diagnosis: dict | None = None  # what the first mismatch looks like (DISAGREE only): {"slip", "text", ...}


def decide(g: Gathered) -> Verdict:
    """The policy for one shortcut setting.

    Overflow outranks everything: nothing can be compared. Then the elementwise comparison in the
    run's dtype; where it agrees but that dtype cannot tell the two GELU forms apart, a mix-up
    would pass, so the same implementations are taken again in float64 under the same bound and
    that comparison decides (unless it was skipped: then the caution stands). The finite
    differences must agree too. The book's means are the run's business (`overall`)."""
    if g.rerun is None and rerun_called_for(g):
        return Verdict(AGREE, None, rerun=True)
    rerun = g.rerun if g.rerun is not None and "skipped" not in g.rerun else {}
    oracle = g.oracle or {}
    first = g.comparison["first_mismatch"] or rerun.get("first_mismatch") or oracle.get("first_mismatch")
    agree = g.comparison["agree"] and rerun.get("agree", True) and oracle.get("agree", True)
    status = OVERFLOW if g.overflow else AGREE if agree else DISAGREE
    # A diagnosis names the cause of the mismatch reported, nothing else: only a DISAGREE carries one.
    diagnosis = g.diagnosis if status == DISAGREE else None
    return Verdict(status, first, gelu_form_notes(g.resolution, g.rerun, g.compared), diagnosis=diagnosis)


def rerun_called_for(g: Gathered) -> bool:
    """float32 agreed, but its allowance is wider than the GELU forms' difference here."""
    blind = g.dtype == "float32" and not g.resolution["resolved"]
    return blind and g.compared > 1 and g.comparison["agree"] and g.overflow is None


def gelu_form_notes(resolution: dict, rerun: dict | None, compared: int) -> tuple[str, ...]:
    """(RERAN,) or (BLIND,) where the setting could not tell the GELU forms apart, else ()."""
    if resolution["resolved"] or compared < 2:
        return ()
    return (RERAN,) if rerun and "skipped" not in rerun else (BLIND,)


def overall(runs: list[dict]) -> tuple[Verdict, dict | None]:
    """The run's Verdict from its settings' entries (run.py's "runs": each holds its setting's
    decided "agree" and "first_mismatch", its "overflow" and "book"), and the entry that decides it.

    An overflow anywhere outranks a mismatch anywhere, which outranks the book's means."""
    for status, failed in (
        (OVERFLOW, lambda r: r["overflow"]),
        (DISAGREE, lambda r: r["first_mismatch"]),
        (BOOK, lambda r: r["book"] and not r["book"]["match"]),
    ):
        if entry := next((r for r in runs if failed(r)), None):
            return Verdict(status, entry["first_mismatch"], diagnosis=entry.get("diagnosis")), entry
    compared = sum(name != ORACLE for name in runs[0]["frameworks"])
    notes = tuple(
        note for r in runs for note in gelu_form_notes(r["gelu_form_resolution"], r["float64_rerun"], compared)
    )
    return Verdict(AGREE, None, notes), None
