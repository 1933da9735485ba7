"""A scan's outputs: cells.csv, scan.json, differentials/<COIN>.parquet, scan.png and report.md.

``cells.csv`` has one row per cell × coin with its pooled walk-forward figures (each with its CI),
its mean aligned differential, rank and StepM verdict; ``scan.json`` the grid, budget, data
fingerprints, each coin's final period, SPA p-values, survivors, DSR and confirmation. Both are
stable machine-readable records (an experiment tracker reads them); every file is written whole,
then renamed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crpbot.experiments.walkforward import WalkForwardResult, atomic_write, write_json

CELLS_FILE = "cells.csv"
SCAN_FILE = "scan.json"


def cells_table(grid: Any, data: list[Any], results: dict, statistics: dict) -> pd.DataFrame:
    """cells.csv: one row per cell × coin, in grid order within each coin."""
    rows = []
    for entry in data:
        stats = statistics[entry.coin]
        ranks = {
            row["cell"]: (rank, row["mean_differential"]) for rank, row in enumerate(stats["ranking"], 1)
        }
        for cell in grid.cells:
            result: WalkForwardResult = results[(cell.name, entry.coin)]
            rank, mean = ranks.get(cell.name, (None, None))
            rows.append(
                {
                    "coin": entry.coin,
                    "cell": cell.name,
                    **{key: _value(value) for key, value in cell.values.items()},
                    **_cell_figures(result),
                    "sharpe_per_trade": stats["sharpe_per_trade"].get(cell.name),
                    "mean_differential": mean,
                    "rank": rank,
                    "stepm_survivor": cell.name in stats["stepm_survivors"],
                    "spa_p_value": stats["spa"]["consistent"] if stats["spa"] else None,
                    "out_dir": str(result.out_dir),
                }
            )
    return pd.DataFrame(rows)


def _value(value: Any) -> Any:
    return "+".join(str(item) for item in value) if isinstance(value, list) else value


def _cell_figures(result: WalkForwardResult) -> dict[str, Any]:
    summary = result.summary
    failed = summary["folds_failed"]
    pooled = summary.get("pooled") or {}
    edge = summary.get("pooled_edge") or {}
    net = summary.get("pooled_net_return_per_trade") or {}
    net_ci = net.get("ci") or [None, None]
    ok = result.folds[result.folds["status"] == "ok"]
    return {
        "status": "failed" if failed else "ok",
        "error": "; ".join(f"fold {f['fold']}: {f['error']}" for f in failed) or None,
        "folds": summary["folds_planned"],
        "n": pooled.get("n"),
        "accuracy": pooled.get("accuracy"),
        "accuracy_ci_low": (pooled.get("accuracy_ci") or [None, None])[0],
        "accuracy_ci_high": (pooled.get("accuracy_ci") or [None, None])[1],
        "baselines": "+".join(sorted(set(ok["best_baseline"].dropna()))) if "best_baseline" in ok else None,
        "edge": edge.get("edge"),
        "edge_ci_low": edge.get("ci_low"),
        "edge_ci_high": edge.get("ci_high"),
        "trades": net.get("trades"),
        "net_per_trade": net.get("mean"),
        "net_per_trade_ci_low": net_ci[0],
        "net_per_trade_ci_high": net_ci[1],
        "folds_passing_gate": summary["gate"]["folds_passing"],
        "seconds_folds": float(ok["seconds_total"].sum()) if "seconds_total" in ok else None,
    }


def write_scan_outputs(
    out_dir: Path,
    *,
    grid: Any,
    budget: Any,
    spec: Any,
    holdout_days: float,
    data: list[Any],
    results: dict,
    statistics: dict,
    confirmation: dict,
    ledger: Path,
    seconds: dict[str, float],
) -> Any:
    """Write every output and return the :class:`crpbot.experiments.scan.ScanResult`."""
    from crpbot.experiments.scan import ScanResult
    from crpbot.experiments.scan_final import iso

    table = cells_table(grid, data, results, statistics)
    (out_dir / "differentials").mkdir(exist_ok=True)
    for entry in data:
        frame = statistics[entry.coin]["differentials"].reset_index()
        atomic_write(
            out_dir / "differentials" / f"{entry.coin.split('-')[0]}.parquet",
            lambda tmp, frame=frame: frame.to_parquet(tmp, index=False),
        )
    scan = {
        "grid": {
            "source": grid.source,
            "keys": list(grid.keys),
            "cells": [c.name for c in grid.cells],
            "raw": grid.raw,
        },
        "budget": {"name": budget.name, "spec": dataclasses.asdict(spec), "rnn": budget.rnn},
        "holdout_days": holdout_days,
        "coins": [entry.coin for entry in data],
        "inputs": {
            entry.coin: {"path": str(entry.input_path), "fingerprint": entry.bars.fingerprint}
            for entry in data
        },
        "final_period": {entry.coin: entry.final.to_dict() for entry in data},
        "folds": {
            entry.coin: [
                {name: [iso(a), iso(b)] for name, (a, b) in fold.split_times.items()} for fold in entry.folds
            ]
            for entry in data
        },
        "multiple_testing": {
            coin: {
                key: stats.get(key)
                for key in ("rows", "block_length", "block_note", "cells_tested", "excluded")
            }
            for coin, stats in statistics.items()
        },
        "spa_p_value": {coin: (stats["spa"] or {}).get("consistent") for coin, stats in statistics.items()},
        "spa": {coin: stats["spa"] for coin, stats in statistics.items()},
        "stepm_survivors": {coin: stats["stepm_survivors"] for coin, stats in statistics.items()},
        "ranking": {coin: stats["ranking"] for coin, stats in statistics.items()},
        "dsr": {coin: stats["dsr"] for coin, stats in statistics.items()},
        "confirmation": confirmation,
        "reused_final": any((c or {}).get("reused_final") for c in confirmation.values()),
        "ledger": str(ledger),
        "failed_cells": table.loc[table["status"] != "ok", ["coin", "cell", "error"]].to_dict("records"),
        # wall time of the whole scan and of its pool of fold tasks (run by this call), and the
        # summed time of every finished fold (run by any call)
        "seconds": seconds["total"],
        "seconds_cells": seconds["cells"],
        "fold_tasks_run": seconds["fold_tasks"],
        "fold_seconds": float(table["seconds_folds"].fillna(0).sum()),
    }
    atomic_write(out_dir / CELLS_FILE, lambda tmp: table.to_csv(tmp, index=False))
    write_json(out_dir / SCAN_FILE, _json_safe(scan))
    atomic_write(out_dir / "scan.png", lambda tmp: plot_scan(table, grid, tmp))
    atomic_write(out_dir / "report.md", lambda tmp: Path(tmp).write_text(report_markdown(table, scan)))
    return ScanResult(out_dir=out_dir, cells=table, scan=scan)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def plot_scan(table: pd.DataFrame, grid: Any, path: Path) -> None:
    """A heatmap per coin and per combination of the other keys: horizon × target, colour the
    edge's CI lower bound, ``*`` on StepM survivors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [key for key in grid.keys if key not in ("target", "horizon")]
    frame = table.copy()
    frame["variant"] = (
        frame[others].apply(lambda row: " ".join(_variant_label(k, row[k]) for k in others), axis=1)
        if others
        else ""
    )
    coins = list(dict.fromkeys(frame["coin"]))
    variants = list(dict.fromkeys(frame["variant"]))
    targets = list(dict.fromkeys(frame["target"])) if "target" in frame else ["(base)"]
    horizons = sorted(set(frame["horizon"])) if "horizon" in frame else ["(base)"]
    width = 1.5 + (1.2 + 0.75 * len(horizons)) * len(variants)
    height = 1.2 + (0.9 + 0.45 * len(targets)) * len(coins)
    fig, axes = plt.subplots(
        len(coins), len(variants), figsize=(width, height), squeeze=False, layout="constrained"
    )
    limit = max(
        0.01,
        float(
            np.nanmax(
                np.abs(pd.to_numeric(frame["edge_ci_low"], errors="coerce").to_numpy(dtype=float)),
                initial=0.01,
            )
        ),
    )
    image = None
    for i, coin in enumerate(coins):
        for j, variant in enumerate(variants):
            ax = axes[i][j]
            part = frame[(frame["coin"] == coin) & (frame["variant"] == variant)]
            values = np.full((len(targets), len(horizons)), np.nan)
            for _, row in part.iterrows():
                r = targets.index(row["target"]) if "target" in row else 0
                c = horizons.index(row["horizon"]) if "horizon" in row else 0
                low = pd.to_numeric(row["edge_ci_low"], errors="coerce")
                values[r, c] = low
                label = "" if pd.isna(low) else f"{low:+.3f}"
                ax.text(
                    c, r, label + ("*" if row["stepm_survivor"] else ""), ha="center", va="center", fontsize=7
                )
            image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
            ax.set_xticks(range(len(horizons)), [str(h) for h in horizons], fontsize=7)
            ax.set_yticks(range(len(targets)), targets, fontsize=7)
            ax.set_title(f"{coin} {variant}".strip(), fontsize=8)
            ax.set_xlabel("horizon (minutes)", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="edge over best baseline, 95% CI lower bound")
    fig.suptitle("Scan: edge CI lower bound per cell (* = survives StepM)", fontsize=9)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _variant_label(key: str, value: object) -> str:
    if key == "timeframes":
        return f"timeframes {value or 'none'}"
    return f"{key} {value}"


def report_markdown(table: pd.DataFrame, scan: dict[str, Any]) -> str:
    """report.md: a reused final period first, then per coin the verdict, the cells and the confirmation."""
    lines = []
    if scan["reused_final"]:
        lines.append(
            "**WARNING: the final period was reused: it was scored before, so this confirmation is not an "
            "unbiased estimate.**\n"
        )
    spec = scan["budget"]["spec"]
    folds = len(next(iter(scan["folds"].values())))
    lines += [
        "# Scan",
        "",
        f"Grid {scan['grid']['source']}: {len(scan['grid']['cells'])} cells × {len(scan['coins'])} coins; "
        f"budget {scan['budget']['name']} (train {spec['train_days']:g} / val {spec['val_days']:g} / test "
        f"{spec['test_days']:g} days of bars, {folds} folds); final period: the last "
        f"{scan['holdout_days']:g} days of bars of each coin, withheld until the confirmation. "
        f"{scan['seconds'] / 60:.1f} min wall, {scan['fold_seconds'] / 60:.1f} min in fold tasks.",
        "",
    ]
    for coin in scan["coins"]:
        final = scan["final_period"][coin]
        tests = scan["multiple_testing"][coin]
        spa = scan["spa"][coin]
        lines += [
            f"## {coin}",
            "",
            f"Final period {final['start']} .. {final['end']} ({final['rows']:,} bars).",
        ]
        if spa is not None:
            lines.append(
                f"SPA (Hansen) p-value {spa['consistent']:.3f} (lower {spa['lower']:.3f}, upper "
                f"{spa['upper']:.3f}) that the best of {len(tests['cells_tested'])} cells beats its "
                f"baseline, on {tests['rows']:,} aligned test minutes; {tests['block_note']}. "
                "StepM survivors (5%): "
                f"{', '.join(scan['stepm_survivors'][coin]) or 'none'}."
            )
        dsr = scan["dsr"][coin]
        if dsr is not None and dsr.get("dsr") is not None:
            lines.append(
                f"Best directional cell {dsr['cell']}: Sharpe per trade {dsr['sharpe_per_trade']:+.4f} over "
                f"{dsr['trades']:,} trades, deflated Sharpe ratio {dsr['dsr']:.3f} for {dsr['trials']} cells "
                f"tried (expected best Sharpe without skill {dsr['expected_max_sharpe']:.4f})."
            )
        lines += ["", _cells_markdown(table[table["coin"] == coin]), ""]
        lines += [_confirmation_markdown(coin, scan["confirmation"].get(coin)), ""]
    return "\n".join(lines) + "\n"


def _cells_markdown(part: pd.DataFrame) -> str:
    def ci(row: pd.Series, key: str, scale: float = 1.0, digits: int = 4) -> str:
        value, low, high = row[key], row[f"{key}_ci_low"], row[f"{key}_ci_high"]
        if pd.isna(value):
            return "-"
        if pd.isna(low):
            return f"{value * scale:+.{digits}f}"
        return f"{value * scale:+.{digits}f} ({low * scale:+.{digits}f} to {high * scale:+.{digits}f})"

    header = (
        "| rank | cell | accuracy (95% CI) | edge over best baseline (95% CI) | net/trade bps (95% CI) "
        "| StepM |"
    )
    lines = [header, "|---|---|---|---|---|---|"]
    for _, row in part.sort_values("rank", na_position="last").iterrows():
        if row["status"] != "ok":
            lines.append(f"| - | {row['cell']} | failed: {row['error']} | | | |")
            continue
        accuracy = f"{row['accuracy']:.4f} ({row['accuracy_ci_low']:.4f}-{row['accuracy_ci_high']:.4f})"
        rank = "-" if pd.isna(row["rank"]) else int(row["rank"])
        survivor = "survives" if row["stepm_survivor"] else ""
        lines.append(
            f"| {rank} | {row['cell']} | {accuracy} | {ci(row, 'edge')} | "
            f"{ci(row, 'net_per_trade', 1e4, 1)} | {survivor} |"
        )
    return "\n".join(lines)


def _confirmation_markdown(coin: str, record: dict[str, Any] | None) -> str:
    if record is None:
        return "No cell survives StepM: nothing is confirmed, and the final period stays unread."
    if record["status"] == "refused":
        return f"Confirmation of {record['cell']} refused: {record['reason']}."
    if record["status"] == "error":
        return f"Confirmation of {record['cell']} failed to run: {record['reason']}."
    from crpbot.experiments.scan_confirm import figures

    text = (
        f"Confirmation of {record['cell']} on the final period ({record['test_period'][0]} .. "
        f"{record['test_period'][1]}), scored once: **{record['status']}**; {figures(record)}"
    )
    if record.get("gate_reasons"):
        text += f". Gate: {record['gate_reasons']}"
    text += f". Artifact: `{record['artifact']}`"
    if record["gate_passed"]:
        text += f" (`crpbot promote --model {record['artifact']} --coin {coin.split('-')[0]}`)"
    return text + "."
