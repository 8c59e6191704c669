"""Stage 05 pieces that need no model: the results table, the verdict, the metrics command line."""

import json

from synthempathy import evaluate
from synthempathy.chain.cli import main
from synthempathy.lib import metrics as M


def fake_results(diff_low, diff_high):
    figures = {k: [10.0, 9.0, 11.0] for k in evaluate.FIGURE_ORDER}
    diff = {k: {"point_diff": (diff_low + diff_high) / 2, "mean_diff": 0, "low": diff_low, "high": diff_high,
                "share_above_zero": 0.9, "detectable": 1.5} for k in evaluate.FIGURE_ORDER}
    arm = {"figures": figures, "train_examples": 46, "ed_examples": 40, "synthetic_examples": 6,
           "consumed": {"0": {"ed": 40, "synthetic": 6}, "1": {"ed": 39, "synthetic": 6}}}
    return {"profile": "tiny", "eval_examples": 37, "seed": 0, "train_seeds": [0, 1], "bootstrap_resamples": 200,
            "arms": {"base": {**arm, "consumed": {}, "ed_examples": None, "synthetic_examples": None},
                     "ed": {**arm, "synthetic_examples": 0, "consumed": {"0": {"ed": 40}, "1": {"ed": 40}}},
                     "synth_empathy": arm, "ed_plus_random": arm},
            "comparisons": {"synth_empathy - ed": diff, "synth_empathy - ed_plus_random": diff}, "ab": {}}


def test_verdict_claims_only_what_the_intervals_show_and_states_the_power():
    null = evaluate.verdict(fake_results(-1.0, 1.0))
    assert "no figure differs beyond its 95% interval" in null and "2 training seed(s)" in null
    assert "detects differences of at least: bleu2 1.50 (measured +0.00)" in null
    better = evaluate.verdict(fake_results(0.5, 2.0))
    assert "better on bleu1 (+1.25)" in better and "worse" not in better and "dist1" not in better
    assert "worse on" in evaluate.verdict(fake_results(-2.0, -0.5), "synth_empathy", "ed_plus_random")
    assert "not both trained" in evaluate.verdict({"arms": {}, "eval_examples": 3})


def test_results_markdown_lists_every_arm_its_consumption_and_the_paired_differences(tmp_path):
    md = evaluate.results_markdown(fake_results(-1.0, 1.0))
    for arm in ("base", "ed", "synth_empathy", "ed_plus_random"):
        assert f"| {arm} | " in md
    assert "10.00 [9.00, 11.00]" in md and "## synth_empathy - ed_plus_random (paired)" in md
    assert "| synth_empathy | 40 | 6 | 39..40 | 6 |" in md and "| ed | 40 | 0 | 40 | 0 |" and "| base | - | - | - | - |" in md
    rows = evaluate.results_table(fake_results(-1.0, 1.0))
    assert [r["arm"] for r in rows] == ["base", "ed", "synth_empathy", "ed_plus_random"]
    assert rows[0]["empathy"] == "10.00 [9.00, 11.00]" and rows[2]["consumed_ed"] == "39..40" and rows[2]["seeds"] == 2


def test_metrics_cli_scores_any_prediction_file(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "answer": p, "gold": g}) for i, (p, g) in enumerate(
        [("that sounds hard , i am sorry .", "that sounds hard , i am so sorry ."), ("congrats !", "congratulations !")])) + "\n")
    assert main(["metrics", "--predictions", str(path), "--prediction-field", "answer"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) >= {"bleu1", "bleu4", "dist1", "dist2", "rouge1", "rougeL", "f1", "length"}
    assert 0 < scores["bleu1"] < 100 and scores["length"] == 5.0
    # the figures themselves (6 decimals, as the authors round), not a shorter print of them
    assert scores == M.score_file(path, prediction_field="answer")


def test_metrics_cli_names_file_line_and_field(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prediction": "hi", "gold": "hello"}) + "\n" + json.dumps({"prediction": "x"}) + "\n")
    assert main(["metrics", "--predictions", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "line 2" in err and "gold" in err
