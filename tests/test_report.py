"""Tests of `jaxlr.report.tables`: tables, report and history files, the launcher's summary."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.report import tables

# ---------------------------------------------------------------------------------------------
# markdown_table and runs_table.


def test_markdown_table_default_alignment_and_cells():
    got = tables.markdown_table(
        ["run", "acc", "steps", "note"],
        [["a", "0.9164", 1550, None], ["b", 0.5, "1,024", "x|y"]],
    )
    assert got == (
        "| run | acc | steps | note |\n"
        "| --- | ---: | ---: | --- |\n"
        "| a | 0.9164 | 1550 | - |\n"
        "| b | 0.5000 | 1,024 | x\\|y |"
    )


def test_markdown_table_align_bold_and_float_format():
    got = tables.markdown_table(
        ["lambda", "diverged"],
        [["0.01", "False"], ["0.5", "True"]],
        align="rl",
        bold=[1],
    )
    assert got == "| lambda | diverged |\n| ---: | --- |\n| 0.01 | False |\n| **0.5** | **True** |"
    got = tables.markdown_table(["x"], [[0.123456]], align=["c"], float_format="{:.2f}")
    assert got == "| x |\n| :---: |\n| 0.12 |"
    # Percentages and bold numbers read as numbers.
    assert "| ---: |" in tables.markdown_table(["c"], [["90.9%"], ["**3**"]])


def test_markdown_table_reproduces_the_experiments_tables():
    # The mean-image table of tdt4265 (`| --- |` then ` ---: |` per digit).
    corr = [0.53, 0.30]
    got = tables.markdown_table(
        ["digit", "0", "1"], [["correlation", *(f"{c:.3f}" for c in corr)]], align="lrr"
    )
    assert got == "| digit | 0 | 1 |\n| --- | ---: | ---: |\n| correlation | 0.530 | 0.300 |"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(headers=["a", "b"], rows=[["1"]]), "rows\\[0\\] has 1 cells"),
        (dict(headers=["a"], rows=[["1"]], align="x"), "align"),
        (dict(headers=["a"], rows=[["1"]], align="ll"), "align"),
        (dict(headers=["a"], rows=[["1"]], bold=[1]), "bold"),
        (dict(headers=[], rows=[]), "headers"),
    ],
)
def test_markdown_table_refuses_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tables.markdown_table(**kwargs)


RUN = dict(
    train_loss=0.12344,
    val_loss=0.2,
    train_accuracy=0.9,
    val_accuracy=0.91,
    steps=1550,
    wall_seconds=6.62,
    early_stopping={"stopped": True},
)


def test_runs_table_is_the_tdt4265_metrics_table():
    got = tables.runs_table({"lambda=0": RUN, "lambda=1": dict(RUN, steps=7, wall_seconds=31.25)})
    assert got == (
        "| run | train loss | val loss | train acc | val acc | steps | wall (s) |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        "| lambda=0 | 0.1234 | 0.2000 | 0.9000 | 0.9100 | 1550 | 6.6 |\n"
        "| lambda=1 | 0.1234 | 0.2000 | 0.9000 | 0.9100 | 7 | 31.2 |"
    )
    with pytest.raises(ValueError, match="val_loss"):
        tables.runs_table({"a": {k: v for k, v in RUN.items() if k != "val_loss"}})


# ---------------------------------------------------------------------------------------------
# Files and small helpers.


def test_write_history_and_report(tmp_path):
    history = {
        "step": np.array([0, 1, 2]),
        "epoch": np.array([0, 0, 1]),
        "train_loss": np.array([0.5, 0.25, 0.125]),
        "check_step": np.array([1]),
        "val_loss": np.array([0.75]),
        "val_accuracy": np.array([0.5]),
        "train_accuracy": np.array([0.25]),
    }
    tables.write_history(tmp_path / "h.jsonl", history)
    lines = (tmp_path / "h.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"step": 0, "epoch": 0, "train_loss": 0.5},
        {
            "step": 1,
            "epoch": 0,
            "train_loss": 0.25,
            "val_loss": 0.75,
            "val_accuracy": 0.5,
            "train_accuracy": 0.25,
        },
        {"step": 2, "epoch": 1, "train_loss": 0.125},
    ]
    empty = {k: v[:0] for k, v in history.items()}
    tables.write_history(tmp_path / "e.jsonl", empty)
    assert (tmp_path / "e.jsonl").read_text() == ""
    tables.write_report(tmp_path / "r.md", "Title", ["  first\n", "second  "])
    assert (tmp_path / "r.md").read_text() == "# Title\n\nfirst\n\nsecond\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_history_lines_are_json_dumps_of_the_records():
    # The fast writer's text is, character for character, json.dumps of each record of
    # `history_records` (float32 values, a non-finite loss, a check step not run).
    from jaxlr.engine.results import history_records

    rng = np.random.default_rng(0)
    loss = rng.random(50).astype(np.float32)
    loss[7], loss[8], loss[9] = np.nan, np.inf, -np.inf
    history = {
        "step": np.arange(50),
        "epoch": np.arange(50) // 10,
        "train_loss": loss,
        "check_step": np.array([0, 10, 20, 49, 60]),
        "val_loss": rng.random(5).astype(np.float32),
        "val_accuracy": np.array([0.5, np.nan, 1.0, 0.25, 0.0], np.float32),
        "train_accuracy": rng.random(5).astype(np.float32),
    }
    assert tables.history_lines(history) == [json.dumps(r) for r in history_records(history)]
    assert tables.history_lines({k: v[:0] for k, v in history.items()}) == []


def test_slug_image_link_jsonable():
    assert tables.slug("lambda=0.1") == "lambda_0.1"
    assert tables.slug("lr=0.1, l2=1e-3") == "lr_0.1_l2_1e-3"
    assert tables.slug("schedule=anneal") == "schedule_anneal"
    assert tables.slug("=== ") == "run"
    assert tables.slug("+x") == "+x"
    assert tables.image_link("loss.png", "the loss") == "![the loss](loss.png)"
    obj = {
        1: (np.float32(0.5), np.int64(3)),
        "a": np.arange(3),
        "b": [np.bool_(True), {"c": np.zeros((2, 1))}],
        "j": jnp.asarray([1.0, 2.0]),
        "s": "text",
    }
    got = tables.jsonable(obj)
    assert got == {
        "1": [0.5, 3],
        "a": [0, 1, 2],
        "b": [True, {"c": [[0.0], [0.0]]}],
        "j": [1.0, 2.0],
        "s": "text",
    }
    json.dumps(got)  # plain Python all the way down


# ---------------------------------------------------------------------------------------------
# summary_table on the shapes of metrics the experiments return.


def test_summary_table_of_runs_by_hand():
    metrics = {
        "lambda=0": {"val_accuracy": 0.9164, "steps": 7800, "wall_seconds": 31.25},
        "lambda=1": {"val_accuracy": 0.8008, "steps": 7800, "wall_seconds": 31.25},
        "wall_seconds_total": 33.5,
    }
    assert tables.summary_table(metrics) == (
        "run       val_accuracy  steps  wall_seconds\n"
        "--------  ------------  -----  ------------\n"
        "lambda=0        0.9164   7800         31.25\n"
        "lambda=1        0.8008   7800         31.25\n"
        "\n"
        "metric              value\n"
        "------------------  -----\n"
        "wall_seconds_total   33.5"
    )
    assert tables.summary_table(metrics, headline=["steps", "missing"]) == (
        "run       steps\n--------  -----\nlambda=0   7800\nlambda=1   7800"
    )


def test_summary_table_of_one_run_flattens_and_formats():
    # tdt4265_task2d: one run with the nested early-stopping numbers.
    metrics = {
        "train_loss": 0.0612345,
        "val_loss": 0.0657,
        "steps": 1039,
        "early_stopping": {"stopped": True, "step": 1038, "best_val_loss": 0.0657, "epoch": None},
        "per_class_accuracy": [0.9, 0.8],  # lists are left out
        "confusion_matrix": np.eye(2),
        "wall_seconds_total": 123.456,
        "gap": 2e-5,
        "loss_gap": -0.0008,
    }
    text = tables.summary_table(metrics)
    rows = dict(line.split(None, 1) for line in text.splitlines()[2:])
    assert rows == {
        "train_loss": "0.0612",
        "val_loss": "0.0657",
        "early_stopping.best_val_loss": "0.0657",
        "steps": "1039",
        "early_stopping.stopped": "yes",
        "early_stopping.step": "1038",
        "early_stopping.epoch": "-",
        "wall_seconds_total": "123.5",
        "gap": "2e-05",
        "loss_gap": "-0.0008",
    }
    # The usual headline keys first, then other losses and accuracies, then the rest.
    assert list(rows)[:4] == ["val_loss", "train_loss", "steps", "early_stopping.best_val_loss"]
    got = tables.summary_table(metrics, headline=["early_stopping.step", "val_loss", "nope"])
    assert got.splitlines()[2:] == ["early_stopping.step    1038", "val_loss             0.0657"]


def test_summary_table_of_the_experiments_shapes():
    run = dict(RUN, early_stopping={"stopped": False, "best_step": 978})
    # tdt4265_task4: runs plus a dict that is not a run (its keys are lambdas).
    task4 = {
        "lambda=0": dict(run, l2=0.0, weight_norm=4.89),
        "lambda=1": dict(run, l2=1.0, weight_norm=0.6),
        "weight_norm_by_lambda": {"0": 4.89, "1": 0.6},
        "wall_seconds_total": 31.3,
    }
    text = tables.summary_table(
        task4, headline=["val_accuracy", "weight_norm", "wall_seconds_total"]
    )
    lines = text.splitlines()
    assert lines[0].split() == ["run", "val_accuracy", "weight_norm"]
    assert lines[2].split() == ["lambda=0", "0.9100", "4.89"]
    assert lines[3].split() == ["lambda=1", "0.9100", "0.6000"]
    assert lines[-1].split() == ["wall_seconds_total", "31.3"]
    default = tables.summary_table(task4)
    assert "weight_norm_by_lambda.0" in default
    # Default columns: at most 6, the usual headline keys first.
    assert default.splitlines()[0].split() == [
        "run",
        "val_accuracy",
        "val_loss",
        "train_accuracy",
        "train_loss",
        "steps",
        "wall_seconds",
    ]
    # hw3_online_vs_minibatch: runs with lists inside, lists at the top.
    online = {
        f"batch_size={b}": {"batch_size": b, "test_accuracy": 0.9, "epoch_seconds": [1.0, 2.0]}
        for b in (1, 32, 128)
    }
    online.update(batch_sizes=[1, 32, 128], num_train=60000, learning_rate=0.01)
    lines = tables.summary_table(online).splitlines()
    assert lines[0].split() == ["run", "test_accuracy", "batch_size"]
    assert [x.split()[0] for x in lines[2:5]] == ["batch_size=1", "batch_size=32", "batch_size=128"]
    assert "epoch_seconds" not in "\n".join(lines) and "batch_sizes" not in "\n".join(lines)
    assert lines[-2].split() == ["num_train", "60000"] and lines[-1].split()[1] == "0.0100"
    # sweep: the two best points share keys and become rows; the list of points is left out.
    best = {"index": 3, "learning_rate": 0.1, "val_accuracy": 0.92}
    sweep = {
        "num_points": 36,
        "axes": ["learning_rate", "l2"],
        "best_by_val_loss": best,
        "best_by_val_accuracy": dict(best, index=5),
        "points": [best] * 36,
        "wall_seconds": 163.0,
    }
    lines = tables.summary_table(sweep).splitlines()
    assert lines[0].split() == ["run", "val_accuracy", "index", "learning_rate"]
    assert lines[3].split() == ["best_by_val_accuracy", "0.9200", "5", "0.1000"]
    assert [x.split()[0] for x in lines[-2:]] == ["wall_seconds", "num_points"]


def test_summary_table_limits_and_strings():
    many = {f"seed={i}": {"val_accuracy": i / 100} for i in range(20)}
    lines = tables.summary_table(many).splitlines()
    assert len(lines) == 2 + 12 + 1 and lines[-1] == "(+8 more runs)"
    flat = {f"k{i}": i for i in range(15)}
    flat["path"] = "/a/very/long/path/" * 10
    lines = tables.summary_table(flat).splitlines()
    assert lines[-1] == "(+4 more not shown)" and len(lines) == 2 + 12 + 1
    # A column holding any text is left-aligned; long strings are cut.
    text = tables.summary_table({"grad": "analytic", "steps": 10, "p": "x" * 100})
    assert text.splitlines()[2:] == [
        "steps   10",
        "grad    analytic",
        "p       " + "x" * 45 + "...",
    ]
    assert tables.summary_table({}) == "(no scalar metrics)"
    assert tables.summary_table({"a": [1, 2]}) == "(no scalar metrics)"


def test_summary_table_refuses_bad_input():
    with pytest.raises(ValueError, match="metrics must be a dict"):
        tables.summary_table([("a", 1)])
    with pytest.raises(ValueError, match="headline"):
        tables.summary_table({"a": 1}, headline="a")


def test_csv_text_writes_the_first_rows_keys_as_columns():
    rows = [{"index": 0, "lr": 0.1, "note": "a,b"}, {"index": 1, "lr": 1.0, "note": ""}]
    assert tables.csv_text(rows) == 'index,lr,note\n0,0.1,"a,b"\n1,1.0,\n'


# ---------------------------------------------------------------------------------------------
# The exact optimum beside trained points.


def _opt_row(converged, gap):
    return dict(optimum_objective=0.25, gap=gap, lr_limit=0.5, lr_over_limit=0.2,
                unstable=False, converged=converged, no_finite_optimum=not converged)  # fmt: skip


def test_merge_optimum_copies_the_fields_and_blanks_what_is_no_number():
    rows = [{"index": 0}, {"index": 1}, {"index": 2}]
    opt = [_opt_row(True, 0.01), _opt_row(False, None), _opt_row(True, 0.02)]
    got = tables.merge_optimum(rows, opt, extra={"no_finite": "no_finite_optimum"})
    assert got is rows
    assert rows[0] == {"index": 0, "optimum_objective": 0.25, "gap": 0.01, "lr_limit": 0.5,
                       "lr_over_limit": 0.2, "unstable": False, "no_finite": False}  # fmt: skip
    assert rows[1]["optimum_objective"] == 0.25 and rows[1]["gap"] is None
    assert rows[1]["no_finite"] is True
    # The sweep's table: no objective where the solve did not converge, no gap for a
    # diverged point.
    rows = [{}, {}, {}]
    tables.merge_optimum(rows, opt, diverged=[False, False, True], converged_only=True)
    assert [r["optimum_objective"] for r in rows] == [0.25, None, 0.25]
    assert [r["gap"] for r in rows] == [0.01, None, None]
    assert set(rows[0]) == set(tables.OPTIMUM_FIELDS)
    with pytest.raises(ValueError, match="2 result rows for 3 optimum rows"):
        tables.merge_optimum([{}, {}], opt)
    with pytest.raises(ValueError, match="1 diverged flags"):
        tables.merge_optimum([{}, {}, {}], opt, diverged=[True])
