"""``crpbot features`` end to end on real files: output table, report, and clean failures."""

from __future__ import annotations

import errno
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from crpbot.cli import main
from crpbot.data.features import FEATURE_NAMES, feature_manifest


def test_default_output_path_columns_and_manifest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["features", "--coin", "BTC"]) == 0
    out = tmp_path / "data" / "features" / "features_BTC-USD_1m_latest.parquet"
    table = pq.read_table(out)
    assert table.column_names == ["timestamp", *FEATURE_NAMES]
    assert json.loads(table.schema.metadata[b"crpbot.feature_manifest"]) == feature_manifest()
    frame = table.to_pandas()
    assert len(frame) == 30_160 - 2 * 120 and np.isfinite(frame[list(FEATURE_NAMES)].to_numpy()).all()
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    printed = capsys.readouterr().out
    assert "29,920 rows x 39 features" in printed and "80 bars missing" in printed
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left behind


def test_long_coin_name_csv_input_and_explicit_out(tmp_path, sample_path, capsys):
    csv = tmp_path / "eth.csv"
    pd.read_parquet(sample_path("ETH")).iloc[:2000].to_csv(csv, index=False)
    out = tmp_path / "nested" / "eth_features.parquet"
    assert main(["features", "--coin", "ETH-USD", "--input", str(csv), "--out", str(out)]) == 0
    assert len(pd.read_parquet(out)) == 2000 - 120
    assert "ETH-USD" in capsys.readouterr().out


def _bad_inputs(tmp_path: Path, sample: Path) -> dict[str, tuple[list[str], str]]:
    rows = pd.read_parquet(sample).iloc[:500]
    (tmp_path / "empty.csv").write_text("")
    rows.drop(columns=["close"]).to_parquet(tmp_path / "no_close.parquet")
    rows.assign(close=rows["close"].where(rows.index != 3)).to_parquet(tmp_path / "nan.parquet")
    rows.assign(volume=-rows["volume"]).to_parquet(tmp_path / "neg_volume.parquet")
    (tmp_path / "garbage.parquet").write_bytes(b"not a parquet file")
    return {
        "unknown coin": (["--coin", "XRP"], "unknown coin 'XRP'"),
        "missing file": (["--input", str(tmp_path / "missing.parquet")], "input file not found"),
        "empty file": (["--input", str(tmp_path / "empty.csv")], "file is empty"),
        "missing column": (["--input", str(tmp_path / "no_close.parquet")], "missing column(s) close"),
        "nan price": (["--input", str(tmp_path / "nan.parquet")], "NaN or infinite close"),
        "negative volume": (["--input", str(tmp_path / "neg_volume.parquet")], "negative volume"),
        "corrupt file": (["--input", str(tmp_path / "garbage.parquet")], "unreadable parquet"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "unknown coin",
        "missing file",
        "empty file",
        "missing column",
        "nan price",
        "negative volume",
        "corrupt file",
    ],
)
def test_bad_input_exits_2_with_one_line_and_loses_nothing(tmp_path, sample_path, capsys, case):
    args, message = _bad_inputs(tmp_path, sample_path("BTC"))[case]
    inputs = {p: hashlib.sha256(p.read_bytes()).digest() for p in tmp_path.iterdir()}
    out = tmp_path / "out" / "features.parquet"
    out.parent.mkdir()
    out.write_bytes(b"previous good table")
    assert main(["features", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("crpbot: error: ") and message in err and "\n" not in err
    assert out.read_bytes() == b"previous good table" and [p.name for p in out.parent.iterdir()] == [out.name]
    assert {p: hashlib.sha256(p.read_bytes()).digest() for p in inputs} == inputs


def test_console_entry_point_exits_non_zero(tmp_path):
    crpbot = Path(sys.executable).with_name("crpbot")
    result = subprocess.run(
        [str(crpbot), "features", "--input", str(tmp_path / "nope.csv")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "input file not found" in result.stderr


def test_unwritable_output_is_one_line_and_leaves_no_partial_file(tmp_path, capsys):
    out = tmp_path / "taken"
    (out / "inner").mkdir(parents=True)  # a non-empty directory cannot be replaced by a file
    assert main(["features", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"crpbot: error: cannot write {out}") and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"] and (out / "inner").is_dir()


def test_output_that_is_the_input_is_refused_and_the_bars_are_kept(tmp_path, sample_path, capsys):
    bars = tmp_path / "bars.parquet"
    pd.read_parquet(sample_path("BTC")).iloc[:500].to_parquet(bars)
    (tmp_path / "link.parquet").symlink_to(bars)
    before = bars.read_bytes()
    for out in (bars, tmp_path / "link.parquet", tmp_path / ".." / tmp_path.name / "bars.parquet"):
        assert main(["features", "--input", str(bars), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "is the input file" in err and "\n" not in err
    assert bars.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "bars.parquet",
        "link.parquet",
    ]


@pytest.mark.parametrize(
    "out, message",
    [
        ("afile/x.parquet", "afile is not a directory"),
        ("afile/deeper/x.parquet", "afile is not a directory"),
        ("", "--out is empty"),
        ("adir", "it is a directory"),
    ],
)
def test_unusable_output_location_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, out, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "adir").mkdir()
    monkeypatch.setattr(
        "crpbot.data.bars.load_bars", lambda _: pytest.fail("loaded bars before checking --out")
    )
    assert main(["features", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("crpbot: error: ") and message in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"] and not any(
        (tmp_path / "adir").iterdir()
    )


def test_a_failed_clean_up_does_not_hide_why_the_write_failed(tmp_path, sample_path, monkeypatch, capsys):
    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def unlink(*_args, **_kwargs):
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory")

    bars = tmp_path / "bars.parquet"
    pd.read_parquet(sample_path("BTC")).iloc[:500].to_parquet(bars)
    monkeypatch.setattr("pyarrow.parquet.write_table", full_disk)
    monkeypatch.setattr(Path, "unlink", unlink)
    out = tmp_path / "features.parquet"
    assert main(["features", "--input", str(bars), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"crpbot: error: cannot write {out}: No space left on device"


@pytest.mark.parametrize("drop_every", [None, 100])
def test_no_complete_row_is_an_error_and_keeps_the_previous_table(tmp_path, sample_path, capsys, drop_every):
    rows = pd.read_parquet(sample_path("BTC")).iloc[: 5 if drop_every is None else 3000]
    if drop_every is not None:  # every gap-free run (99 bars) is shorter than the warm-up
        rows = rows[rows.index % drop_every != 0]
    rows.to_parquet(tmp_path / "bars.parquet")
    out = tmp_path / "features.parquet"
    out.write_bytes(b"previous good table")
    assert main(["features", "--input", str(tmp_path / "bars.parquet"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no row has all features defined: no gap-free run is longer than the 120-bar warm-up" in err
    assert "\n" not in err and out.read_bytes() == b"previous good table"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.parquet", "features.parquet"]


def test_config_timeframes_add_the_last_closed_bars_columns(tmp_path, sample_path, capsys):
    from crpbot.data.timeframes import artifact_manifest, column_names

    (tmp_path / "tf.yaml").write_text("timeframes: [5, 15]\n")
    out = tmp_path / "tf.parquet"
    args = ["--input", str(sample_path("BTC")), "--config", str(tmp_path / "tf.yaml"), "--out", str(out)]
    assert main(["features", *args]) == 0
    table = pq.read_table(out)
    assert table.column_names == ["timestamp", *FEATURE_NAMES, *column_names([5, 15])]
    assert json.loads(table.schema.metadata[b"crpbot.feature_manifest"]) == artifact_manifest([5, 15])
    frame = table.to_pandas()
    assert np.isfinite(frame.drop(columns="timestamp").to_numpy()).all()
    assert f"{len(frame):,} rows x {len(FEATURE_NAMES) + len(column_names([5, 15]))} features" in (
        capsys.readouterr().out
    )
    # row t reads the last 5-minute bar closed at t: log(close at its last minute / 5 minutes before)
    bars = pd.read_parquet(sample_path("BTC")).set_index("timestamp")["close"]
    for _, row in frame.iloc[[0, 1, 2, 3, 4, 777, len(frame) - 1]].iterrows():
        minute = row["timestamp"].value // 60_000_000_000
        closed = pd.Timestamp(((minute + 1) // 5 * 5 - 1) * 60_000_000_000, tz="UTC")
        expected = np.log(bars[closed] / bars[closed - pd.Timedelta(minutes=5)])
        assert row["tf5_log_ret_1"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
