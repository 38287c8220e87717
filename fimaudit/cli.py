"""The command line: a thin Click group; each command calls one library function.

Exit codes: 0 audit passed (or no threshold), 1 the audit failed its threshold, 2 usage or input
error. Errors are one line on stderr; ``-v`` shows the traceback and more logging.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

import fimaudit
from fimaudit import ort_threads
from fimaudit.attacks.deepfool import DEFAULT_BUDGET as DEFAULT_ATTACK_BUDGET
from fimaudit.audit import GRADIENT_CHECK_SAMPLES, GRADIENT_SOURCES
from fimaudit.errors import FimauditError
from fimaudit.fisher.registry import estimator_names
from fimaudit.interrupts import Interrupted, install_handlers, restore_handlers
from fimaudit.results import AuditResult
from fimaudit.runtime import DEFAULT_TIMEOUT_S
from fimaudit.sanity import GRADIENT_CHECK_DIRECTIONS, GRADIENT_CHECK_STEPS
from fimaudit.statistics import STATISTICS

if TYPE_CHECKING:
    from fimaudit.attacks.stage import AttackConfig
    from fimaudit.certify.stage import CertifyConfig
    from fimaudit.graph.loader import LoadedModel

logger = logging.getLogger("fimaudit")

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


class ErrorReportingGroup(click.Group):
    """Every failure is one line on stderr and exit code 2 (1 means an audit failed); -v keeps the traceback.

    Library errors (FimauditError) carry their own message. Click's usage errors are shortened
    to one line as well. Anything else is a bug in fimaudit or a library it calls: it still gets one
    line and exit code 2 (a pipeline must never mistake it for a failed audit), with a hint to
    rerun with -v for the traceback.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Run the CLI; in standalone mode turn every failure into one line on stderr and an exit code."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **kwargs)
        previous = install_handlers()
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **kwargs)
        except Interrupted as exc:
            click.echo(f"fimaudit: {exc}; stopped, no output written", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("fimaudit: aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            context = getattr(exc, "ctx", None)  # usage errors carry their command's context
            command = f"{context.command_path} " if context else ""
            click.echo(f"fimaudit: error: {one_line(exc.format_message())} (see '{command}--help')", err=True)
            sys.exit(EXIT_ERROR)
        except Exception:  # only with -v: invoke() re-raised it so that the traceback shows
            click.echo(traceback.format_exc().rstrip(), err=True)
            sys.exit(EXIT_ERROR)
        finally:
            restore_handlers(previous)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a library error becomes one line on stderr and exit code 2 (re-raised with -v)."""
        try:
            return super().invoke(ctx)
        except FimauditError as exc:
            if _verbose(ctx):
                raise
            click.echo(f"fimaudit: error: {one_line(str(exc))}", err=True)
            ctx.exit(EXIT_ERROR)
        except MemoryError:
            if _verbose(ctx):
                raise
            click.echo("fimaudit: error: out of memory; use --samples or a smaller --max-memory", err=True)
            ctx.exit(EXIT_ERROR)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if _verbose(ctx):
                raise
            detail = one_line(str(exc))[:300] or "no message"
            click.echo(
                f"fimaudit: error: internal error ({type(exc).__name__}: {detail}); rerun with -v for the "
                "traceback and report it",
                err=True,
            )
            ctx.exit(EXIT_ERROR)


def one_line(text: str) -> str:
    """``text`` as one printable line.

    Messages quote names taken from untrusted models, and a newline or a terminal escape
    sequence in a tensor name must not break the one-line contract.
    """
    from fimaudit.text import terminal_line

    return terminal_line(text)


def _verbose(ctx: click.Context) -> bool:
    """-v was given (read when handling an error: the group callback stores it)."""
    return bool(ctx.obj and ctx.obj.get("verbose"))


class _StderrHandler(logging.Handler):
    """Log records to whatever stderr is now (a terminal, a pipe, or a test runner's capture)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(one_line(self.format(record)), err=True)
        except Exception:  # logging must never raise into the audit
            self.handleError(record)


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    package = logging.getLogger("fimaudit")
    package.setLevel(level)
    if not any(isinstance(handler, _StderrHandler) for handler in package.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("fimaudit: %(levelname)s: %(message)s"))
        package.addHandler(handler)


class SizeType(click.ParamType):
    """A memory size such as 512M, 2G or 1.5GiB (powers of 1024), as bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """Bytes from an int or a size such as ``2G``; anything else fails as a usage error naming the option."""
        from fimaudit.resources import parse_size

        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group(cls=ErrorReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(fimaudit.__version__, prog_name="fimaudit")
@click.option("-v", "--verbose", count=True, help="More logging; tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Audit exported ONNX classifiers by the spectral norm of their input Fisher information."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    _configure_logging(verbose)


def entry() -> None:
    """The ``fimaudit`` command, in a process of its own.

    Its ONNX Runtime sessions share one thread pool (ort_threads.py); ``main`` called in another
    program's process does not impose one there.
    """
    ort_threads.share_process_pool()
    main()


def model_argument(function: Callable[..., Any]) -> Callable[..., Any]:
    """The model path argument: shared so that every command checks the file the same way."""
    return click.argument("model", type=click.Path(exists=True, dir_okay=False, readable=True))(function)


def selection_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """--input / --output: shared by every command that reads a model."""
    function = click.option(
        "--output-kind", type=click.Choice(["logits", "probabilities", "sigmoid"]),
        help="What the output is, when fimaudit cannot tell from the graph: logits (one score per sample: a "
        "binary logit), probabilities (rows summing to one), sigmoid (one probability per sample). "
        "Default: read from the graph.",
    )(function)
    function = click.option(
        "--output", "output_name", metavar="NAME", help="Class-score output to audit (default: chosen automatically)."
    )(function)
    function = click.option(
        "--input", "input_name", metavar="NAME", help="Float input to differentiate (default: chosen automatically)."
    )(function)
    return function


def timeout_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """--timeout: the time limit of one model evaluation; shared by audit, compare and jacobian."""
    return click.option(
        "--timeout", type=click.FloatRange(min=0), default=DEFAULT_TIMEOUT_S, show_default=True, metavar="SECONDS",
        help="Stop with an error when one model evaluation (one ONNX Runtime run of a batch) takes longer; "
        "0: no limit. A run takes seconds even for ImageNet-size models, so the default only stops models "
        "that never finish (a Loop with a huge trip count).",
    )(function)


def estimation_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Data, estimator, gradients and resources: shared by ``audit`` and ``compare``."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--data",
            "data_path",
            type=click.Path(),
            help=".npy or .npz of samples (first axis indexes samples), a folder of images (class sub-folders as "
            "labels) or a CSV list of path,label (images need --preprocess). Default: synthetic N(0,1) inputs.",
        ),
        click.option("--samples", type=click.IntRange(min=1), help="Audit at most N samples (synthetic default: 16)."),
        click.option(
            "--method",
            type=click.Choice(estimator_names()),
            default="auto",
            show_default=True,
            help="Estimator of lambda_max: auto is exact (K x K) for few classes, lanczos for many; with finite "
            "differences, exact for small inputs and blackbox beyond 3200 input elements.",
        ),
        click.option(
            "--gradients",
            type=click.Choice(list(GRADIENT_SOURCES)),
            default="auto",
            show_default=True,
            help="Gradient source: graph (gradient graphs from the ONNX graph), fd (finite differences), auto (graph, "
            "else fd).",
        ),
        click.option(
            "--budget",
            type=click.IntRange(min=1),
            help="Per-sample budget: model evaluations for blackbox (default 400); operator products for lanczos, "
            "power, hutchinson and auto (defaults 100, 200, 60, 100).",
        ),
        click.option(
            "--seed",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Seed (a non-negative integer) for synthetic data and randomised estimators.",
        ),
        click.option(
            "--max-memory",
            type=SizeType(),
            help="Memory the audit may use (e.g. 2G); batches shrink to fit, and a run that cannot fit is refused up "
            "front. Default: 80% of the memory available.",
        ),
        click.option(
            "--flush-subnormals",
            is_flag=True,
            help="Set subnormal weights (|w| < 1.2e-38, slow on CPUs) to zero for the audit.",
        ),
        click.option(
            "--bounds/--no-bounds",
            default=True,
            show_default=True,
            help="Compute certified analytic upper bounds from the weights (certified convolution norms take tens of "
            "seconds on ImageNet-size CNNs).",
        ),
        click.option(
            "--cache/--no-cache",
            default=True,
            show_default=True,
            help="Keep the bounds' layer gains of a model in the user cache directory (keyed by the model's "
            "SHA-256 and fimaudit's version), so the next audit of it skips their cost.",
        ),
        timeout_option,
        click.option(
            "--max-time",
            type=click.FloatRange(min=0, min_open=True),
            metavar="SECONDS",
            help="Time the whole audit may take. Finite-difference runs time one batched forward run and estimate "
            "their cost first (always logged); a run whose estimate exceeds this is refused before it starts, "
            "and any run stops between samples once past it. Default: no limit (only the warning).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def attack_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The attack stage's options (issue 11): shared by ``audit --attack`` and ``attack``."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        attack_measure_options,
        click.option("--save-adversarial", "adversarial_path", type=click.Path(dir_okay=False),
                     help="Write the verified adversarial examples here (.npy, the audited inputs' layout, NaN rows "
                     "where none was found)."),
        click.option("--fail-robust-below", type=click.FloatRange(0, 1), metavar="R",
                     help="Exit 1 when robust accuracy (the fraction of samples no verified example within eps "
                     "changed) is below R at any --attack-eps radius."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def attack_measure_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """What the attacks measure: norm, radii, input range, budget (``compare --attack`` takes only these)."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option("--norm", type=click.Choice(["2", "inf"]), default="2", show_default=True,
                     help="Norm of the attacks (epsilon_min, --attack-eps) and of the --certify balls."),
        click.option("--attack-eps", metavar="EPS,...",
                     help="PGD radii, comma-separated (e.g. 0.01,0.03,0.1): success rate and robust accuracy "
                     "per radius."),
        click.option("--input-range", metavar="LO,HI",
                     help="Valid input values; every adversarial example is clipped to them."),
        click.option("--attack-budget", type=click.IntRange(min=1), default=DEFAULT_ATTACK_BUDGET, show_default=True,
                     help="Model evaluations one sample's minimum-norm attack may spend (gradients included), "
                     "and as many again for its FMN refinement."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def attack_config(
    norm: str, attack_eps: str | None, input_range: str | None, attack_budget: int, fail_robust_below: float | None
) -> AttackConfig:
    """The attack options as an AttackConfig (bad values are usage errors, exit 2)."""
    from fimaudit.attacks import InputRange, norm_name
    from fimaudit.attacks.stage import AttackConfig

    radii = _float_list(attack_eps, "--attack-eps")
    limits = _float_list(input_range, "--input-range", 2)
    try:
        return AttackConfig(
            norm=norm_name(norm), radii=tuple(radii), input_range=InputRange(*limits) if limits else None,
            budget=attack_budget, robust_below=fail_robust_below,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def progress_reporter(
    label: str, quiet: bool = False, unit: str = "sample"
) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """Progress on stderr: a bar on a terminal, a line a minute otherwise, nothing with --quiet (progress.py)."""
    from fimaudit.progress import reporter

    return reporter(label, quiet, unit=unit)


def scale_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Image data, labels, pixel space, resuming and parallel runs (issue 13): ``audit`` only."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--preprocess", metavar="SPEC",
            help="How image files become model inputs: resize=256,center_crop=224,scale=1/255,"
            "mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=NCHW,channels=RGB (or a JSON file of those keys). "
            "Default: the model's metadata_props['fimaudit.preprocess'] when it states one. Recorded in the JSON.",
        ),
        click.option(
            "--labels", "labels_path", type=click.Path(exists=True, dir_okay=False, readable=True),
            help="True classes: a 1-D integer .npy, one per sample (image folders and CSV lists carry their own). "
            "Adds accuracy, lambda_max by true class, and correct vs misclassified samples.",
        ),
        click.option(
            "--space", type=click.Choice(["model", "pixel"]), default="model", show_default=True,
            help="Input space of the lambda_max the verdict reads: the model's (normalised) input, or raw pixels "
            "through the preprocessing's scale/mean/std (both are reported when a spec is given; pixel turns off "
            "the analytic bounds, which are in model space).",
        ),
        click.option(
            "--checkpoint", "checkpoint_dir", type=click.Path(file_okay=False),
            help="Keep each finished sample's result in this folder; rerunning the same command resumes there. "
            "A different model, data or setting is refused with the difference named.",
        ),
        click.option(
            "--workers", type=click.IntRange(min=1), default=1, show_default=True,
            help="Audit samples in N local processes (each loads the model once); same numbers as one process.",
        ),
        click.option(
            "--scheduler", metavar="ADDRESS",
            help="Audit samples on a Dask distributed cluster (e.g. tcp://10.0.0.5:8786); needs "
            "pip install 'fimaudit[distributed]'. Same numbers as one process.",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress output on stderr."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@main.command()
@model_argument
@selection_options
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, writable=True), help="Also write the description as JSON."
)
@click.option(
    "--wrt",
    type=click.Choice(["input", "embeddings"]),
    default="input",
    show_default=True,
    help="Show what audit --wrt would differentiate (embeddings: token-id models).",
)
@click.option("--max-memory", type=SizeType(), help="Memory the model's weights may take (e.g. 2G).")
def inspect(
    model: str,
    input_name: str | None,
    output_name: str | None,
    output_kind: str | None,
    json_path: str | None,
    wrt: str,
    max_memory: int | None,
) -> None:
    """Describe MODEL and show what an audit with the same options would differentiate.

    A model such an audit would refuse is described all the same, with the reason; the reason
    follows on stderr and the exit code is 2, so that `inspect` can gate whether an audit will run.
    """
    from fimaudit.inspection import inspect_model, inspection_text, refusal_error
    from fimaudit.report.writing import json_text, write_atomic
    from fimaudit.resources import MemoryBudget

    check_output_paths([model], [json_path])
    budget = MemoryBudget.from_option(max_memory)  # the weights are read: planned like every command's
    document = inspect_model(model, input_name, output_name, budget, output_kind=output_kind, wrt=wrt)
    click.echo(inspection_text(document))
    if json_path:
        write_atomic(json_path, json_text(document), inputs=[model, *_external_files(model, document)])
    refused = refusal_error(document)
    if refused is not None:
        raise refused


@main.command()
@model_argument
@selection_options
@estimation_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the JSON document here.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the HTML report here.")
@click.option(
    "--summary",
    "summary_path",
    type=click.Path(dir_okay=False),
    help="Write a one-paragraph Markdown summary here (for pull-request comments).",
)
@click.option(
    "--fail-above",
    "threshold",
    type=float,
    help="Exit 1 when lambda_max (see --statistic) exceeds this, or cannot be shown not to (inconclusive).",
)
@click.option(
    "--statistic",
    type=click.Choice(STATISTICS),
    default="max",
    show_default=True,
    help="Statistic compared with --fail-above.",
)
@click.option(
    "--check-samples",
    type=click.IntRange(min=0),
    default=GRADIENT_CHECK_SAMPLES,
    show_default=True,
    help="Samples (the first ones) on which the gradient graphs are checked against finite differences and the "
    f"adjoint identity; 0: no check (reported as not run). Each costs up to {GRADIENT_CHECK_DIRECTIONS} x "
    f"{len(GRADIENT_CHECK_STEPS)} x (2 forward runs + 1 J v): on ImageNet-size CNNs more than auditing a few samples.",
)
@click.option(
    "--wrt",
    type=click.Choice(["input", "embeddings"]),
    default="input",
    show_default=True,
    help="Differentiate with respect to the float input, or (token-id models) the embedding sum / one-hot tensor the "
    "ids produce; --data is then an .npz of input_ids, attention_mask, token_type_ids.",
)
@click.option(
    "--vocab",
    "vocab_path",
    type=click.Path(exists=True, dir_okay=False, readable=True),
    help="vocab.txt (one token per line) to show the tokens beside their sensitivity (--wrt embeddings).",
)
@click.option(
    "--attack", "run_attacks", is_flag=True,
    help="After lambda_max, attack every sample (verified minimum-norm epsilon, PGD at --attack-eps, the quadratic "
    "regime) and correlate lambda_max with 1/epsilon_min; see the attack options.",
)
@click.option(
    "--certify", "certify_eps", metavar="EPS,...",
    help="Certify lambda_max(F(x')) <= B(x, eps) for every x' within eps (--norm, met with --input-range) of each "
    "sample, for each radius; with --fail-above T also the certified radius per sample (docs/CERTIFICATES.md).",
)
@attack_options
@scale_options
def audit(
    model: str,
    input_name: str | None,
    output_name: str | None,
    output_kind: str | None,
    data_path: str | None,
    samples: int | None,
    method: str,
    gradients: str,
    budget: int | None,
    seed: int,
    json_path: str | None,
    report_path: str | None,
    summary_path: str | None,
    threshold: float | None,
    statistic: str,
    max_memory: int | None,
    flush_subnormals: bool,
    bounds: bool,
    cache: bool,
    timeout: float,
    max_time: float | None,
    check_samples: int,
    wrt: str,
    vocab_path: str | None,
    run_attacks: bool,
    certify_eps: str | None,
    norm: str,
    attack_eps: str | None,
    input_range: str | None,
    attack_budget: int,
    adversarial_path: str | None,
    fail_robust_below: float | None,
    preprocess: str | None,
    labels_path: str | None,
    space: str,
    checkpoint_dir: str | None,
    workers: int,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Compute lambda_max of the input Fisher information of MODEL on each sample."""
    from fimaudit.audit import AuditConfig, run_audit
    from fimaudit.report.outputs import model_files, write_audit_outputs

    outputs = [json_path, report_path, summary_path, adversarial_path]
    attacks = None
    if run_attacks:
        attacks = attack_config(norm, attack_eps, input_range, attack_budget, fail_robust_below)
    elif attack_eps or (input_range and not certify_eps) or adversarial_path or fail_robust_below is not None:
        raise click.BadParameter(
            "--attack-eps, --input-range, --save-adversarial and --fail-robust-below need --attack"
            " (--input-range also serves --certify)"
        )
    certify = certify_config(certify_eps, norm, input_range)
    if workers > 1 and scheduler:
        raise click.UsageError("--workers and --scheduler choose where samples run: give one of them")
    check_output_paths([model, data_path, vocab_path], outputs)
    config = AuditConfig(
        model_path=model,
        data_path=data_path,
        samples=samples,
        method=method,
        gradients=gradients,
        seed=seed,
        budget=budget,
        input_name=input_name,
        output_name=output_name,
        output_kind=output_kind,
        threshold=threshold,
        statistic=statistic,
        max_memory=max_memory,
        flush_subnormals=flush_subnormals,
        bounds=bounds,
        cache=cache,
        timeout=timeout or None,
        max_time=max_time,
        check_samples=check_samples,
        wrt=wrt,
        vocab_path=vocab_path,
        attack=attacks,
        certify=certify,
        preprocess=preprocess,
        labels_path=labels_path,
        space=space,
        checkpoint_dir=checkpoint_dir,
        workers=workers,
        scheduler=scheduler,
    )
    update, finish = progress_reporter("auditing samples", quiet)
    certifying, certified = progress_reporter("certifying samples", quiet or certify is None)
    checking, checked = progress_reporter("checking gradients", quiet, unit="round")
    try:
        # Checked again once the loader knows the external-data files, before anything runs.
        extra: dict[str, Any] = {"certify_progress": certifying} if certify is not None else {}
        if any(outputs):
            extra["on_loaded"] = lambda loaded: check_output_paths([model, data_path, *model_files(loaded)], outputs)
        result = run_audit(config, progress=update, check_progress=checking, **extra)
    finally:
        finish()
        checked()
        certified()
    # Everything is rendered before anything is written: a failure leaves no file at all.
    write_audit_outputs(result, json_path, report_path, summary_path, adversarial_path)
    click.echo(one_line(summary_line(result)))  # the model's path may be a hostile file name
    # The verdict is three-way: an inconclusive audit does not pass the gate.
    sys.exit(EXIT_PASSED if result.verdict.passed else EXIT_FAILED)


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, readable=True))
@estimation_options
@click.option(
    "--output-kind",
    type=click.Choice(["logits", "probabilities", "sigmoid"]),
    help="What every model's output is, when fimaudit cannot tell (see audit --help).",
)
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False), help="Write the side-by-side HTML report here."
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the comparison JSON here.")
@click.option(
    "--statistic",
    type=click.Choice(STATISTICS),
    default="median",
    show_default=True,
    help="Statistic the models are ranked by.",
)
@click.option(
    "--rtol",
    type=click.FloatRange(min=0),
    default=1e-2,
    show_default=True,
    help="Tolerance of 'the same numbers': lambda_max relative (on a scale no smaller than 1e-6 x the pair's "
    "largest), top probability absolute. float16 and quantised models get looser stated tolerances.",
)
@click.option(
    "--reference",
    metavar="MODEL",
    help="Check every other model against MODEL (one of MODELS, by path or file name); exit 1 unless all agree.",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="A,B[,...]",
    help="Check every pair within these models (paths or file names, comma-separated); repeatable; exit 1 unless all "
    "agree.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=1.0,
    show_default=True,
    help="Fraction of samples that must agree for a pair to agree.",
)
@click.option(
    "--no-check", is_flag=True, help="Rank only: check no pair (for different networks trained on the same task)."
)
@click.option(
    "--attack", "run_attacks", is_flag=True,
    help="Attack every model's samples too (see audit --attack); the models are also ranked by attack success at "
    "each --attack-eps radius, beside their lambda_max ranking.",
)
@click.option(
    "--certify", "certify_eps", metavar="EPS,...",
    help="Certify every model's samples too (see audit --certify; --norm and --input-range are shared).",
)
@attack_measure_options
def compare(
    models: tuple[str, ...],
    output_kind: str | None,
    data_path: str | None,
    samples: int | None,
    method: str,
    gradients: str,
    budget: int | None,
    seed: int,
    report_path: str | None,
    json_path: str | None,
    statistic: str,
    rtol: float,
    reference: str | None,
    groups: tuple[str, ...],
    min_agreement: float,
    no_check: bool,
    max_memory: int | None,
    flush_subnormals: bool,
    bounds: bool,
    cache: bool,
    timeout: float,
    max_time: float | None,
    run_attacks: bool,
    certify_eps: str | None,
    norm: str,
    attack_eps: str | None,
    input_range: str | None,
    attack_budget: int,
) -> None:
    """Audit several MODELS on the same data and compare them side by side.

    Models that take the same input (NCHW and NHWC count as the same: fimaudit permutes the data)
    and have the same number of classes are checked sample by sample: predicted class, top
    probability and lambda_max. Exit 0 when every checked pair agrees (or nothing was asked and
    nothing could be checked), 1 when a pair disagrees, a model could not be audited, or a check
    asked for with --reference/--group could not be made; 2 on usage or input errors.
    """
    from fimaudit.audit import AuditConfig
    from fimaudit.compare import check_consistency, resolve_pairing
    from fimaudit.compare_audit import run_comparison
    from fimaudit.report.outputs import write_comparison_outputs

    if no_check and (reference or groups):
        raise click.UsageError("--no-check cannot be combined with --reference or --group")
    resolve_pairing(list(models), reference, groups)  # a name that is not a model: exit 2 before any audit
    check_output_paths([*models, data_path], [json_path, report_path])
    attacks = attack_config(norm, attack_eps, input_range, attack_budget, None) if run_attacks else None
    config = AuditConfig(model_path="", data_path=data_path, samples=samples, method=method,
                         gradients=gradients, seed=seed, budget=budget, max_memory=max_memory,
                         flush_subnormals=flush_subnormals, bounds=bounds, cache=cache, timeout=timeout or None,
                         max_time=max_time, output_kind=output_kind, attack=attacks,
                         certify=certify_config(certify_eps, norm, input_range))
    update, finish = progress_reporter("auditing models")
    try:
        comparison = run_comparison(models, config, progress=update)
    finally:
        finish()
    consistency = check_consistency(comparison.outcomes, rtol, reference, groups, min_agreement, check=not no_check)
    document = write_comparison_outputs(
        comparison, json_path, report_path, rtol=rtol, statistic=statistic, consistency=consistency
    )
    # Model labels are file names (a glob over an untrusted archive): each line is escaped.
    for rank in document["ranking"]["by_measured"]:
        click.echo(one_line(f"{rank['rank']}. {rank['model']}: {statistic} lambda_max {rank['value']:.4g}"))
    for entry in document["ranking"].get("by_attack") or []:
        order = ", ".join(f"{r['model']} {r['success_rate']:.0%}" for r in entry["models"])
        tau = "n/a" if entry["kendall_tau"] is None else f"{entry['kendall_tau']:.3f}"
        click.echo(one_line(f"attack success at l{entry['norm']} eps {entry['eps']:g}: {order} "
                            f"(Kendall tau with the lambda_max ranking: {tau})"))
    for outcome in comparison.outcomes:
        if outcome.note:
            click.echo(one_line(f"{outcome.path}: {outcome.note}"))
    for pair in consistency.pairs:
        click.echo(one_line(f"{pair.a} vs {pair.b}: {pair.status.replace('_', ' ')}: {pair.reason}"))
    click.echo(one_line(f"{consistency.status.replace('_', ' ').upper()}: {consistency.reason}"))
    sys.exit(EXIT_PASSED if consistency.passed else EXIT_FAILED)



@main.command()
@model_argument
@selection_options
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help=".npy or .npz of samples (first axis indexes samples).",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Write the Jacobians here (.npy, float32 [N, K, *input dims]).",
)
@click.option(
    "--gradients",
    type=click.Choice(list(GRADIENT_SOURCES)),
    default="auto",
    show_default=True,
    help="Gradient source (see audit --help).",
)
@click.option("--samples", type=click.IntRange(min=1), help="Use at most the first N samples.")
@click.option("--max-memory", type=SizeType(), help="Memory the computation may use (e.g. 2G).")
@timeout_option
def jacobian(
    model: str,
    input_name: str | None,
    output_name: str | None,
    output_kind: str | None,
    data_path: str,
    out_path: str,
    gradients: str,
    samples: int | None,
    max_memory: int | None,
    timeout: float,
) -> None:
    """Write the input Jacobians d logits / d input of MODEL on the samples of --data."""
    from fimaudit.jacobian_export import export_jacobian

    check_output_paths([model, data_path], [out_path])
    result = export_jacobian(
        model,
        data_path,
        out_path,
        gradients,
        samples,
        input_name,
        output_name,
        max_memory,
        timeout=timeout or None,
        output_kind=output_kind,
    )
    shape = "x".join(str(d) for d in result.shape)
    click.echo(one_line(f"{result.path}: Jacobians [{shape}] float32 in {result.seconds:.2f} s ({result.note})"))


def certify_config(certify_eps: str | None, norm: str, input_range: str | None) -> CertifyConfig | None:
    """``--certify`` with the shared ``--norm`` and ``--input-range`` (None without --certify)."""
    if not certify_eps:
        return None
    from fimaudit.certify.stage import CertifyConfig

    limits = _float_list(input_range, "--input-range", 2)
    try:
        return CertifyConfig(tuple(_float_list(certify_eps, "--certify")), norm,
                             (limits[0], limits[1]) if limits else None)
    except FimauditError as exc:
        raise click.BadParameter(str(exc)) from None


def _float_list(text: str | None, what: str, count: int | None = None) -> list[float]:
    """A comma-separated list of floats from an option (``count``: exactly that many)."""
    if not text:
        return []
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated numbers, got {text!r}") from None
    if count is not None and len(values) != count:
        raise click.BadParameter(f"{what} needs {count} numbers, got {text!r}")
    return values


@main.command()
@model_argument
@click.option(
    "--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False),
    help=".npy or .npz of samples (first axis indexes samples).",
)
@attack_options
@click.option("--samples", type=click.IntRange(min=1), help="Attack at most the first N samples.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of PGD and bootstrap.")
@click.option(
    "--gradients", type=click.Choice(list(GRADIENT_SOURCES)), default="auto", show_default=True,
    help="Gradient source (see audit --help).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the JSON document here.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the HTML report here.")
@timeout_option
def attack(
    model: str,
    data_path: str,
    norm: str,
    attack_eps: str | None,
    input_range: str | None,
    attack_budget: int,
    adversarial_path: str | None,
    fail_robust_below: float | None,
    samples: int | None,
    seed: int,
    gradients: str,
    json_path: str | None,
    report_path: str | None,
    timeout: float,
) -> None:
    """Attack MODEL on --data: verified minimum-norm epsilon, PGD success, correlation with lambda_max.

    The same run as `fimaudit audit MODEL --data ... --attack --no-bounds` (lambda_max by the
    default estimator, then the attack stage), with the attacks on stdout; the JSON document is
    the audit's, with samples[].attack and attack_summary.
    """
    from fimaudit.audit import AuditConfig, run_audit
    from fimaudit.report.outputs import model_files, write_audit_outputs

    attacks = attack_config(norm, attack_eps, input_range, attack_budget, fail_robust_below)
    outputs = [json_path, report_path, adversarial_path]
    check_output_paths([model, data_path], outputs)
    config = AuditConfig(
        model_path=model, data_path=data_path, samples=samples, gradients=gradients, seed=seed, bounds=False,
        timeout=timeout or None, attack=attacks,
    )
    def recheck(loaded: LoadedModel) -> None:  # once the loader knows the external-data files
        check_output_paths([model, data_path, *model_files(loaded)], outputs)

    result = run_audit(config, on_loaded=recheck)
    write_audit_outputs(result, json_path, report_path, None, adversarial_path)
    for line in attack_lines(result):
        click.echo(one_line(line))
    sys.exit(EXIT_PASSED if result.verdict.passed else EXIT_FAILED)


def attack_lines(result: AuditResult) -> list[str]:
    """The attack stage on stdout: each sample, the success per radius, the correlation, the verdict."""
    summary = result.attack
    if summary is None:
        return []
    norm = f"l{summary.norm}"
    lines = []
    for sample in result.samples:
        found = sample.attack
        if found is None:
            continue
        eps = f"{found.epsilon_min:.4g}" if found.epsilon_min is not None else f"none ({found.reason})"
        lines.append(f"sample {sample.index}: lambda_max {sample.value:.4g}, epsilon_min ({norm}) {eps}")
    for row in summary.success_rate_by_eps:
        lines.append(f"{norm} eps {row.eps:g}: attack success {row.success_rate:.1%} (PGD alone "
                     f"{row.pgd_success_rate:.1%}), robust accuracy {row.robust_accuracy:.1%}")
    corr = summary.correlation
    if corr is None or corr.spearman is None or corr.kendall is None:
        count = 0 if corr is None else corr.count
        lines.append(f"correlation: not computed ({count} samples with a verified example; {summary.reason or ''})")
    else:
        lines.append(
            f"correlation of lambda_max with 1/epsilon_min over {corr.count} samples: "
            f"Spearman {corr.spearman:.3f} {corr.spearman_interval}, Kendall {corr.kendall:.3f} {corr.kendall_interval}"
        )
    status = "no threshold" if result.verdict.status == "no_threshold" else result.verdict.status.upper()
    lines.append(f"{status}: {result.verdict.reason}")
    return lines


def check_output_paths(inputs: Sequence[str | os.PathLike[str] | None], outputs: Sequence[str | None]) -> None:
    """Before any computation: every output writable, each a file of its own, none an input.

    ``fimaudit audit model.onnx --json model.onnx`` would otherwise replace the model with its
    own report once the audit is done. The writers check again when they commit, with the
    model's external-data files, which only the loader knows (report/writing.py).
    """
    from fimaudit.report.writing import check_outputs

    check_outputs(inputs, outputs)


def _external_files(model: str, document: dict[str, Any]) -> list[str]:
    """The external-data files of an inspected model (entries: locations, or records with one)."""
    entries = document["model"].get("external_data_files") or []
    names = [entry if isinstance(entry, str) else entry.get("location") or entry.get("path") for entry in entries]
    return [os.path.join(os.path.dirname(model), name) for name in names if name]


def summary_line(result: AuditResult) -> str:
    """The audit in one line on stdout: the numbers, then the verdict and its reason."""
    summary, verdict = result.summary, result.verdict
    status = "no threshold" if verdict.status == "no_threshold" else verdict.status.upper()
    return (
        f"{result.prepared.description.path}: {summary.count} samples, lambda_max "
        f"median {summary.median:.4g}, p95 {summary.p95:.4g}, max {summary.max:.4g} "
        f"[{result.config.method}, gradients {result.gradients}"
        f"{', pixel space' if result.config.space == 'pixel' else ''}] — {status}: {verdict.reason}"
    )
