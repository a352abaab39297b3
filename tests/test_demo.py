"""``fintweet demo`` end to end: its own embedded stack, a replay, a worker, and a summary that
adds up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil  # noqa: F401  # imported only to fail loudly if the dev extras are missing


def test_demo_replays_a_csv_and_reports_every_tweet(models_dir, tmp_path):
    csv_path = tmp_path / "valid.csv"
    rows = ["text,label"]
    samples = [("Fed signals two more rate hikes this year", 1),
               ("$TSLA shares jump 8% after deliveries beat", 19),
               ("Oil climbs as OPEC+ extends output cuts", 6)]
    for i in range(90):
        text, label = samples[i % 3]
        rows.append(f'"{text} ({i})",{label}')
    csv_path.write_text("\n".join(rows) + "\n")
    env = {**os.environ, "FINTWEET_MODELS_DIR": str(models_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "fintweet.cli.main", "demo", "--data", str(csv_path), "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["processed"] == 90
    assert sum(summary["topics"].values()) == 90
    assert summary["labelled"] == 90 and 0.0 <= summary["accuracy"] <= 1.0
    assert summary["dlq"] == 0
    assert summary["tweets_per_s"] > 0
