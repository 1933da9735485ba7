"""Where an edge could be: walk-forwards of every target x model family x horizon x coin (issue 19).

Usage: .venv/bin/python studies/targets_families.py run [--data-dir /work/shared/data/ohlcv] [--out DIR]
           [--coins BTC,ETH,SOL] [--families gbdt,rnn]
       .venv/bin/python studies/targets_families.py report [--out DIR] [--figure studies/targets_families.png]

``run`` walks forward every cell with ``run_walkforward`` in batches, each batch one subprocess
under the host-wide Ray lock (so other jobs interleave between batches): every GBDT cell first,
then the recurrent cells coin by coin; a cell whose ``summary.json`` exists is skipped, so a rerun
resumes (``batch`` is the subprocess's entry point). The fold plan
is fixed before any result is seen and is the same for every cell: rolling folds of 90 / 14 / 14
days (train / val / test), the last 6 that fit the data (84 test days). Families: ``rnn`` is
``tune_configs/smoke.yaml`` (the CPU budget of the walk-forward benchmark), ``gbdt`` is
``tune_configs/gbdt.yaml``; each with only ``target`` and ``horizon`` changed (the target's own
keys at their defaults). ``report`` reads the cells' summaries and prints one markdown table per
coin, and draws one figure: each cell's pooled edge over the best baseline with its 95% CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LOCK = "/tmp/crpbot-ray.lock"
COINS = ("BTC", "ETH", "SOL")
TARGETS = ("direction", "triple_barrier", "net_direction", "volatility")
HORIZONS = (15, 60)
FAMILIES = {"gbdt": "gbdt.yaml", "rnn": "smoke.yaml"}  # run in this order: GBDT cells are the cheap ones
FOLDS = {"train_days": 90, "val_days": 14, "test_days": 14, "folds": 6}


def cells(coins: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every cell, GBDT first; within a family, coin by coin."""
    return [
        {"family": family, "coin": coin, "target": target, "horizon": horizon}
        for family in FAMILIES
        for coin in coins
        for target in TARGETS
        for horizon in HORIZONS
    ]


def cell_dir(out: Path, cell: dict[str, Any]) -> Path:
    return out / f"{cell['coin']}-{cell['target']}-h{cell['horizon']}-{cell['family']}"


def run(out: Path, data_dir: Path, coins: tuple[str, ...], families: tuple[str, ...]) -> None:
    """Walk forward every unfinished cell: one locked subprocess per batch, its cells in one Ray
    session. A batch is every GBDT cell (~15 s each under the lock), or one coin's rnn cells (~40 s
    each): on the shared host the lock's queue, not the work, dominated one cell per lock."""
    out.mkdir(parents=True, exist_ok=True)
    batches = [(family, coins if family == "gbdt" else (coin,)) for family in families for coin in coins]
    batches = list(dict.fromkeys(batches))  # the GBDT batch once
    for family, batch_coins in batches:
        todo = [
            cell_dir(out, cell).name
            for cell in cells(batch_coins)
            if cell["family"] == family and not (cell_dir(out, cell) / "summary.json").is_file()
        ]
        if not todo:
            continue
        command = [
            "flock", LOCK, sys.executable, __file__, "batch", "--out", str(out),
            "--data-dir", str(data_dir), "--cells", ",".join(todo),
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        name = f"{family}-{'-'.join(batch_coins)}"
        (out / f"{name}.log").write_text(done.stdout + done.stderr)
        print(
            f"{time.strftime('%H:%M:%S')} {name}: {len(todo)} cells, exit {done.returncode} in "
            f"{time.perf_counter() - started:.0f} s (lock wait included)",
            flush=True,
        )


def batch(out: Path, data_dir: Path, names: list[str]) -> None:
    """The named cells one after another in this process's Ray session (run under the lock)."""
    from crpbot.config import CONFIG_DIR, load_config, save_config
    from crpbot.data.folds import FoldSpec
    from crpbot.experiments.walkforward import run_walkforward
    from crpbot.ray_runtime import init_ray

    by_name = {cell_dir(out, cell).name: cell for cell in cells(COINS)}
    init_ray(None)
    for name in names:
        cell = by_name[name]
        config = load_config(CONFIG_DIR / FAMILIES[cell["family"]]).replace(
            target=cell["target"], horizon=cell["horizon"]
        )
        save_config(config, out / f"{name}.yaml", header=f"study targets_families: {name}")
        started = time.perf_counter()
        run_walkforward(
            config,
            cell["coin"],
            FoldSpec(**FOLDS),
            input_path=data_dir / f"{cell['coin']}-USD_1m.parquet",
            out_dir=out / name,
            log=lambda line: print(line, flush=True),
        )
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)


def cell_row(out: Path, cell: dict[str, Any]) -> dict[str, Any] | None:
    """The numbers of one finished cell (None while it is not finished)."""
    import pandas as pd

    directory = cell_dir(out, cell)
    if not (directory / "summary.json").is_file():
        return None
    summary = json.loads((directory / "summary.json").read_text())
    folds = pd.read_csv(directory / "folds.csv")
    ok = folds[folds["status"] == "ok"]
    pooled, edge, net = summary["pooled"], summary["pooled_edge"], summary["pooled_net_return_per_trade"]
    row = {
        **cell,
        "folds": f"{summary['folds_finished']}/{summary['folds_planned']}",
        "n": pooled["n"],
        "accuracy": pooled["accuracy"],
        "accuracy_ci": pooled["accuracy_ci"],
        "edge": edge.get("edge"),
        "edge_ci": [edge.get("ci_low"), edge.get("ci_high")],
        "best_baselines": ", ".join(
            f"{name} x{count}" for name, count in ok["best_baseline"].value_counts().items()
        ),
        "net_per_trade": net["mean"] if net else None,
        "net_ci": (net.get("ci") or [None, None]) if net else [None, None],
        "trades": net.get("trades") if net else None,
    }
    if cell["target"] == "volatility":  # the control: persistence's pooled accuracy on the same rows
        row["persistence_accuracy"] = float((ok["baseline_persistence"] * ok["n"]).sum() / ok["n"].sum())
    return row


def _interval(value: float | None, ci: list[float | None], scale: float = 1.0, digits: int = 4) -> str:
    if value is None:
        return "-"
    text = f"{value * scale:+.{digits}f}"
    if ci[0] is None:
        return text
    return f"{text} [{ci[0] * scale:+.{digits}f}, {ci[1] * scale:+.{digits}f}]"


def table(rows: list[dict[str, Any]], coin: str) -> str:
    """One coin's markdown table."""
    lines = [
        f"**{coin}**: pooled over the 6 folds' test rows (84 days); 95% CIs in brackets; net return per "
        "trade in bps at the default costs (10 bps fee per side, entry one bar after the signal); for "
        "volatility, persistence's pooled accuracy on the same rows instead",
        "",
        "| target | h | family | folds | n | accuracy [CI] | edge over best baseline [CI] | "
        "best baseline (val) | net/trade bps [CI] | trades |",
        "|---|---:|---|---|---:|---|---|---|---|---:|",
    ]
    for row in rows:
        if row["coin"] != coin:
            continue
        accuracy = f"{row['accuracy']:.4f} [{row['accuracy_ci'][0]:.4f}, {row['accuracy_ci'][1]:.4f}]"
        if row["target"] == "volatility":
            net = f"persistence {row['persistence_accuracy']:.4f}"
        else:
            net = _interval(row["net_per_trade"], row["net_ci"], scale=1e4, digits=1)
        lines.append(
            f"| {row['target']} | {row['horizon']} | {row['family']} | {row['folds']} | {row['n']:,} | "
            f"{accuracy} | {_interval(row['edge'], row['edge_ci'])} | {row['best_baselines']} | {net} | "
            f"{row['trades'] if row['trades'] is not None else '-'} |"
        )
    return "\n".join(lines)


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    """Each cell's pooled edge over the best baseline with its 95% CI, one panel per coin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coins = [coin for coin in COINS if any(row["coin"] == coin for row in rows)]
    fig, axes = plt.subplots(
        1, len(coins), figsize=(5 * len(coins), 6), sharex=True, sharey=True, squeeze=False
    )
    labels = [f"{target} h{horizon}" for target in TARGETS for horizon in HORIZONS]
    for ax, coin in zip(axes[0], coins, strict=True):
        for offset, (family, colour) in zip(
            (-0.15, 0.15), (("gbdt", "tab:green"), ("rnn", "tab:blue")), strict=True
        ):
            for y, label in enumerate(labels):
                match = [
                    row
                    for row in rows
                    if row["coin"] == coin
                    and row["family"] == family
                    and f"{row['target']} h{row['horizon']}" == label
                    and row["edge"] is not None
                ]
                if not match:
                    continue
                row = match[0]
                low, high = row["edge_ci"]
                ax.errorbar(
                    row["edge"],
                    y + offset,
                    xerr=[[row["edge"] - low], [high - row["edge"]]],
                    fmt="o",
                    color=colour,
                    label=family,
                )
        ax.axvline(0, color="grey", lw=1)
        ax.set_title(coin)
        ax.set_xlabel("pooled edge over the best baseline (accuracy)")
        ax.set_yticks(range(len(labels)), labels)
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), loc="lower right")
    fig.suptitle("Walk-forward, last 6 folds of 90/14/14 days: edge, 95% CI")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(out: Path, figure_path: Path, coins: tuple[str, ...]) -> None:
    rows = [row for cell in cells(coins) if (row := cell_row(out, cell)) is not None]
    print(f"{len(rows)} of {len(cells(coins))} cells finished\n")
    for coin in coins:
        print(table(rows, coin) + "\n")
    excluding = [
        f"{row['coin']} {row['target']} h{row['horizon']} {row['family']} ({row['edge']:+.4f})"
        for row in rows
        if row["edge"] is not None and (row["edge_ci"][0] > 0 or row["edge_ci"][1] < 0)
    ]
    print("Cells whose edge CI excludes 0: " + ("; ".join(excluding) or "none"))
    if rows:
        figure(rows, figure_path)
        print(f"figure: {figure_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "batch", "report"))
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/data/ohlcv"))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "study-targets-families")
    parser.add_argument("--figure", type=Path, default=REPO / "studies" / "targets_families.png")
    parser.add_argument("--coins", default=",".join(COINS), help="comma-separated (default BTC,ETH,SOL)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated (default gbdt,rnn)")
    parser.add_argument("--cells", default="", help="batch: the cells to run (run passes them)")
    args = parser.parse_args()
    coins = tuple(coin.strip().upper() for coin in args.coins.split(","))
    if args.action == "run":
        run(args.out, args.data_dir, coins, tuple(args.families.split(",")))
    elif args.action == "batch":
        batch(args.out, args.data_dir, args.cells.split(","))
    else:
        report(args.out, args.figure, coins)


if __name__ == "__main__":
    main()
