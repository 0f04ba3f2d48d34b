r"""Launches a jaxlr experiment; the only place in jaxlr that defines command-line flags.

    python -m experiments.main --experiment=NAME --workdir=DIR [--FLAG=VALUE ...]
    python -m experiments.main --list
    python -m experiments.main --experiment=NAME --help

The flags are the fields of the chosen experiment's typed config (`experiments.config`):
`--help` with an experiment lists them with their help text and defaults. Sequence fields
(`lr`, `l2`, `digits`, `hidden`, ...) take comma lists; counts that may mean "everything"
take `all`. Every value is checked before any data is loaded, by the config dataclass that
owns the field; a bad one is one line on stderr, `error: --FLAG=VALUE: what is allowed`,
exit code 2. So is a flag given twice, a flag the experiment does not take (with the flag
meant, or the experiments that take it) and one its other settings leave unread.
`--list` and `--help` import only the experiments' configs (no JAX, no matplotlib).

Exit codes: 0 done; 1 the run failed in an expected way (data files, workdir busy or not
writable, divergence, a checkpoint of another kind), one line on stderr; 2 bad usage;
130 interrupted (Ctrl-C; SIGTERM 143, SIGHUP 129: the same, one line). Anything else is
a bug and keeps its traceback.

JAX's persistent compilation cache is on (folder `$XDG_CACHE_HOME/jaxlr/xla`, or
`~/.cache/jaxlr/xla`): a second run of the same experiment skips compilation. Turn it off
with `--nocompilation_cache` or `JAXLR_COMPILATION_CACHE=0`.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

from absl import flags

from experiments import registry  # noqa: F401  (registers the experiments: configs only)
from experiments.config import (
    EXPERIMENTS,
    FlagField,
    UsageError,
    flag_fields,
    get_experiment,
    launch_command,
    make_config,
    not_a_flag,
    parse_value,
    read_settings,
)
from jaxlr.engine.config import ConfigError, format_value

log = logging.getLogger("jaxlr.experiments")


def _listing() -> str:
    lines = ["experiments (each line below it is its launch command, with its defaults):"]
    for name, exp in sorted(EXPERIMENTS.items()):
        first = exp.doc.splitlines()[0] if exp.doc else ""
        lines.append(f"  {name:26s} {first}")
        lines.append(f"      {launch_command(exp)}")
    return "\n".join(lines)


def _help(name: str | None) -> str:
    if name is None:
        return __doc__.strip() + "\n\n" + _listing()
    exp = get_experiment(name)
    out = [f"{exp.name}: {exp.doc}", "", f"usage: {launch_command(exp)} [--FLAG=VALUE ...]", ""]
    by_section: dict[str, list[FlagField]] = {}
    for f in flag_fields(exp.config_cls).values():
        by_section.setdefault(f.section or exp.name, []).append(f)
    for section, items in by_section.items():
        out.append(f"{section} flags:")
        for f in items:
            default = format_value(f.default)
            out.append(f"  --{f.name}  (default: {default})")
            if f.help:
                out += textwrap.wrap(
                    f.help, 96, initial_indent="      ", subsequent_indent="      "
                )
        out.append("")
    out.append("launcher flags:")
    out.append("  --workdir  folder of config.json, metrics.json, figures and report.md (required)")
    out.append("  --[no]compilation_cache  JAX's persistent compilation cache (default: on)")
    out.append("  --[no]tensorboard  TensorBoard event files in the workdir (default: on)")
    smoke = " ".join(f"--{k}={format_value(v)}" for k, v in exp.smoke.items())
    out.append(f"  --smoke  a seconds-long run: {smoke or 'the defaults'}")
    return "\n".join(out)


def _scan(argv: list[str], name: str) -> str | None:
    """The value of --name in argv without parsing the rest (None if absent)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def _define_flags(exp) -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("experiment", None, "Experiment to run (see --list).", flag_values=fv)
    flags.DEFINE_string("workdir", None, "Output folder.", flag_values=fv)
    flags.DEFINE_bool("list", False, "List the experiments and exit.", flag_values=fv)
    flags.DEFINE_bool(
        "compilation_cache", True, "JAX's persistent compilation cache.", flag_values=fv
    )
    flags.DEFINE_bool(
        "tensorboard", True, "TensorBoard event files in the workdir.", flag_values=fv
    )
    flags.DEFINE_bool(
        "smoke",
        False,
        "Shrink the run to seconds (the experiment's smoke overrides).",
        flag_values=fv,
    )
    for f in flag_fields(exp.config_cls).values() if exp else ():
        if f.kind == "bool":
            flags.DEFINE_bool(f.name, None, f.help, flag_values=fv)
        else:
            flags.DEFINE_string(f.name, None, f.help, flag_values=fv)
    return fv


def _check_names(args: list[str], fv: flags.FlagValues, exp) -> None:
    """Every `--name` in args is a flag of `exp` (or the launcher's), each given once."""
    seen: dict[str, str] = {}
    every = {f for e in EXPERIMENTS.values() for f in flag_fields(e.config_cls)}
    for arg in args:
        if arg == "--":
            break
        if not arg.startswith("--"):
            continue
        key = arg[2:].split("=", 1)[0]
        name = key
        if name not in fv and name.startswith("no") and name[2:] in fv and fv[name[2:]].boolean:
            name = name[2:]
        if name not in fv:
            if exp is None:
                raise UsageError(
                    f"--{key}: unknown flag; choose an experiment first (--experiment=NAME)"
                )
            fixed = exp.config_cls.FIXED
            if key not in every and key not in fixed and key.startswith("no"):
                key = key[2:] if key[2:] in every or key[2:] in fixed else key
            raise not_a_flag(key, exp)
        if name in seen:
            raise UsageError(f"--{name}: given twice ({seen[name]}, {arg}); give each flag once")
        seen[name] = arg


def _flag_error(err: flags.Error, exp) -> str:
    name = getattr(err, "flagname", None)
    if isinstance(err, flags.UnrecognizedFlagError) and name and exp is not None:
        return str(not_a_flag(name, exp))  # a single-dash flag: `--` ones are checked before
    return str(err).splitlines()[0]


def _overrides(fv: flags.FlagValues, exp) -> dict:
    out = {}
    for f in flag_fields(exp.config_cls).values():
        value = fv[f.name].value
        if value is None:
            continue
        out[f.name] = parse_value(f, value)
    return out


def _setup_jax(cfg, compilation_cache: bool) -> None:
    import jax

    # The message that no TPU is present is INFO from JAX's backend setup: not for users.
    for name in ("jax._src.xla_bridge", "jax._src.compiler", "jax._src.cache_key"):
        logging.getLogger(name).setLevel(logging.WARNING)
    data = getattr(cfg, "data", None)
    if data is not None and data.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    if compilation_cache and os.environ.get("JAXLR_COMPILATION_CACHE", "1") not in ("0", "false"):
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        folder = base / "jaxlr" / "xla"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return  # no cache folder: compile every time, as without the cache
        jax.config.update("jax_compilation_cache_dir", str(folder))
        # Cache every program: the linear models compile in well under JAX's 1 s default.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class _LastProgress(logging.Filter):
    """Remembers the last progress line (for the message of an interrupt)."""

    text = ""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "epoch " in msg or "chunk " in msg:
            _LastProgress.text = msg.split("  ")[0].strip()
        return True


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_LastProgress())
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("jaxlr")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


class Parsed(NamedTuple):
    """A parsed command line: the experiment, its workdir, overrides and validated config."""

    experiment: Any
    workdir: str
    overrides: dict
    config: Any
    compilation_cache: bool
    tensorboard: bool = True


def parse(argv: list[str]) -> Parsed | str:
    """Parses a command line; returns text to print and exit 0 (--help, --list) or `Parsed`.

    Raises:
      ConfigError, UsageError: any problem of the command line (one line).
    """
    args = argv[1:]
    name = _scan(args, "experiment")
    if any(a in ("--help", "-h", "--helpfull", "-?") for a in args):
        return _help(name)
    exp = None
    if name is not None:
        exp = get_experiment(name)
    fv = _define_flags(exp)
    _check_names(args, fv, exp)
    try:
        rest = fv(argv)
    except flags.Error as err:
        raise UsageError(_flag_error(err, exp)) from None
    if len(rest) > 1:
        raise UsageError(f"unexpected argument {rest[1]!r} (flags are --name=value)")
    if fv.list:
        return _listing()
    if exp is None:
        raise UsageError("--experiment is required (see --list)")
    if not fv.workdir:
        raise UsageError("--workdir is required (the folder the outputs go to)")
    overrides = _overrides(fv, exp)
    _SMOKE_SET.clear()
    if fv.smoke:
        # What --smoke chose and the command line did not: errors say where it came from.
        # A smoke setting the command's other settings leave unread is left out (the smoke
        # grid's --lr and --l2 under --search=random).
        smoke = {k: v for k, v in exp.smoke.items() if k not in overrides}
        smoke = read_settings(exp.name, smoke, overrides)
        _SMOKE_SET.update(smoke)
        overrides = {**smoke, **overrides}
    cfg = make_config(exp.name, overrides)
    return Parsed(exp, fv.workdir, overrides, cfg, fv.compilation_cache, fv.tensorboard)


_RUNNING: dict = {}
# The settings of the current command that come from --smoke alone (flag name -> value).
_SMOKE_SET: dict = {}


def _smoke_note(line: str) -> str:
    """`line` with every setting that --smoke made (and the user did not type) marked as such:
    "--max_examples=512 (set by --smoke)", also "max_examples 512" in library messages."""
    for name, value in _SMOKE_SET.items():
        text = format_value(value)
        for form in (f"--{name}={text}", f"{name} {text}"):
            pattern = r"(?<![\w-])" + re.escape(form) + r"(?![\w.,])(?! \(set by --smoke\))"
            line = re.sub(pattern, lambda m: m.group(0) + " (set by --smoke)", line)
    return line


def main(argv: list[str]) -> int:
    """Parses argv, runs the experiment, prints its summary; returns the exit code."""
    parsed = parse(argv)
    if isinstance(parsed, str):
        print(parsed)
        return 0
    from experiments.common import run_experiment
    from jaxlr.report.tables import summary_table

    exp = parsed.experiment
    _RUNNING.update(parsed=parsed)
    _setup_logging()
    _setup_jax(parsed.config, parsed.compilation_cache)
    if hasattr(parsed.config, "coordinator_address"):
        from jaxlr.engine import distributed

        cfg = parsed.config
        distributed.initialize(cfg.coordinator_address or None, cfg.num_processes, cfg.process_id)
    # ConfigError may still come from checks that need the loaded data (e.g. --max_examples
    # beyond the images there are): a usage error like the others.
    metrics = run_experiment(
        exp.name, parsed.workdir, parsed.overrides, tensorboard=parsed.tensorboard
    )
    import jax

    if jax.process_index() == 0:  # the process that wrote the workdir
        print(f"{exp.name}: {parsed.workdir}")
        print(summary_table(metrics, exp.headline or None))
    return 0


def _interrupt_message(signame: str = "") -> str:
    how = f"interrupted by {signame}" if signame else "interrupted"
    parsed = _RUNNING.get("parsed")
    if parsed is None:
        return f"{how} before the run started; nothing was written"
    where = f" at {_LastProgress.text}" if _LastProgress.text else " before the first epoch ended"
    exp = parsed.experiment
    # Only a --checkpoint the experiment resumes from is offered (hw3_misclassified's is
    # its input; hw3_logreg_grid has none).
    resumable = "checkpoint" in flag_fields(exp.config_cls) and not getattr(
        exp.config_cls, "CHECKPOINT_IS_INPUT", False
    )
    ckpt = getattr(parsed.config, "checkpoint", "") if resumable else ""
    if ckpt:
        resume = f"the checkpoint in {ckpt} is kept: the same command resumes"
    elif resumable:
        resume = "add --checkpoint=DIR to make a run resumable"
    else:
        resume = f"{exp.name} does not resume: the same command runs it again from the start"
    return f"{how}{where}; {parsed.workdir} keeps its earlier outputs unchanged; {resume}"


# What an OSError's errno means for the path it names, in words.
_OS_WORDS = {
    errno.EEXIST: "a file of that name is in the way",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOENT: "no such file or folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ELOOP: "too many levels of symbolic links",
    errno.EIO: "input/output error (a failing disk or network file system?)",
    errno.EMFILE: "too many open files",
}
# The innermost function of a traceback that says what was being done with the path.
_OS_ACTIONS = (
    (("mkdir", "makedirs"), "cannot create the folder"),
    (("symlink", "atomic_symlink", "link"), "cannot make the link"),
    (("replace", "rename"), "cannot rename"),
    (("unlink", "rmtree", "rmdir", "remove"), "cannot remove"),
    (("_mkstemp_inner", "mkstemp", "atomic_open", "write", "fsync", "ftruncate"), "cannot write"),
    (("load", "read_bytes", "read_text", "scandir", "listdir", "stat"), "cannot read"),
)


def _error_line(err: BaseException) -> str:
    """The one line of an expected error; an OSError names its path and what failed, in words
    ("cannot create the folder X: a file of that name is in the way (File exists)")."""
    if not isinstance(err, OSError) or err.errno is None:
        return " ".join(str(err).split())
    names = []
    tb = err.__traceback__
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    action = "cannot write" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "cannot use"
    for name in reversed(names):
        hit = next((a for keys, a in _OS_ACTIONS if name in keys), None)
        if hit:
            action = hit
            break
    words = _OS_WORDS.get(err.errno, (err.strerror or "").lower() or f"errno {err.errno}")
    raw = f" ({err.strerror})" if err.strerror and err.strerror.lower() != words else ""
    if err.filename is None:
        return f"{action} a file: {words}{raw}"
    target = str(err.filename) + (f" -> {err.filename2}" if err.filename2 else "")
    return f"{action} {target}: {words}{raw}"


def _expected_errors() -> tuple[type, ...]:
    from experiments.common import RunFailed
    from jaxlr.core.inputs import InputError
    from jaxlr.data import idx as jidx
    from jaxlr.engine.distributed import DistributedError
    from jaxlr.engine.resources import ResourceError
    from jaxlr.engine.results import TrainingDiverged
    from jaxlr.engine.shards import ShardError
    from jaxlr.host import checkpoint

    return (
        OSError,
        InputError,
        jidx.DataError,
        checkpoint.CheckpointError,
        DistributedError,
        ResourceError,
        ShardError,
        TrainingDiverged,
        RunFailed,
    )


_STOPPED_BY: list[int] = []


def _stop(signum, frame):  # SIGTERM / SIGHUP end a run like Ctrl-C does
    _STOPPED_BY.append(signum)
    raise KeyboardInterrupt


def _interrupt_of(err: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt `err` is, or that was being handled when `err` was raised.

    Code that cleans up after an interrupt may fail in its turn (a library's `finally` that
    finds a half-done write); the run was still stopped by the user, and says so.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return err
        seen.add(id(err))
        err = err.__context__
    return None


def run_main() -> None:
    argv = list(sys.argv)
    for s in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(s) is signal.SIG_DFL:  # an ignored SIGHUP (nohup) stays ignored
            signal.signal(s, _stop)
    try:
        code = main(argv)
    except ConfigError as err:  # the config names the field; on the command line it is a flag
        sys.stderr.write(f"error: {_smoke_note(f'--{err}')}\n")
        code = 2
    except UsageError as err:
        sys.stderr.write(f"error: {_smoke_note(str(err))}\n")
        code = 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except BaseException as err:
        interrupted = _interrupt_of(err) is not None
        if not interrupted and not isinstance(err, _expected_errors()):
            raise  # a bug: its traceback
        if interrupted:
            if not isinstance(err, KeyboardInterrupt):  # cleanup after the interrupt failed
                logging.getLogger("jaxlr").warning(
                    "while stopping: %s", _error_line(err) or type(err).__name__
                )
            signum = _STOPPED_BY[0] if _STOPPED_BY else signal.SIGINT
            name = signal.Signals(signum).name if _STOPPED_BY else ""
            sys.stderr.write(_interrupt_message(name) + "\n")
            code = 128 + signum
        else:
            sys.stderr.write(f"error: {_smoke_note(_error_line(err))}\n")
            code = 1
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    run_main()
