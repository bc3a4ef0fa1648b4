"""`make demo`: the main job on the embedded default data set ends with its report (in a file of its own: at two minutes it
is the longest test, and a file is what pytest-xdist hands to one worker)."""

import json

from infinimodal.data import load_dataset
from infinimodal.evaluation.report import SECTIONS


def test_demo_ends_with_the_report_of_its_run(tmp_path, capsys):
    from infinimodal import demo

    out = tmp_path / "demo"
    demo.main(["--epochs", "1", "--max-train", "500", "--iw-samples", "2", "--quiet", "--out", str(out)])
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"report (open in a browser): {(out / 'report.html').resolve()}"
    # every test digit is scored: MNIST's test set is ordered and its first digits are harder than the rest
    scored = json.loads((out / "eval.json").read_text())["n_test"]
    assert scored == len(
        load_dataset("mnist:labels=0.1", progress=False).test
    ) and f"test digits scored: {scored}" in "\n".join(printed)
    assert any(
        line.startswith("validation error of imputing label from the other modalities, saved model (epoch 1): ")
        for line in printed
    )
    baseline = json.loads((out / "eval.json").read_text())["prediction_baselines"]["label"]["image"]
    assert baseline["train_rows"] <= 500 * 0.2  # the labels among the 500 digits the model trained on, not the split's
    assert (
        f"a classifier without the model: {100 * baseline[baseline['best_baseline']]:.2f} % ({baseline['best_baseline']} on the pixels"
        in "\n".join(printed)
    )
    # the default sizes its own latent: the demo names the size it ended with, not the bound
    record = json.loads((out / "eval.json").read_text())
    assert (
        any(
            line.startswith(
                f"dimensions with KL > 0.05:   {record['kl_active']} of the {record['latent_dimensions']} it ended"
            )
            for line in printed
        )
        and "dimensions sized during training, at most 50" in printed[0]
    )
    page = (out / "report.html").read_text()
    assert all(f'<section id="{key}">' in page for key, _ in SECTIONS)
    assert "report written" in (out / "infinimodal.log").read_text()
