"""Stage 05 pieces that need no model: the results table, the verdict, the metrics command line."""

import json

from synthempathy import evaluate
from synthempathy.__main__ import main
from synthempathy.lib import metrics as M


def fake_results(diff_low, diff_high):
    figures = {k: [10.0, 9.0, 11.0] for k in evaluate.FIGURE_ORDER}
    diff = {k: {"point_diff": (diff_low + diff_high) / 2, "mean_diff": 0, "low": diff_low, "high": diff_high,
                "share_above_zero": 0.9} for k in evaluate.FIGURE_ORDER}
    return {"profile": "tiny", "eval_examples": 37, "seed": 0, "bootstrap_resamples": 200,
            "arms": {a: {"figures": figures, "train_examples": 149, "synthetic_examples": 0, "train_tokens": 1}
                     for a in ("base", "ed", "synth_empathy")},
            "synth_empathy_minus_ed": diff}


def test_verdict_claims_only_what_the_intervals_show():
    assert "neither helped nor hurt" in evaluate.verdict(fake_results(-1.0, 1.0))
    better = evaluate.verdict(fake_results(0.5, 2.0))
    assert "better on bleu1 (+1.25)" in better and "worse" not in better
    assert "worse on" in evaluate.verdict(fake_results(-2.0, -0.5))
    assert "not both trained" in evaluate.verdict({"arms": {}, "eval_examples": 3})


def test_results_markdown_lists_every_arm_and_the_paired_difference(tmp_path):
    md = evaluate.results_markdown(fake_results(-1.0, 1.0))
    for arm in ("base", "ed", "synth_empathy"):
        assert f"| {arm} | " in md
    assert "10.00 [9.00, 11.00]" in md and "## synth_empathy minus ed" in md
    rows = evaluate.results_table(fake_results(-1.0, 1.0))
    assert [r["arm"] for r in rows] == ["base", "ed", "synth_empathy"] and rows[0]["empathy"] == "10.00 [9.00, 11.00]"


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
