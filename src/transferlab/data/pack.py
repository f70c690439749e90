"""`transferlab-pack ROOT OUT --shard-size N`: a seed-layout folder as WebDataset tar shards plus
`index.json` (classes in the image-folder order; per sample its key, class, shard, original relative
path and content sha256). Writing shards needs no torch: the command starts quickly and `--help` is
instant; `transferlab.data.shards` streams what it writes."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

from transferlab.core.errors import TransferlabError
from transferlab.data.folders import read_file, scan_class_folders

INDEX = "index.json"


def pack(root: str | Path, out: str | Path, shard_size: int = 1000) -> dict[str, Any]:
    """Write the seed-layout folder `root` as tar shards of `shard_size` samples plus `index.json`."""
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"classes": [], "splits": {}, "shards": {}}
    train_classes = list(scan_class_folders(root / "train"))
    index["classes"] = train_classes
    for split in ("train", "val", "test"):
        if not (root / split).is_dir():
            continue
        files = scan_class_folders(root / split)
        items = [(c, p) for c in train_classes for p in files.get(c, [])]
        samples, names = [], []
        for start in range(0, len(items), shard_size):
            name = f"{split}-{start // shard_size:06d}.tar"
            names.append(name)
            with tarfile.open(out / name, "w") as tar:
                for cls, file in items[start : start + shard_size]:
                    path = Path(file)
                    data = path.read_bytes()
                    read_file(path)  # a corrupt image is refused here, not in the middle of training
                    key = f"{split}/{cls}/{path.stem}".replace(".", "_")
                    _add(tar, f"{key}{path.suffix.lower()}", data)
                    _add(tar, f"{key}.cls", str(train_classes.index(cls)).encode())
                    samples.append(
                        {
                            "key": key,
                            "class": cls,
                            "shard": len(names) - 1,
                            "path": str(path.relative_to(root)),
                            "sha256": hashlib.sha256(data).hexdigest(),
                        }
                    )
        index["splits"][split] = samples
        index["shards"][split] = names
    (out / INDEX).write_text(json.dumps(index))
    return index


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main(argv: list[str] | None = None) -> None:
    """Console script `transferlab-pack`."""
    parser = argparse.ArgumentParser(
        prog="transferlab-pack",
        description="Pack a ROOT/{train,val,test}/<class>/* folder into WebDataset shards.",
    )
    parser.add_argument("root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per tar shard")
    args = parser.parse_args(argv)
    try:
        index = pack(args.root, args.out, args.shard_size)
    except TransferlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    shards = sum(len(v) for v in index["shards"].values())
    print(f"Wrote {shards} shards and {INDEX} to {args.out} ({len(index['classes'])} classes).")


if __name__ == "__main__":
    main()
