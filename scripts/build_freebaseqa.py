"""Maintainer script: build the bundled FreebaseQA eval set from the v1.1 release files.

    python scripts/build_freebaseqa.py SOURCE_DIR

SOURCE_DIR holds FreebaseQA-eval.txt / FreebaseQA-eval.tab (FreebaseQA v1.1, CC-BY-4.0). Questions
are de-duplicated (whitespace-normalised, CSV quoting undone) and every answer string from both files
is kept as an alias, in first-seen order.
"""

import gzip
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "kick_tasks" / "data" / "freebaseqa"


def clean_question(text: str) -> str:
    text = text.strip()
    inner = text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in inner.replace('""', ""):
        text = inner.replace('""', '"')  # undo CSV quoting
    return " ".join(text.split())


def main(source: Path) -> None:
    aliases: dict[str, list[str]] = {}

    def add(question: str, answer: str) -> None:
        question, answer = clean_question(question), " ".join(answer.split())
        if not question or not answer:
            return
        bucket = aliases.setdefault(question, [])
        if answer not in bucket:
            bucket.append(answer)

    for line in (source / "FreebaseQA-eval.txt").read_text(encoding="ascii").splitlines():
        question, _, answer = line.rpartition(" | ")
        add(question, answer)
    for line in (source / "FreebaseQA-eval.tab").read_text(encoding="ascii").splitlines():
        row = line.split("\t")
        add(row[7], row[6])
    OUT.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(OUT / "eval.jsonl.gz", "wb", mtime=0) as f:
        for i, (question, answers) in enumerate(aliases.items()):
            f.write((json.dumps({"id": i, "question": question, "answers": answers}) + "\n").encode())
    print(f"{len(aliases)} questions -> {OUT / 'eval.jsonl.gz'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
