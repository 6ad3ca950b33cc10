"""Check that two source trees export the same store identically: same files byte for byte, same manifest.

For a change to the export that must not change its output (a speed-up): export each store in each variant with
the old tree (e.g. `git -C /work/main archive HEAD | tar -x -C /tmp/export-base`) and with this one, each in a
child process, then compare every file (manifest.json without created_at; hf/ by its rows). Exit 1 on a difference.

Run: .venv/bin/python bench/export_same.py --old /tmp/export-base --store sqlite:///STORE.db [--store ...]
     [--variants chat,prompt-completion,dpo,kto,hf,no-redact,serial]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name -> (ExportOptions fields, extra environment)
    "chat": ({"format": "chat"}, {}),
    "prompt-completion": ({"format": "prompt-completion"}, {}),
    "dpo": ({"format": "dpo"}, {}),
    "kto": ({"format": "kto"}, {}),
    "hf": ({"format": "hf"}, {}),
    "no-redact": ({"format": "chat", "redact": False}, {}),
    "no-dedup": ({"format": "chat", "dedup": False, "seed": 3, "holdout_after": "2026-01-02T00:00:00Z"}, {}),
    "serial": ({"format": "chat"}, {"HOUSESTYLE_EXPORT_WORKERS": "1"}),
}
CHILD = """
import json, sys, time
from pathlib import Path
from collector.export import export_options, export_dataset
from core.settings import get_settings
fields = json.loads(sys.argv[1])
started = time.perf_counter()
export_dataset(export_options(out=Path(sys.argv[2]), **fields), settings=get_settings(), progress=False)
print(f"{time.perf_counter() - started:.2f}")
"""


def export(tree: Path, url: str, fields: dict, env: dict, out: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(fields), str(out)], cwd=tree, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(tree), "HOUSESTYLE_DATABASE_URL": url, **env},
    )
    if done.returncode:
        raise SystemExit(f"export from {tree} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def differences(old: Path, new: Path) -> list[str]:
    """What differs between two export folders ([] when nothing does)."""
    problems = []
    old_files = sorted(p.relative_to(old) for p in old.rglob("*") if p.is_file())
    new_files = sorted(p.relative_to(new) for p in new.rglob("*") if p.is_file())
    hf = lambda files: [f for f in files if f.parts[0] != "hf"]  # noqa: E731 - hf/ holds arrow shards: rows compared
    if hf(old_files) != hf(new_files):
        problems.append(f"files differ: {sorted(set(map(str, old_files)) ^ set(map(str, new_files)))}")
    for name in hf(old_files):
        if not (new / name).exists():
            continue
        if name.name == "manifest.json":
            a, b = (json.loads((root / name).read_text()) for root in (old, new))
            for manifest in (a, b):  # when it was written, and where to
                manifest.pop("created_at"), manifest["options"].pop("out")
            if a != b:
                problems.append(f"manifest.json differs: {sorted(k for k in a if a[k] != b.get(k))}")
        elif not filecmp.cmp(old / name, new / name, shallow=False):
            problems.append(f"{name} differs")
    if (old / "hf").exists():
        from datasets import load_from_disk

        a, b = load_from_disk(str(old / "hf")), load_from_disk(str(new / "hf"))
        for split in a:
            if a[split].to_list() != b[split].to_list():
                problems.append(f"hf/{split} rows differ")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the source tree to compare with")
    parser.add_argument("--store", action="append", required=True, help="database URL (repeat for several)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="export-same-") as work:
        for s, url in enumerate(args.store):
            for variant in args.variants.split(","):
                fields, env = VARIANTS[variant]
                old_out, new_out = Path(work, f"{s}-{variant}-old"), Path(work, f"{s}-{variant}-new")
                old_s = export(args.old, url, fields, env, old_out)
                new_s = export(ROOT, url, fields, env, new_out)
                problems = differences(old_out, new_out)
                failed |= bool(problems)
                manifest = json.loads((new_out / "manifest.json").read_text())
                print(f"{url} {variant}: {'SAME' if not problems else 'DIFFERENT'} "
                      f"({sum(manifest['conversations'].values())} conversations; old {old_s:.2f} s, new {new_s:.2f} s)")
                for problem in problems:
                    print("   ", problem)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
