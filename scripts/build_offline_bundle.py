"""Build the offline bundle: crpbot + Ray 2.60 + Optuna + boto3 + LightGBM for a CUDA node without an index.

Usage: python scripts/build_offline_bundle.py [--python 3.12] [--out dist]
       (make bundle [BUNDLE_PYTHON=3.12])

Writes ``dist/crpbot-offline-py<X.Y>-x86_64.tar.xz`` and a ``.sha256`` beside it. The image it
is unpacked on is assumed to have the packages in ``ASSUMED`` (a CUDA PyTorch image usually
does); everything else crpbot needs at run time is in the bundle. Wheels for another Python are
fetched with ``pip download --only-binary=:all: --python-version X.Y --platform manylinux...``,
so a 3.12 bundle builds on a 3.11 host.

What is cut, and why it is safe (``--probe`` imports every module crpbot and Ray load on the
paths the product uses, from the bundle alone, and fails if one of them is missing):
- Ray's Java jars, RLlib, Serve, LLM, and the dashboard's web UI files (an empty
  ``client/build/static`` is kept: the dashboard process refuses to start without it, and Tune's
  clean-up of stopped trials needs the dashboard);
- the symbol tables of Ray's native binaries (``strip``: tens of MB, they still run);
- botocore's service models except s3, sts, sso and sso-oidc;
- virtualenv, py-spy and the google-auth/cryptography chain: runtime-env pip installs and
  profiling only (googleapis-common-protos stays: opencensus, which the dashboard's reporter
  agent imports, needs ``google.rpc``).
protobuf, typing_extensions and packaging go to ``fallback/``: ``install_offline.sh`` puts them
on the path only when the image's copies are older than Ray needs (older ones make Ray drop the
dashboard silently).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The one place that says what the cluster image must already have (docs/scale-out.md links here).
ASSUMED = {
    "torch": "torch==2.13.0",
    "numpy": "numpy==2.4.6",
    "pandas": "pandas==3.1.1",
    "pyarrow": "pyarrow==26.0.1",
    "scipy": "scipy==1.17.1",
    "scikit-learn": "scikit-learn==1.9.1",
    "matplotlib": "matplotlib==3.11.2",
    "pyyaml": "PyYAML==6.0.4",
    "safetensors": "safetensors==0.8.0",
}
BUNDLED = [
    "ray[default,train,tune]==2.60.0",
    "optuna==5.0.0",
    "boto3==1.44.8",
    "lightgbm==4.7.0",
    "rich==15.0.0",
    "arch==8.0.0",
]
# Newer copies carried for images whose own are too old for Ray: name -> minimum version.
FALLBACKS = {"protobuf": "5.0", "typing-extensions": "4.16", "packaging": "24.2"}
# Distributions never loaded on crpbot's paths (runtime-env pip installs, profiling, GCP auth).
DROPPED_DISTS = {
    "virtualenv",
    "distlib",
    "platformdirs",
    "python-discovery",
    "py-spy",
    "google-auth",
    "google-api-core",
    "cachetools",
    "pyasn1",
    "pyasn1-modules",
    "rsa",
    "cryptography",
    "cffi",
    "pycparser",
    "proto-plus",
}
DROPPED_PATHS = ["ray/jars", "ray/rllib", "ray/serve", "ray/llm", "ray/dashboard/client/build"]
KEPT_BOTOCORE_SERVICES = {"s3", "sts", "sso", "sso-oidc"}
STRIPPED = ["ray/_raylet.so", "ray/core/src/ray/raylet/raylet", "ray/core/src/ray/gcs/gcs_server"]
CUDA_DIST = re.compile(r"^\s*(nvidia-|cuda-|triton\b)", re.IGNORECASE)
PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "linux_x86_64"]
# What the probe imports: the modules crpbot's commands, Ray Train/Tune, the dashboard and the
# runtime-env agent load.
PROBE_MODULES = [
    "crpbot.cli",
    "crpbot.model.trainer",
    "crpbot.model.ensemble",
    "crpbot.model.gbdt",
    "crpbot.search.tune",
    "crpbot.pipeline.chain",
    "crpbot.pipeline.run",
    "crpbot.registry.transfer",
    "crpbot.doctor",
    "ray.train.torch",
    "ray.tune",
    "ray.tune.search.optuna",
    "ray.tune.schedulers",
    "ray.util.state",
    "ray.dashboard.dashboard",
    "ray.dashboard.agent",
    "ray.dashboard.head",
    "ray._private.runtime_env.agent.main",
    "ray._private.workers.default_worker",
    "ray.autoscaler._private.monitor",
    "optuna.visualization.matplotlib",
    "boto3",
    "lightgbm",
    "rich.live",
    "arch.bootstrap",
    "tensorboardX",
]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_dist(path: Path) -> str:
    return canonical(path.name.split("-")[0])


def pip(*args: str, python: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args, "--only-binary=:all:", "--python-version", python] + [
        f"--platform={p}" for p in PLATFORMS
    ]


def assumed_closure(python: str, scratch: Path) -> set[str]:
    """Every distribution the assumed image packages pull in (resolved from metadata, no download).

    torch's CUDA libraries (nvidia-*, cuda-*, triton) are left out of the resolution: the image
    has them with its torch, nothing in the bundle needs them, and the exact builds a torch release
    pins may have no wheel for the platform tags resolved here (torch 2.13.0's cuDNN for Python
    3.12 is manylinux_2_27 only).
    """
    (torch_item,) = dry_run_install(python, scratch, ASSUMED["torch"], "--no-deps")
    torch_deps = [
        requirement
        for requirement in torch_item["metadata"].get("requires_dist", [])
        if not CUDA_DIST.match(requirement)
    ]
    others = [spec for name, spec in ASSUMED.items() if name != "torch"]
    return {"torch"} | {
        canonical(item["metadata"]["name"]) for item in dry_run_install(python, scratch, *others, *torch_deps)
    }


def dry_run_install(python: str, scratch: Path, *requirements: str) -> list[dict]:
    """What pip would install for ``requirements`` on the target Python (its ``--report``)."""
    report = scratch / "assumed.json"
    subprocess.run(
        pip(
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "--target",
            str(scratch / "unused"),
            *requirements,
            python=python,
        ),
        check=True,
    )
    return json.loads(report.read_text())["install"]


def download(python: str, wheels: Path) -> None:
    subprocess.run(pip("download", "--quiet", "-d", str(wheels), *BUNDLED, python=python), check=True)
    # crpbot's own wheel, built from a copy: setuptools would leave build/ in the checkout
    source = wheels.parent / "crpbot-source"
    shutil.copytree(REPO / "crpbot", source / "crpbot", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(source)],
        check=True,
    )


def unpack(wheel: Path, into: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            target = into / info.filename
            archive.extract(info, into)
            mode = info.external_attr >> 16
            if mode & 0o111:  # zip keeps the exec bit in the upper bits: raylet and gcs_server need it
                target.chmod(mode & 0o777)


def prune(site: Path) -> int:
    saved = 0
    for relative in DROPPED_PATHS:
        path = site / relative
        if path.exists():
            saved += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
    (site / "ray/dashboard/client/build/static").mkdir(parents=True)
    data = site / "botocore/data"
    for service in data.iterdir():
        if service.is_dir() and service.name not in KEPT_BOTOCORE_SERVICES:
            saved += sum(f.stat().st_size for f in service.rglob("*") if f.is_file())
            shutil.rmtree(service)
    for relative in STRIPPED:
        path = site / relative
        before = path.stat().st_size
        subprocess.run(["strip", "--strip-unneeded", str(path)], check=True)
        saved += before - path.stat().st_size
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache)
    return saved


def write_manifest(root: Path) -> None:
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "MANIFEST.sha256"):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(root)}")
    (root / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")


def build(python: str, out: Path) -> Path:
    started = time.perf_counter()
    name = f"crpbot-offline-py{python}-x86_64"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="crpbot-bundle-") as tmp:
        scratch = Path(tmp)
        assumed = assumed_closure(python, scratch)
        wheels = scratch / "wheels"
        download(python, wheels)
        root = scratch / name
        site, fallback = root / "site", root / "fallback"
        kept, skipped = [], []
        for wheel in sorted(wheels.glob("*.whl")):
            dist = wheel_dist(wheel)
            if dist in FALLBACKS:
                unpack(wheel, fallback)
                kept.append(f"{wheel.name} (fallback)")
            elif dist in assumed or dist in DROPPED_DISTS:
                skipped.append(wheel.name)
            else:
                unpack(wheel, site)
                kept.append(wheel.name)
        saved = prune(site)
        # crpbot finds its configs and bundled sample beside the package (config.CONFIG_DIR,
        # bars.SAMPLE_DIR), as in a source checkout
        shutil.copytree(REPO / "tune_configs", site / "tune_configs")
        shutil.copytree(REPO / "data" / "sample", site / "data" / "sample")
        (root / "ASSUMED.txt").write_text(
            "# The image must provide these (a CUDA PyTorch image usually does):\n"
            + "\n".join(ASSUMED.values())
            + "\n"
        )
        (root / "bundle.json").write_text(
            json.dumps(
                {
                    "python": python,
                    "platform": "manylinux x86_64 (glibc >= 2.17)",
                    "bundled": BUNDLED,
                    "assumed": list(ASSUMED.values()),
                    "fallbacks": FALLBACKS,
                    "wheels": kept,
                    "left_to_the_image": skipped,
                },
                indent=2,
            )
            + "\n"
        )
        write_manifest(root)
        unpacked = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        archive = out / f"{name}.tar.xz"
        partial = out / f".{archive.name}.partial"
        with tarfile.open(partial, "w:xz", preset=9 | 0x80000000) as tar:  # xz -9e
            tar.add(root, arcname=name)
        partial.replace(archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (out / f"{archive.name}.sha256").write_text(f"{digest}  {archive.name}\n")
    mib = archive.stat().st_size / 2**20
    print(
        f"{archive}: {mib:.1f} MiB ({unpacked / 2**20:.0f} MiB unpacked, {saved / 2**20:.0f} MiB cut), "
        f"{len(kept)} wheels kept, {len(skipped)} left to the image; "
        f"built in {time.perf_counter() - started:.0f} s"
    )
    if mib > 40:
        raise SystemExit(f"bundle is {mib:.1f} MiB, over the 40 MiB limit")
    return archive


def probe(prefix: Path) -> None:
    """Import every module on the product's paths with the bundle on the path; fail on any missing one."""
    code = (
        "import importlib, sys\n"
        f"mods = {PROBE_MODULES!r}\n"
        "for m in mods: importlib.import_module(m)\n"
        # the dashboard loads its modules by name at start-up: import every one of them
        "import pkgutil, ray.dashboard.modules as dm\n"
        "for info in pkgutil.walk_packages(dm.__path__, 'ray.dashboard.modules.'):\n"
        "    importlib.import_module(info.name)\n"
        f"bad = [n for n, m in sys.modules.items() if any(d in (getattr(m, '__file__', '') or '') "
        f"for d in {DROPPED_PATHS!r})]\n"
        "assert not bad, bad\n"
        "print(f'probe: {len(mods)} entry modules, {len(sys.modules)} loaded, none from a cut path')\n"
    )
    subprocess.run(["bash", "-c", f'. "{prefix}/activate" && python3 -c "$0"', code], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument(
        "--probe", type=Path, metavar="PREFIX", help="only run the import probe on an installed bundle"
    )
    args = parser.parse_args()
    if args.probe:
        probe(args.probe)
    else:
        build(args.python, args.out)


if __name__ == "__main__":
    main()
